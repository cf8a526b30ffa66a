"""Policies as judging and deployment see them, and the file a learned policy is saved in.

A *policy* maps a uint8 image batch (B, H, W, C) to masks (B, 17, 5): the architecture each image
runs. :func:`save_policy` writes a REINFORCE agent's network with its action view (``"masks"``: the
paper's 85 bits; ``"family"``: one of a family's K architectures) and, for the family view, the
family, as one file (format ``"instanas-policy-v1"``); :func:`load_policy` reads it back, loading no
code, and gives the greedy policy and an exportable controller.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from instanas_gym.agents.cascade import CascadeActor, CascadePolicy, ThresholdPolicy, greedy_actor
from instanas_gym.agents.config import ControllerConfig
from instanas_gym.agents.controller import Controller, greedy_masks
from instanas_gym.agents.router import RoutedController, Router
from instanas_gym.space.family import ArchitectureFamily
from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask
from instanas_gym.space.search_space import MASK_SHAPE
from instanas_gym.utils.files import FileFormatError, atomic_save, build_module, check_weights, load_torch

Policy = Callable[[np.ndarray], np.ndarray]
POLICY_FORMAT = "instanas-policy-v1"
POLICY_VIEWS = ("masks", "family", "cascade")


def controller_policy(controller: Controller) -> Policy:
    """The controller's greedy masks, p >= 0.5 (the encouragement bound alpha > 0.5 keeps p' >= 0.5
    exactly where p >= 0.5, so it does not change them)."""

    device = next(controller.parameters()).device

    @torch.inference_mode()
    def policy(images: np.ndarray) -> np.ndarray:
        return greedy_masks(torch.sigmoid(controller(torch.from_numpy(images).to(device))))

    return policy


def arm_policy(network: Router, masks: np.ndarray, batch_size: int = 512) -> Policy:
    """A categorical policy's greedy choice: per image the mask of the arm of the largest logit."""
    masks = np.asarray(masks, dtype=np.uint8)

    @torch.inference_mode()
    def policy(images: np.ndarray) -> np.ndarray:
        was_training = network.training
        network.eval()
        x = torch.from_numpy(np.asarray(images))
        arms = torch.cat([network(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
        network.train(was_training)
        return masks[arms.numpy()]

    return policy


def fixed_policy(mask: np.ndarray) -> Policy:
    """The same mask for every image (a single architecture)."""
    return lambda images: np.broadcast_to(mask, (len(images), *MASK_SHAPE))


def random_policy(seed: int = 0, keep_prob: float = 0.5) -> Policy:
    """Uniform-random masks: every bit Bernoulli(keep_prob)."""
    rng = np.random.default_rng(seed)
    return lambda images: (rng.random((len(images), *MASK_SHAPE)) < keep_prob).astype(np.uint8)


def reference_policies() -> dict[str, Policy]:
    """The fixed architectures every comparison shows: the MobileNetV2 path and all ops."""
    return {"MobileNetV2 path": fixed_policy(mobilenetv2_mask()), "all ops": fixed_policy(all_ops_mask())}


# ---- the policy file ----------------------------------------------------------------------------------
class SavedPolicy(NamedTuple):
    """What :func:`load_policy` returns."""

    view: str
    """"masks", "family" or "cascade"."""
    network: nn.Module
    """A :class:`~instanas_gym.agents.controller.Controller` (masks), a K-output
    :class:`~instanas_gym.agents.router.Router` (family) or a
    :class:`~instanas_gym.agents.cascade.CascadePolicy` (cascade), in eval mode."""
    family: ArchitectureFamily | None
    meta: dict[str, Any]

    def policy(self) -> Policy:
        """The greedy policy: images -> masks (masks and family views)."""
        if self.view == "cascade":
            raise ValueError("a cascade policy acts on cascade observations: use actor()")
        if self.view == "masks":
            return controller_policy(self.network)
        return arm_policy(self.network, self.family.masks)

    def actor(self) -> CascadeActor:
        """The cascade view's greedy policy: cascade observations -> actions."""
        if self.view != "cascade":
            raise ValueError(f"a {self.view}-view policy chooses masks: use policy()")
        return greedy_actor(self.network)

    def controller(self) -> nn.Module:
        """The network as an exportable controller (images -> mask logits, greedy where >= 0)."""
        if self.view == "masks":
            return self.network
        return RoutedController(self.network, self.family.masks, np.zeros(self.family.k), 0.0).eval()


def save_policy(path: str | os.PathLike, view: str, network: nn.Module, family: ArchitectureFamily | None = None,
                **meta: Any) -> None:
    """Write a policy file atomically: the view, the network's config and weights, the family (family
    view) and ``meta`` (plain data kept beside)."""
    if view not in POLICY_VIEWS:
        raise ValueError(f"view must be one of {POLICY_VIEWS}, got {view!r}")
    if (view != "masks") != (family is not None):
        raise ValueError("a family- or cascade-view policy is saved with its family, a masks-view one without")
    atomic_save({"format": POLICY_FORMAT, "view": view, "config": network.config, "state_dict": network.state_dict(),
                 "family": None if family is None else family.to_dict(), "meta": meta}, path)


def load_policy(path: str | os.PathLike) -> SavedPolicy:
    """The policy stored at ``path`` (eval mode); errors name the file."""
    hint = "train one with `instanas-gym train-reinforce`"
    ckpt = load_torch(path, "instanas-gym policy", POLICY_FORMAT, ("view", "config", "state_dict", "family"), hint)
    check_weights(path, ckpt["state_dict"], "instanas-gym policy", hint)
    try:
        view, cfg = ckpt["view"], dict(ckpt["config"])
        if view == "masks":
            network: nn.Module = build_module(lambda: Controller(**cfg), ckpt["state_dict"])
            family = None
        elif view in ("family", "cascade"):
            family = ArchitectureFamily.from_dict(ckpt["family"], f"{path}: family")
            network = build_module(lambda: _arm_network(view, cfg), ckpt["state_dict"])
            if family.k != network.k:
                raise ValueError(f"{network.k} outputs and a family of {family.k}")
        else:
            raise ValueError(f"view {view!r:.80} is not one of {POLICY_VIEWS}")
        if not isinstance(ckpt.get("meta") or {}, dict):
            raise TypeError(f"its meta must be a dict, found {ckpt['meta']!r:.80}")
    except FileFormatError:
        raise  # the family's own error, naming the file
    except Exception as err:  # whatever a damaged file's contents make the build raise
        raise FileFormatError(f"{Path(path)} holds a policy that cannot be built ({err}); {hint}") from None
    return SavedPolicy(view, network.eval(), family, dict(ckpt.get("meta") or {}))


def _arm_network(view: str, cfg: dict[str, Any]) -> nn.Module:
    """The network of a family- or cascade-view policy file from its stored config."""
    if view == "family":
        return Router(ControllerConfig(tuple(cfg["widths"]), cfg["input_size"]), cfg["in_channels"], cfg["k"])
    if cfg.get("kind") == "thresholds":
        return ThresholdPolicy(cfg["k"], cfg["stages"], tuple(cfg["order"]), tuple(cfg["thresholds"]))
    body = cfg["body"]
    body = None if body is None else ControllerConfig(tuple(body["widths"]), body["input_size"])
    return CascadePolicy(cfg["k"], cfg["stages"], cfg["classes"], body, cfg["in_channels"], cfg["hidden"])
