"""Random masks: the distributions that training, latency tables and benchmarks draw from.

Every sampler takes a ``numpy.random.Generator`` and returns uint8 masks ``(n, 17, 5)``.
"""

from __future__ import annotations

import numpy as np

from instanas_gym.masks import mobilenetv2_mask
from instanas_gym.search_space import MASK_SHAPE, NUM_CELLS, NUM_OPS


def random_masks(rng: np.random.Generator, n: int, keep_prob: float = 0.5, min_ops: int = 0) -> np.ndarray:
    """``n`` Bernoulli(keep_prob) masks; with ``min_ops=1`` every cell keeps >= 1 op."""
    masks = (rng.random((n, *MASK_SHAPE)) < keep_prob).astype(np.uint8)
    return fill_empty(rng, masks) if min_ops else masks


def fill_empty(rng: np.random.Generator, masks: np.ndarray) -> np.ndarray:
    """Give every empty cell one random op (in place); returns ``masks``."""
    empty = masks.sum(-1) == 0
    pick = rng.integers(0, NUM_OPS, size=empty.shape)
    rows, cells = np.nonzero(empty)
    masks[rows, cells, pick[rows, cells]] = 1
    return masks


def mixed_masks(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` masks from sparse to dense: image i keeps each op with its own probability ~ U(0, 1),
    at least one op per cell (so single-op paths like MobileNetV2's are as likely as dense ones)."""
    keep = rng.random((n, 1, 1))
    return fill_empty(rng, (rng.random((n, *MASK_SHAPE)) < keep).astype(np.uint8))


def one_op_masks(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` masks with exactly one random op per cell (single-path architectures)."""
    masks = np.zeros((n, *MASK_SHAPE), dtype=np.uint8)
    pick = rng.integers(0, NUM_OPS, size=(n, NUM_CELLS))
    np.put_along_axis(masks, pick[..., None], 1, axis=-1)
    return masks


def spread_masks(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` masks from the MobileNetV2 path through single-op to dense Bernoulli masks (keep
    probability 0.05 to 1): the spread of latencies a latency table is fitted and checked on."""
    n_single = n // 5
    keep = np.linspace(0.05, 1.0, n - n_single - 1)
    dense = np.concatenate([random_masks(rng, 1, p) for p in keep])
    return np.concatenate([mobilenetv2_mask()[None], one_op_masks(rng, n_single), dense])
