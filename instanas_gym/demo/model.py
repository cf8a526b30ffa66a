"""The model the demo serves: an export folder of :func:`~instanas_gym.deploy.export.export_model`,
written once per controller into the cache and reused on later starts.

A controller file is a policy file (``instanas-gym train-reinforce``, ``search``), a REINFORCE
controller, or a router with its family of architectures (:mod:`instanas_gym.agents.router`); the
bundled default's is the bundled router (:data:`~instanas_gym.utils.paths.BUNDLED_ROUTER`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from torch import nn

from instanas_gym.agents.controller import CONTROLLER_FORMAT, load_controller
from instanas_gym.agents.policy import POLICY_FORMAT, load_policy
from instanas_gym.agents.router import ROUTER_FORMAT, load_router
from instanas_gym.deploy.export import export_model
from instanas_gym.model.checkpoint import load_supernet
from instanas_gym.space.data import load_split
from instanas_gym.utils.files import FileFormatError
from instanas_gym.utils.paths import BUNDLED_DATASET, BUNDLED_ROUTER, cache_dir, default_supernet


def load_any_controller(path: str | os.PathLike) -> nn.Module:
    """The controller stored at ``path``: a policy file (``train-reinforce``, ``search``; masks or
    family view), a REINFORCE controller, or a router as a
    :class:`~instanas_gym.agents.router.RoutedController`; errors name the file and the formats."""
    try:
        return load_controller(path)[0]
    except FileFormatError as err:
        if err.found_format == POLICY_FORMAT:
            saved = load_policy(path)
            if saved.view not in ("masks", "family"):
                raise FileFormatError(f"{path} holds a {saved.view}-view policy; the demo serves one mask per image "
                                      "(a masks- or family-view policy)") from None
            return saved.controller()
        if err.found_format != ROUTER_FORMAT:
            raise FileFormatError(f"{str(err).split(';')[0]} (nor {POLICY_FORMAT!r} nor {ROUTER_FORMAT!r}); the demo "
                                  f"serves a {POLICY_FORMAT!r}, {CONTROLLER_FORMAT!r} or {ROUTER_FORMAT!r} file") from None
    return load_router(path).controller()


def default_controller(dataset: str) -> Path:
    """The controller the demo serves when none is given: the bundled router for the bundled data set."""
    if dataset != BUNDLED_DATASET:
        raise ValueError(f"no controller ships for dataset {dataset!r}: pass --controller (a file of "
                         "`instanas-gym train-reinforce` or `search`) or --export-folder")
    return BUNDLED_ROUTER


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
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
) -> Path:
    """The export folder to serve: ``export_folder`` itself when given (it must hold a
    ``manifest.json``); else ``controller`` (default :func:`default_controller`) with ``supernet``
    (default the data set's), exported over the test split into
    ``$INSTANAS_CACHE/demo/<controller>-<hash of both files>`` unless a finished export is already
    there. ``progress(done, total)`` reports the architectures exported."""
    if export_folder is not None:
        if controller is not None:
            raise ValueError("pass --controller or --export-folder, not both")
        folder = Path(export_folder)
        if not (folder / "manifest.json").is_file():
            raise FileNotFoundError(f"--export-folder {folder} holds no manifest.json; write one with "
                                    "instanas_gym.deploy.export.export_model, or pass --controller")
        return folder
    ctrl = Path(controller) if controller is not None else default_controller(dataset)
    net = Path(supernet) if supernet is not None else default_supernet(dataset)
    for what, p in (("controller", ctrl), ("supernet", net)):
        if not p.is_file():
            raise FileNotFoundError(f"--{what} {p}: no such file")
    folder = cache_dir() / "demo" / f"{ctrl.stem}-{_digest(ctrl, net)}"
    if (folder / "manifest.json").is_file():  # written last: its presence means the export finished
        return folder
    module = load_any_controller(ctrl)
    model, ckpt = load_supernet(net)
    if ckpt["dataset"] != dataset:
        raise ValueError(f"--supernet {net} was trained on {ckpt['dataset']!r}, not on {dataset!r}")
    test = load_split(dataset, "test", data_root)
    export_model(folder, model, module, test.images, progress=progress,
                 extra={"dataset": dataset, "controller_file": str(ctrl), "supernet_file": str(net)})
    return folder
