"""The router's file: :func:`save_router` writes a fitted router with its family, each member's
latency and the price; :func:`load_router` reads it back (no code is loaded); :func:`resolve_family`
reads the family out of a family file or a router file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from instanas_gym.agents.config import ControllerConfig
from instanas_gym.agents.router import ROUTER_FORMAT, RoutedController, Router, router_policy
from instanas_gym.space.family import ArchitectureFamily, as_family, check_family_dataset
from instanas_gym.utils.files import FileFormatError, atomic_save, build_module, check_weights, load_torch
from instanas_gym.utils.paths import BUNDLED_DATASET, BUNDLED_FAMILY

if TYPE_CHECKING:
    from instanas_gym.agents.policy import Policy


class SavedRouter(NamedTuple):
    """What :func:`load_router` returns."""

    router: Router
    family_masks: np.ndarray
    """uint8 (K, 17, 5)."""
    latency_ms: np.ndarray
    """(K,) ms."""
    price_per_ms: float
    meta: dict[str, Any]

    def family(self, **fields: Any) -> ArchitectureFamily:
        """The routed family as an :class:`~instanas_gym.space.family.ArchitectureFamily` (names from
        ``meta["family_names"]`` when it holds K of them); ``fields``: its other fields (``dataset``,
        ``supernet``, ``meta``), for :func:`~instanas_gym.space.family.save_family`."""
        names = self.meta.get("family_names")
        names = tuple(names) if isinstance(names, (list, tuple)) and len(names) == len(self.family_masks) else None
        return ArchitectureFamily(self.family_masks, names, self.latency_ms, **fields)

    def policy(self) -> Policy:
        """:func:`router_policy` of the stored router, family and price."""
        return router_policy(self.router, self.family_masks, self.latency_ms, self.price_per_ms)

    def controller(self) -> RoutedController:
        """The stored router, family and price as a controller (:class:`RoutedController`), e.g. to export."""
        return RoutedController(self.router, self.family_masks, self.latency_ms, self.price_per_ms).eval()


def save_router(
    router: Router, path: str | os.PathLike, family_masks: np.ndarray, latency_ms: np.ndarray, price_per_ms: float,
    **meta: Any,
) -> None:
    """Write the router's config and weights, its family's masks (K, 17, 5), their latency (ms) and
    the price (1/ms) atomically; ``meta``: plain data (numbers, strings, lists, dicts) kept beside."""
    family = ArchitectureFamily(family_masks, latency_ms=latency_ms)  # K >= 1 distinct masks, one latency each
    if family.k != router.k:
        raise ValueError(f"family_masks ({family.k}) and the router ({router.k}) disagree on K")
    atomic_save({"format": ROUTER_FORMAT, "config": router.config, "state_dict": router.state_dict(),
                 "family_masks": torch.from_numpy(family.masks.copy()), "latency_ms": family.latency_ms.tolist(),
                 "price_per_ms": float(price_per_ms), "meta": meta}, path)


def load_router(path: str | os.PathLike) -> SavedRouter:
    """The router stored at ``path`` (eval mode), its family, latencies, price and meta; loads no code."""
    hint = "fit one with `python benchmarks/bench_router.py` or `instanas_gym.judge.routing.fit_router`"
    ckpt = load_torch(path, "instanas-gym router", ROUTER_FORMAT,
                      ("config", "state_dict", "family_masks", "latency_ms", "price_per_ms"), hint)
    check_weights(path, ckpt["state_dict"], "instanas-gym router", hint)
    try:
        cfg = dict(ckpt["config"])
        router = build_module(lambda: Router(ControllerConfig(tuple(cfg["widths"]), cfg["input_size"]),
                                             cfg["in_channels"], cfg["k"]), ckpt["state_dict"])
        family = ArchitectureFamily(ckpt["family_masks"].numpy(), latency_ms=ckpt["latency_ms"])
        price = float(ckpt["price_per_ms"])
        if not isinstance(ckpt.get("meta") or {}, dict):
            raise TypeError(f"its meta must be a dict, found {ckpt['meta']!r:.80}")
        if family.k != router.k:
            raise ValueError(f"{router.k} outputs and {family.k} masks")
        if not (np.isfinite(price) and price >= 0):
            raise ValueError("the price must be finite and >= 0")
    except Exception as err:  # whatever a damaged file's contents make the build raise
        raise FileFormatError(f"{Path(path)} holds a router that cannot be built ({err}); {hint}") from None
    return SavedRouter(router.eval(), family.masks.copy(), family.latency_ms, price, dict(ckpt.get("meta") or {}))


def resolve_family(family: str | None, dataset: str) -> tuple[ArchitectureFamily, Path]:
    """The family of ``family`` (a family file, or a router file whose family to use; None: the
    bundled family) and where its lookup outcomes live (beside the file)."""
    if family is None:
        if dataset != BUNDLED_DATASET:
            raise ValueError(f"no family ships for {dataset!r}: pass family= (a family or router file)")
        family = str(BUNDLED_FAMILY)
    fam = load_router(family).family(dataset=dataset) if str(family).endswith(".pt") else as_family(family)
    check_family_dataset(fam, dataset, family)
    return fam, Path(family)
