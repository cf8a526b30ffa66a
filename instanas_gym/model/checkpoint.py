"""Supernet checkpoints: the weights with the search space, dataset and normalisation beside them.

A checkpoint is a dict of tensors and plain Python data (format :data:`FORMAT`), loaded with
``weights_only=True``: no code in a checkpoint file ever runs. Training checkpoints add their resume
state (optimizer, scheduler, RNG states, position); :func:`export_supernet` strips it for shipping.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from instanas_gym.model.supernet import ExecutionMode, Supernet
from instanas_gym.space.search_space import SearchSpace
from instanas_gym.utils.files import FileFormatError, atomic_save, load_torch

FORMAT = "instanas-supernet-v1"
KEYS = ("space", "dataset", "mean", "std", "model")


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


#: What ``instanas-gym prepare`` costs at its defaults (benchmarks/README.md, "prepare at the paper's scale"),
#: and a first run about 30 times cheaper (a tenth of the epochs, about a third of the multiply-adds).
PREPARE_COST = ("at its defaults an estimated 2-12 GPU-hours, or about 530 hours on one CPU core; try "
                "`--epochs 10 --width-mult 0.5` first, about 30 times cheaper")


def train_hint(path: Path, dataset: str | None = None) -> str:
    """What to do about a missing or broken supernet checkpoint at ``path``: the commands that write one."""
    data = f" --dataset {dataset}" if dataset else ""
    prepare = f"`instanas-gym prepare {dataset}` trains and installs one ({PREPARE_COST}), or " if dataset else ""
    return (f"{prepare}train one with `instanas-gym train-supernet{data} --run.out {path.parent}` "
            f"(it writes {path.parent / 'last.pt'})")


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint dict at ``path``, checked (FileNotFoundError / FileFormatError name the file)."""
    path = Path(path)
    return load_torch(path, "instanas-gym supernet checkpoint", FORMAT, KEYS, train_hint(path))


def build_supernet(ckpt: dict[str, Any], path: str | os.PathLike, mode: ExecutionMode = "dynamic") -> Supernet:
    """The supernet (eval mode) described by a checkpoint dict read from ``path`` (named in errors)."""
    try:
        space = SearchSpace.from_dict(ckpt["space"])
        model = Supernet(space, tuple(ckpt["mean"]), tuple(ckpt["std"]), mode=mode)
        model.load_state_dict(ckpt["model"])
    except Exception as err:  # whatever a damaged checkpoint's contents make torch raise
        raise FileFormatError(f"{path} holds a supernet that cannot be built ({type(err).__name__}: {err})") from None
    return model.eval()


def load_supernet(path: str | os.PathLike, mode: ExecutionMode = "dynamic") -> tuple[Supernet, dict[str, Any]]:
    """Build the supernet stored at ``path`` in eval mode; returns it and the checkpoint dict."""
    ckpt = load_checkpoint(path)
    return build_supernet(ckpt, path, mode), ckpt


def export_supernet(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Copy a training checkpoint without its resume state (optimizer, scheduler, RNG): for shipping."""
    ckpt = load_checkpoint(src)
    keep = ("format", *KEYS, "metrics", "config", "epoch")
    atomic_save({k: ckpt[k] for k in keep if k in ckpt}, dest)
