"""Supernet checkpoints: the weights with the search space, dataset and normalisation beside them.

A checkpoint is a dict of tensors and plain Python data (format :data:`FORMAT`), loaded with
``weights_only=True``: no code in a checkpoint file ever runs. Training checkpoints add their resume
state (optimizer, scheduler, RNG states, position); :func:`export_supernet` strips it for shipping.

Loading checks the file's zip checksums (:func:`~instanas_gym.utils.files.load_torch`), that every
weight is finite, and that the normalisation is possible (finite ``mean``, finite ``std`` > 0, one
value per input channel); a file that fails raises :class:`~instanas_gym.utils.files.FileFormatError`
naming it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from instanas_gym.model.supernet import ExecutionMode, Supernet
from instanas_gym.space.data import DATASETS
from instanas_gym.space.search_space import SearchSpace
from instanas_gym.utils.files import FileFormatError, atomic_save, check_finite_numbers, check_weights, load_torch
from instanas_gym.utils.paths import in_package

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
    if in_package(path):  # the package's own file: restore it, never write there
        return (f"reinstall instanas-gym to restore the bundled supernet, or {prepare}train one with "
                f"`instanas-gym train-supernet{data} --run.out FOLDER` and pass FOLDER/last.pt as supernet")
    return (f"{prepare}train one with `instanas-gym train-supernet{data} --run.out {path.parent}` "
            f"(it writes {path.parent / 'last.pt'})")


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint dict at ``path``, checked (FileNotFoundError / FileFormatError name the file):
    intact, finite weights, possible normalisation (see the module docstring)."""
    path = Path(path)
    what, hint = "instanas-gym supernet checkpoint", train_hint(path)
    ckpt = load_torch(path, what, FORMAT, KEYS, hint)
    if not isinstance(ckpt["dataset"], str) or ckpt["dataset"] not in DATASETS:
        raise FileFormatError(f"{path}: dataset must be one of {sorted(DATASETS)}, found {ckpt['dataset']!r:.80}; "
                              f"{hint}")
    mean = check_finite_numbers(path, ckpt["mean"], "mean")
    std = check_finite_numbers(path, ckpt["std"], "std", positive=True)
    if len(mean) != len(std):
        raise FileFormatError(f"{path}: mean and std must hold one value per input channel each, "
                              f"found {len(mean)} and {len(std)}; {hint}")
    check_weights(path, ckpt["model"], what, hint)
    if "std" in ckpt["model"] and not bool((ckpt["model"]["std"] > 0).all()):
        raise FileFormatError(f"{path} is a damaged {what}: its weights' std buffer holds values <= 0; {hint}")
    return ckpt


def _check_shapes(space: SearchSpace, ckpt: dict[str, Any]) -> None:
    """Refuse a search space that does not fit the stored weights before any memory is allocated for it."""
    if len(ckpt["mean"]) != space.in_channels:
        raise ValueError(f"mean and std hold {len(ckpt['mean'])} values for {space.in_channels} input channels")
    want = {"stem.0.weight": (space.stem_channels, space.in_channels, 3, 3),
            "classifier.weight": (space.num_classes, space.head_channels)}
    for name, shape in want.items():
        found = tuple(ckpt["model"][name].shape) if name in ckpt["model"] else None
        if found != shape:
            raise ValueError(f"the search space {ckpt['space']!r:.160} needs {name} of shape {shape}, "
                             f"the weights hold {found}")


def build_supernet(ckpt: dict[str, Any], path: str | os.PathLike, mode: ExecutionMode = "dynamic") -> Supernet:
    """The supernet (eval mode) described by a checkpoint dict read from ``path`` (named in errors)."""
    try:
        space = SearchSpace.from_dict(ckpt["space"])
        _check_shapes(space, ckpt)
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
    keep = ("format", *KEYS, "metrics", "config", "epoch", "train_mask", "teacher")
    atomic_save({k: ckpt[k] for k in keep if k in ckpt}, dest)
