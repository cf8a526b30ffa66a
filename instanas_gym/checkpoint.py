"""Saving and loading supernets: atomic writes, config stored beside the weights."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .search_space import SearchSpace
from .supernet import ExecutionMode, Supernet

ASSETS = Path(__file__).parent / "assets"
BUNDLED_SUPERNET = ASSETS / "supernet_fashion_mnist.pt"
BUNDLED_LATENCY_TABLE = ASSETS / "latency_fashion_mnist.json"
CACHE_DIR = Path(os.environ.get("INSTANAS_CACHE", Path.home() / ".cache" / "instanas_gym"))
FORMAT = "instanas-supernet-v1"


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def supernet_state(model: Supernet, dataset: str, **extra: Any) -> dict[str, Any]:
    """The checkpoint dict of a supernet: weights, search space, dataset and normalisation."""
    return {
        "format": FORMAT,
        "space": model.space.to_dict(),
        "dataset": dataset,
        "mean": model.mean.flatten().tolist(),
        "std": model.std.flatten().tolist(),
        "model": model.state_dict(),
        **extra,
    }


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no supernet checkpoint at {path}; train one with `python examples/train_supernet.py "
            f"--dataset DATASET --out {path.parent}` (it writes {path.name} there)"
        )
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not an instanas-gym supernet checkpoint (format {FORMAT})")
    return ckpt


def load_supernet(path: str | os.PathLike, mode: ExecutionMode = "dynamic") -> tuple[Supernet, dict[str, Any]]:
    """Build the supernet stored at ``path`` in eval mode; returns it and the checkpoint dict."""
    ckpt = load_checkpoint(path)
    model = Supernet(SearchSpace.from_dict(ckpt["space"]), tuple(ckpt["mean"]), tuple(ckpt["std"]), mode=mode)
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


def export_supernet(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Copy a training checkpoint without its resume state (optimizer, scheduler, RNG): for shipping."""
    ckpt = load_checkpoint(src)
    keep = ("format", "space", "dataset", "mean", "std", "model", "metrics", "config", "epoch")
    atomic_save({k: ckpt[k] for k in keep if k in ckpt}, dest)
