"""Where files live: the assets shipped in the package, the cache of trained supernets and tables,
and the data root. Every location that a user can move is read from the environment at call time:

* ``$INSTANAS_CACHE`` (default ``~/.cache/instanas_gym``): ``<dataset>/last.pt`` (the supernet) and
  ``<dataset>/latency.json`` (its latency table) for data sets that ship no bundled files;
* ``$INSTANAS_DATA`` (default: the data root ``instanas-gym prepare`` recorded in
  ``$INSTANAS_CACHE/<dataset>/prepared.json``, else ``$INSTANAS_CACHE/data``): where torchvision data
  sets are looked for (and downloaded to with ``download=True``).

``instanas-gym prepare DATASET`` installs ``last.pt``, the latency table(s) and ``prepared.json`` in
``$INSTANAS_CACHE/<dataset>/``; for the bundled data set they then replace the bundled files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: Files shipped inside the package.
ASSETS = Path(__file__).resolve().parents[1] / "assets"
BUNDLED_SUPERNET = ASSETS / "supernet_fashion_mnist.pt"
BUNDLED_LATENCY_TABLE = ASSETS / "latency_fashion_mnist.json"
#: The bundled supernet's table for ONNX Runtime, the deployment runtime.
BUNDLED_ONNX_LATENCY_TABLE = ASSETS / "latency_fashion_mnist_onnxruntime.json"
#: Runtimes a latency table can describe: eager PyTorch (dynamic execution) or ONNX Runtime.
LATENCY_BACKENDS = ("onnxruntime", "torch")
#: The runtime whose table the environment uses by default: the deployed model's.
DEFAULT_LATENCY_BACKEND = "onnxruntime"
#: A router over a family of 6 architectures of the bundled supernet (``instanas_gym.agents.router``),
#: the controller ``instanas-gym demo`` serves by default.
BUNDLED_ROUTER = ASSETS / "router_fashion_mnist.pt"
#: That router's family of architectures (``instanas_gym.space.family``), with its stored outcomes on the
#: search split beside it (lookup mode).
BUNDLED_FAMILY = ASSETS / "family_fashion_mnist.json"
#: The bundled cascade family (the cascade view's default for Fashion-MNIST).
BUNDLED_CASCADE_FAMILY = ASSETS / "cascade_family_fashion_mnist.json"
BUNDLED_FASHION_MNIST = ASSETS / "fashion_mnist"
#: Where Debian's ``dataset-fashion-mnist`` package puts its gzip files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
#: The data set whose supernet, latency table and search/test images ship in the package.
BUNDLED_DATASET = "fashion_mnist"


def in_package(path: str | os.PathLike) -> bool:
    """Whether ``path`` is one of the files shipped inside the package (never written, never to be edited)."""
    return Path(path).resolve().is_relative_to(ASSETS.resolve())


def rebuild_hint(path: str | os.PathLike, rebuilt: str) -> str:
    """What an error about a damaged derived file tells the user to do: reinstall instanas-gym for a
    file shipped in the package (never to be edited), else move it aside, after which ``rebuilt``
    (e.g. "the pool is scored again") happens by itself."""
    if in_package(path):
        return "reinstall instanas-gym to restore it"
    return f"move {Path(path).name} aside and {rebuilt}"


def cache_dir() -> Path:
    """``$INSTANAS_CACHE``, else ``~/.cache/instanas_gym``."""
    env = os.environ.get("INSTANAS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "instanas_gym"


def beside_checkpoint(checkpoint: str | os.PathLike, name: str, cache_folder: str) -> Path:
    """Where a file derived from ``checkpoint`` is written: ``name`` beside it, or, for a checkpoint
    inside the installed package (whose shipped files never change), ``cache_dir()/cache_folder/name``."""
    path = Path(checkpoint)
    return cache_dir() / cache_folder / name if in_package(path) else path.with_name(name)


#: What ``instanas-gym prepare`` writes beside the files it installs: the data root, the files, the date.
PREPARED_FILE = "prepared.json"


def prepared(dataset: str) -> dict[str, Any] | None:
    """The record ``instanas-gym prepare`` installed for ``dataset`` (``cache_dir()/<dataset>/prepared.json``),
    or None when there is none (or it is unreadable: then the defaults apply)."""
    path = cache_dir() / dataset / PREPARED_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def data_root(root: str | os.PathLike | None = None, dataset: str | None = None) -> Path:
    """The data root: ``root`` if given, else ``$INSTANAS_DATA``, else the one ``prepare`` recorded
    for ``dataset``, else ``cache_dir() / "data"``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("INSTANAS_DATA")
    if env:
        return Path(env).expanduser()
    recorded = (prepared(dataset) or {}).get("data_root") if dataset else None
    return Path(recorded) if isinstance(recorded, str) else cache_dir() / "data"


def _installed(dataset: str) -> bool:
    """Whether ``prepare`` installed files for the bundled data set, which then replace the bundled ones."""
    return dataset == BUNDLED_DATASET and prepared(dataset) is not None


def default_supernet(dataset: str) -> Path:
    """The supernet a dataset's environment loads when none is given: bundled, or in the cache."""
    if dataset == BUNDLED_DATASET and not _installed(dataset):
        return BUNDLED_SUPERNET
    return cache_dir() / dataset / "last.pt"


def default_latency_table(dataset: str, backend: str = DEFAULT_LATENCY_BACKEND) -> Path:
    """The latency table of ``backend`` (one of :data:`LATENCY_BACKENDS`) a dataset's environment
    loads when none is given: bundled, or ``latency_onnxruntime.json`` / ``latency.json`` (torch) in the cache."""
    if backend not in LATENCY_BACKENDS:
        raise ValueError(f"latency_backend must be one of {LATENCY_BACKENDS}, got {backend!r}")
    if dataset == BUNDLED_DATASET and not _installed(dataset):
        return BUNDLED_LATENCY_TABLE if backend == "torch" else BUNDLED_ONNX_LATENCY_TABLE
    return cache_dir() / dataset / ("latency.json" if backend == "torch" else f"latency_{backend}.json")
