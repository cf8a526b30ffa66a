"""BatchNorm statistics of single architectures, each its own: estimated once on training images and
kept in one file beside the supernet.

A network that runs alone (a family arm, an architecture the outcomes store scores, a deployed
graph) needs no statistics shared with every other mask; statistics re-estimated for it alone
help sparse masks most (benchmarks/README.md, "own statistics"). :class:`OwnStatistics` estimates
them on demand (:func:`~instanas_gym.model.batchnorm.own_bn_state`: ``batches`` batches of
``batch_size`` training images, seeded by ``seed``) and keeps them per architecture, keyed by the
effective mask's bytes (the ops that really run). The 85-bit per-image masks keep the shared ones.

The file (format ``"instanas-bn-v1"``, a torch file of tensors and plain data) is
``<checkpoint stem>_bn_<split>.pt`` beside the checkpoint, where ``split`` is the training split the
statistics were estimated on (:func:`~instanas_gym.space.data.statistics_split`); for a checkpoint
inside the installed package what is added goes to ``$INSTANAS_CACHE/bn/`` instead (a file shipped
beside it is read too)::

    {"format": "instanas-bn-v1",
     "key": {format, supernet_sha256, dataset, split, images, data_sha256, batches, batch_size, seed},
     "architectures": {effective mask bytes as hex (170 characters): {BatchNorm buffer name: tensor}}}

A file whose key differs from the supernet, data and settings at hand is stale and replaced; a
damaged one raises :class:`~instanas_gym.utils.files.FileFormatError` naming it.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from instanas_gym.model.batchnorm import own_bn_state
from instanas_gym.model.supernet import Supernet
from instanas_gym.space.data import ImageSet, data_sha256
from instanas_gym.space.masks import validate_mask
from instanas_gym.space.search_space import MASK_SHAPE
from instanas_gym.utils.checks import check_int
from instanas_gym.utils.files import FileFormatError, atomic_save, file_sha256, load_torch
from instanas_gym.utils.paths import beside_checkpoint, rebuild_hint
from instanas_gym.utils.runlog import progress_bar

BN_FORMAT = "instanas-bn-v1"


def _hint(path: Path) -> str:
    """What to do about a damaged statistics file."""
    return rebuild_hint(path, "the statistics are estimated again")


def shipped_statistics_path(checkpoint: str | os.PathLike, split: str) -> Path:
    """The own-statistics file beside ``checkpoint`` (for the bundled supernet: the one shipped with it)."""
    path = Path(checkpoint)
    return path.with_name(f"{path.stem}_bn_{split}.pt")


def statistics_path(checkpoint: str | os.PathLike, split: str) -> Path:
    """Where the own statistics of ``checkpoint``'s architectures are written: beside it, or in
    ``$INSTANAS_CACHE/bn/`` for a checkpoint inside the installed package."""
    return beside_checkpoint(checkpoint, shipped_statistics_path(checkpoint, split).name, "bn")


class OwnStatistics:
    """Each architecture's own BatchNorm statistics for ``model``, estimated on ``data`` on demand and kept.

    Args:
        model: the supernet (a snapshot is taken now: later changes to its weights are not followed).
        checkpoint: the file ``model`` was loaded from; None keeps the statistics in memory only.
        data: training images the statistics are estimated on (never the split that is judged).
        batches, batch_size, seed: of each estimate (:func:`~instanas_gym.model.batchnorm.own_bn_state`).
        progress: show a progress bar while estimating.
        rebuild: estimate again whatever is asked for, even when the file holds it.
    """

    def __init__(
        self, model: Supernet, checkpoint: str | os.PathLike | None, data: ImageSet, batches: int = 20,
        batch_size: int = 128, seed: int = 0, progress: bool = True, rebuild: bool = False,
    ) -> None:
        self.batches, self.batch_size = check_int("batches", batches), check_int("batch_size", batch_size)
        self.seed, self.data, self.progress = check_int("seed", seed, minimum=0), data, progress
        self.space = model.space
        self._work = copy.deepcopy(model).eval()
        self._shared = {k: v.clone() for k, v in self._work.state_dict().items() if _is_bn_buffer(self._work, k)}
        self._names = set(self._shared)
        self.settings = {"split": data.split, "images": len(data), "data_sha256": data_sha256(data),
                         "batches": self.batches, "batch_size": self.batch_size, "seed": self.seed}
        """How the statistics are estimated (part of the key of files computed with them)."""
        self.path = None if checkpoint is None else statistics_path(checkpoint, data.split)
        self.key = None if checkpoint is None else {"format": BN_FORMAT, "supernet_sha256": file_sha256(checkpoint),
                                                    "dataset": data.spec.name, **self.settings}
        self._stats: dict[bytes, dict[str, torch.Tensor]] = {}
        if checkpoint is not None and not rebuild:
            for path in dict.fromkeys([self.path, shipped_statistics_path(checkpoint, data.split)]):
                if path.is_file() and self._read(path):
                    break

    # ---- files -----------------------------------------------------------------------------------
    def _read(self, path: Path) -> bool:
        """Keep the statistics of ``path`` if its key is current; False when stale."""
        stored = load_torch(path, "own BatchNorm statistics file", BN_FORMAT, ("key", "architectures"), _hint(path))
        if stored["key"] != self.key:
            return False
        archs = stored["architectures"]
        if not isinstance(archs, dict):
            raise FileFormatError(f"{path} is damaged: 'architectures' is not a dict; {_hint(path)}")
        for hex_mask, state in archs.items():
            self._stats[self._check_entry(path, hex_mask, state)] = state
        return True

    def _check_entry(self, path: Path, hex_mask: Any, state: Any) -> bytes:
        """The mask bytes of one stored architecture, its statistics checked against the supernet."""
        try:
            mask = np.frombuffer(bytes.fromhex(hex_mask), dtype=np.uint8)
            ok = mask.size == np.prod(MASK_SHAPE) and bool(((mask == 0) | (mask == 1)).all())
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise FileFormatError(f"{path} is damaged: {str(hex_mask)[:20]!r}... is not a mask; {_hint(path)}")
        if not isinstance(state, dict) or not state or any(
            k not in self._names or not isinstance(v, torch.Tensor) or v.shape != self._shared[k].shape
            for k, v in state.items()
        ):
            raise FileFormatError(f"{path} is damaged: the statistics of a mask do not fit this supernet; {_hint(path)}")
        return mask.tobytes()

    def _write(self) -> None:
        if self.path is not None:
            atomic_save({"format": BN_FORMAT, "key": self.key,
                         "architectures": {k.hex(): v for k, v in self._stats.items()}}, self.path)

    # ---- statistics ------------------------------------------------------------------------------
    def _effective(self, masks: np.ndarray) -> np.ndarray:
        return self.space.effective_mask(validate_mask(masks, batched=True)).astype(np.uint8)

    def ensure(self, masks: np.ndarray) -> None:
        """Estimate the statistics of the masks (M, 17, 5) not kept yet, and store them."""
        todo = list(dict.fromkeys(m.tobytes() for m in self._effective(masks) if m.tobytes() not in self._stats))
        if not todo:
            return
        with progress_bar(disable=not self.progress) as bar:
            task = bar.add_task(f"BatchNorm statistics of {len(todo)} architectures", total=len(todo), stats="")
            for key in todo:
                mask = np.frombuffer(key, np.uint8).reshape(MASK_SHAPE)
                self._stats[key] = own_bn_state(self._work, self.data, mask, self.batches, self.batch_size, self.seed)
                bar.advance(task)
        self._write()

    def state(self, mask: np.ndarray) -> dict[str, torch.Tensor]:
        """The own statistics of ``mask`` (17, 5): BatchNorm buffer name -> tensor, for the BatchNorms it runs."""
        self.ensure(validate_mask(mask)[None])
        return self._stats[self._effective(validate_mask(mask)[None])[0].tobytes()]

    def network(self, mask: np.ndarray) -> Supernet:
        """The supernet (eval mode) with ``mask``'s own statistics, to run under ``mask`` only (a
        private copy, changed by the next call; every BatchNorm ``mask`` does not run keeps the shared ones)."""
        own = self.state(mask)
        device = self._work.mean.device
        self._work.load_state_dict({**self._shared, **{k: v.to(device) for k, v in own.items()}}, strict=False)
        return self._work.eval()

    def stored_masks(self) -> np.ndarray:
        """uint8 (M, 17, 5): the effective masks whose statistics are kept now."""
        return np.stack([np.frombuffer(k, np.uint8).reshape(MASK_SHAPE) for k in self._stats]) if self._stats \
            else np.zeros((0, *MASK_SHAPE), dtype=np.uint8)


def _is_bn_buffer(model: Supernet, name: str) -> bool:
    """Whether state-dict entry ``name`` is a BatchNorm running statistic of ``model``."""
    module, _, buffer = name.rpartition(".")
    return buffer in ("running_mean", "running_var", "num_batches_tracked") and \
        isinstance(model.get_submodule(module), torch.nn.BatchNorm2d)
