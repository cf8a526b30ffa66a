"""The model the demo serves: an export folder of :func:`~instanas_gym.deploy.export.export_model`
(one architecture per image) or of :func:`~instanas_gym.deploy.cascade.export_cascade` (a cascade),
written once per controller into the cache and reused on later starts, and the page's state for it.

A controller file is a policy file (``instanas-gym train-reinforce``, ``search``), a router with its
family of architectures (:mod:`instanas_gym.agents.router`) or a bare controller; the bundled
default is the bundled router (:data:`~instanas_gym.utils.paths.BUNDLED_ROUTER`). The manifest
records the size of the family the controller chooses among (``family_size``; None for 85-bit masks):
only the architectures it picks on the test split are exported, and the page says so.

A cascade policy file (view "cascade": ``instanas-gym fit-cascade``, ``train-reinforce cascade``) is
exported whole, every architecture of its family, with each one's latency by the page's latency table
(which its cache entry therefore depends on), and served by :class:`~.cascade.CascadeState`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from torch import nn

from instanas_gym.agents.controller import CONTROLLER_FORMAT, load_controller
from instanas_gym.agents.policy import POLICY_FORMAT, SavedPolicy, load_policy
from instanas_gym.agents.router import ROUTER_FORMAT
from instanas_gym.agents.router_file import load_router
from instanas_gym.demo.cascade import CascadeState
from instanas_gym.demo.state import DemoState, page_latency_table
from instanas_gym.deploy.cascade import CASCADE_FORMAT, export_cascade
from instanas_gym.deploy.export import export_model
from instanas_gym.latency.table import LatencyTable
from instanas_gym.model.checkpoint import load_supernet
from instanas_gym.model.supernet import Supernet
from instanas_gym.space.data import load_split
from instanas_gym.utils.files import FileFormatError, load_json
from instanas_gym.utils.paths import BUNDLED_DATASET, BUNDLED_ROUTER, cache_dir, default_supernet


class ServedController(NamedTuple):
    """A controller file as the demo serves it."""

    module: nn.Module
    """uint8 images -> mask logits (B, 17, 5), what :func:`~instanas_gym.deploy.export.export_model` takes."""
    family_size: int | None
    """Architectures it chooses among (a router's or a family-view policy's family); None for masks."""


def load_any_controller(path: str | os.PathLike) -> ServedController:
    """The controller stored at ``path``: a policy file (``train-reinforce``, ``search``), a router
    (as a :class:`~instanas_gym.agents.router.RoutedController`) or a bare controller; errors name the
    file and the formats served."""
    try:
        saved = load_policy(path)
    except FileFormatError as err:
        found = err.found_format
        if found not in (ROUTER_FORMAT, CONTROLLER_FORMAT):
            formats = f"{POLICY_FORMAT!r}, {ROUTER_FORMAT!r} or {CONTROLLER_FORMAT!r}"
            raise FileFormatError(f"{str(err).split(';')[0]}; the demo serves a {formats} file") from None
    else:
        if saved.view == "cascade":
            raise ValueError(f"{path} holds a cascade policy, not a controller: serve it with served_folder")
        return ServedController(saved.controller(), None if saved.family is None else saved.family.k)
    if found == ROUTER_FORMAT:
        router = load_router(path)
        return ServedController(router.controller(), len(router.family_masks))
    return ServedController(load_controller(path)[0], None)


def cascade_policy(path: str | os.PathLike) -> SavedPolicy | None:
    """The cascade policy stored at ``path``; None when the file holds anything else (a damaged file
    included: :func:`load_any_controller` names what is wrong with it)."""
    try:
        saved = load_policy(path)
    except FileFormatError:
        return None
    return saved if saved.view == "cascade" else None


def default_controller(dataset: str) -> Path:
    """The controller the demo serves when none is given: the bundled router for the bundled data set."""
    if dataset != BUNDLED_DATASET:
        raise ValueError(f"no controller ships for dataset {dataset!r}: pass --policy (a file of "
                         "`instanas-gym train-reinforce` or `search`) or --export-folder")
    return BUNDLED_ROUTER


#: Bumped when what an export folder holds changes, so older exports in the cache are not reused.
EXPORT_LAYOUT = "3"  # 3: cascade arms fold in the next decision (instanas-cascade-v2)


def _digest(*paths: Path) -> str:
    h = hashlib.sha256(EXPORT_LAYOUT.encode())
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def served_folder(
    controller: str | os.PathLike | None = None,
    export_folder: str | os.PathLike | None = None,
    dataset: str = BUNDLED_DATASET,
    supernet: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    progress: Callable[[int, int], None] | None = None,
    latency_table: str | os.PathLike | None = None,
) -> Path:
    """The export folder to serve: ``export_folder`` itself when given (it must hold a
    ``manifest.json``); else ``controller`` (default :func:`default_controller`) with ``supernet``
    (default the data set's), exported over the test split into
    ``$INSTANAS_CACHE/demo/<controller>-<hash of both files>`` unless a finished export is already
    there. A cascade policy is exported with its architectures' latency by ``latency_table``
    (:func:`~.state.page_latency_table`), whose file the hash then covers too. ``progress(done, total)``
    reports the architectures exported."""
    if export_folder is not None:
        if controller is not None:
            raise ValueError("pass --policy or --export-folder, not both")
        folder = Path(export_folder)
        if not (folder / "manifest.json").is_file():
            raise FileNotFoundError(f"--export-folder {folder} holds no manifest.json; write one with "
                                    "instanas_gym.deploy.export.export_model, or pass --policy")
        return folder
    ctrl = Path(controller) if controller is not None else default_controller(dataset)
    net = Path(supernet) if supernet is not None else default_supernet(dataset)
    cascade = cascade_policy(ctrl) if ctrl.is_file() else None
    table = page_latency_table(dataset, latency_table) if cascade is not None else None
    for what, p in (("policy", ctrl), ("env.supernet", net), ("env.latency-table", table)):
        if p is not None and not p.is_file():
            raise FileNotFoundError(f"--{what} {p}: no such file")
    folder = cache_dir() / "demo" / f"{ctrl.stem}-{_digest(ctrl, net, *([table] if table else []))}"
    if (folder / "manifest.json").is_file():  # written last: its presence means the export finished
        return folder
    served = None if cascade is not None else load_any_controller(ctrl)
    model, ckpt = load_supernet(net)
    if ckpt["dataset"] != dataset:
        raise ValueError(f"--env.supernet {net} was trained on {ckpt['dataset']!r}, not on {dataset!r}")
    if cascade is not None:
        _export_cascade(folder, model, cascade, LatencyTable.load(table), dataset, ctrl, progress)
        return folder
    test = load_split(dataset, "test", data_root)
    export_model(folder, model, served.module, test.images, progress=progress,
                 extra={"dataset": dataset, "controller_file": str(ctrl), "supernet_file": str(net),
                        "family_size": served.family_size})
    return folder


def _export_cascade(folder: Path, model: Supernet, saved: SavedPolicy, table: LatencyTable, dataset: str, path: Path,
                    progress: Callable[[int, int], None] | None) -> None:
    """Export the cascade policy ``saved`` (read from ``path``) on ``model`` into ``folder``."""
    family = saved.family
    if family.dataset not in (None, dataset):
        raise ValueError(f"--policy {path}: its family is of a {family.dataset} supernet, not of a {dataset} one")
    if progress is not None:
        progress(0, family.k)
    export_cascade(folder, model, family, family.network_ms(table), saved.network, saved.network.stages)
    if progress is not None:
        progress(family.k, family.k)


def serving_state(folder: str | os.PathLike, dataset: str, data_root: str | os.PathLike | None = None,
                  latency_table: str | os.PathLike | None = None, threads: int = 1) -> DemoState:
    """The page's state for the export ``folder`` (arguments: those of :class:`~.state.DemoState`): a
    :class:`~.cascade.CascadeState` for a cascade, else a :class:`~.state.DemoState`."""
    manifest = load_json(Path(folder) / "manifest.json", "export manifest", "pass --policy or --export-folder")
    kind = CascadeState if manifest.get("format") == CASCADE_FORMAT else DemoState
    return kind(folder, dataset, data_root, latency_table, threads)
