"""Test-split accuracy of fixed architectures and of per-image masks. Accuracy is a fraction (0-1)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from instanas_gym.latency.table import LatencyTable
from instanas_gym.model.outcomes import correct_per_image
from instanas_gym.model.supernet import Supernet
from instanas_gym.space.data import ImageSet
from instanas_gym.space.family import probe_masks
from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask, random_masks


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


def probe_accuracies(
    model: Supernet, data: ImageSet, table: LatencyTable, batch_size: int = 256, seed: int = 0,
    share: tuple[int, int] = (0, 1),
) -> dict[str, float]:
    """Accuracy (fraction) on ``data`` of each probe architecture (:func:`~instanas_gym.space.family.probe_masks`
    of ``table``, seed 0) and of per-image Bernoulli(0.5) masks (``"per_image_0.5"``, drawn with
    ``seed``), with the shared BatchNorm statistics: the curves that say when training has flattened.
    ``share`` = (k, n): only every n-th of them from the k-th on (n processes split the work)."""
    k, n = share
    todo = [*probe_masks(table, 0), ("per_image_0.5", None)][k::n]
    rng = np.random.default_rng(seed)
    return {name: evaluate(model, data, mask if mask is not None else lambda b: random_masks(rng, b, 0.5, min_ops=1),
                           batch_size) for name, mask in todo}
