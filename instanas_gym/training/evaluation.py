"""Test-split accuracy of fixed architectures and of per-image masks. Accuracy is a fraction (0-1)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from instanas_gym.data import ImageSet
from instanas_gym.masks import all_ops_mask, mobilenetv2_mask
from instanas_gym.samplers import random_masks
from instanas_gym.supernet import Supernet


@torch.no_grad()
def correct_per_image(
    model: Supernet, data: ImageSet, masks: np.ndarray | Callable[[int], np.ndarray], batch_size: int = 256
) -> np.ndarray:
    """Bool (N,): which images of ``data`` are classified right under one fixed mask (17, 5) or
    ``masks(n)`` per-image masks (eval mode, restored after), on the model's device."""
    was_training = model.training
    model.eval()
    images, labels = data.tensors()
    device = model.mean.device
    right = []
    for i in range(0, len(labels), batch_size):
        x = images[i : i + batch_size].to(device)
        m = masks(len(x)) if callable(masks) else masks
        right.append((model(x, m).argmax(1).cpu() == labels[i : i + batch_size]).numpy())
    model.train(was_training)
    return np.concatenate(right)


def evaluate(
    model: Supernet, data: ImageSet, masks: np.ndarray | Callable[[int], np.ndarray], batch_size: int = 256
) -> float:
    """Top-1 accuracy (fraction, 0-1) on ``data`` under one fixed mask (17, 5) or ``masks(n)`` per-image masks."""
    return float(correct_per_image(model, data, masks, batch_size).mean())


def final_evaluation(
    model: Supernet, test: ImageSet, batch_size: int = 256, seed: int = 0, fixed: np.ndarray | None = None
) -> dict[str, float]:
    """Test accuracy (fractions) of the MobileNetV2 path, all ops, per-image Bernoulli(0.5) random
    masks, and the ``fixed`` mask trained alone when given."""
    rng = np.random.default_rng(seed)
    out = {
        "test_acc_mobilenetv2": evaluate(model, test, mobilenetv2_mask(), batch_size),
        "test_acc_all_ops": evaluate(model, test, all_ops_mask(), batch_size),
        "test_acc_random": evaluate(model, test, lambda n: random_masks(rng, n, 0.5, min_ops=1), batch_size),
    }
    if fixed is not None:
        out["test_acc_fixed"] = evaluate(model, test, fixed, batch_size)
    return out
