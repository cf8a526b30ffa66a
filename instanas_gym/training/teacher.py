"""A fixed teacher for distillation: one architecture of a trained supernet checkpoint, run in eval
mode without gradients.

The teacher is no part of the training state: it is not in the optimizer, and a training checkpoint
holds only its record (:meth:`Teacher.record`: path, file SHA-256, mask, MACs, test accuracy), so a
resume with another teacher file is refused (:func:`check_resumed_teacher`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from instanas_gym.model.checkpoint import load_supernet
from instanas_gym.model.supernet import Supernet
from instanas_gym.space.data import ImageSet
from instanas_gym.space.masks import load_mask, mobilenetv2_mask, validate_mask
from instanas_gym.space.search_space import SearchSpace
from instanas_gym.training.evaluation import evaluate
from instanas_gym.utils.files import file_sha256


def teacher_mask(ckpt: dict[str, Any], mask_file: str | os.PathLike | None) -> np.ndarray:
    """Which architecture of checkpoint ``ckpt`` teaches: the mask in ``mask_file`` when given, else
    the mask the checkpoint was trained on alone (``train_mask``, ``mask_sampling="fixed"``), else
    its MobileNetV2 path (what ``mask_sampling="mobilenetv2"`` trains)."""
    if mask_file is not None:
        return load_mask(mask_file)
    stored = ckpt.get("train_mask")
    return mobilenetv2_mask() if stored is None else validate_mask(np.asarray(stored, dtype=np.uint8), name="train_mask")


class Teacher:
    """One architecture (``mask``) of the supernet checkpoint at ``path``, frozen: eval mode, no
    parameter requires a gradient, every forward under ``torch.no_grad``.

    Args:
        path: the teacher's checkpoint (``instanas-gym train-supernet --mask-sampling mobilenetv2``, say).
        mask_file: a mask file choosing the teacher architecture; None: :func:`teacher_mask`'s default.
        dataset, space: the student's; the teacher must be of the same dataset, image shape and classes
            (its width may differ).
        device, memory_format: where and how the teacher runs (the student's).
    """

    def __init__(
        self, path: str | os.PathLike, mask_file: str | os.PathLike | None, dataset: str, space: SearchSpace,
        device: torch.device, memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        self.path = Path(path)
        model, ckpt = load_supernet(self.path)
        theirs = (ckpt["dataset"], model.space.input_size, model.space.in_channels, model.space.num_classes)
        ours = (dataset, space.input_size, space.in_channels, space.num_classes)
        if theirs != ours:
            raise ValueError(f"teacher {self.path} is a (dataset, input size, channels, classes) = {theirs} "
                             f"supernet; the student is {ours}")
        self.mask = teacher_mask(ckpt, mask_file)
        self.sha256 = file_sha256(self.path)
        self.model: Supernet = model.to(device, memory_format=memory_format).eval().requires_grad_(False)
        self._mask = torch.from_numpy(self.mask).bool()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's logits (B, classes), float32, for uint8 images (B, C, H, W): fixed targets,
        computed without a graph (no gradient can reach the teacher)."""
        with torch.no_grad():
            return self.model(images, self._mask).float()

    def record(self, test: ImageSet, batch_size: int = 256) -> dict[str, Any]:
        """What a checkpoint keeps of the teacher: path, file SHA-256, mask, MACs (batch 1) and test
        accuracy (fraction) on ``test``."""
        return {"path": str(self.path), "sha256": self.sha256, "mask": self.mask.tolist(),
                "macs": int(self.model.space.macs(self.mask)),
                "test_acc": evaluate(self.model, test, self.mask, batch_size), "test_images": len(test)}

    def images_per_second(self, images: torch.Tensor, batches: int = 5) -> float:
        """img/s of the teacher's forward on ``images`` (uint8 NCHW, one batch), timed over ``batches``
        calls after one warm-up call (for the log only: a measurement of this machine)."""
        self(images)
        start = time.perf_counter()
        for _ in range(batches):
            self(images)
        return batches * len(images) / (time.perf_counter() - start)


def check_resumed_teacher(saved: dict[str, Any] | None, teacher: Teacher | None, checkpoint: Path) -> None:
    """Refuse to resume ``checkpoint`` (which was trained from the teacher record ``saved``, or from
    none) with another teacher: another file's bytes, another architecture, or none / one where it had
    one / none. The teacher's path may change."""
    now = None if teacher is None else (teacher.sha256, teacher.mask.tolist())
    before = None if saved is None else (saved["sha256"], saved["mask"])
    if now != before:
        was = "no teacher" if saved is None else f"teacher {saved['path']} (SHA-256 {saved['sha256'][:12]}...)"
        given = "none" if teacher is None else f"{teacher.path} (SHA-256 {teacher.sha256[:12]}...)"
        detail = "another architecture of it" if now and before and now[0] == before[0] else f"now {given}"
        raise ValueError(f"{checkpoint} was trained from {was}, {detail}; resume with the same teacher file and "
                         f"teacher_mask, or start a new run in another --run.out")
