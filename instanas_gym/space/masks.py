"""Masks: which ops of the 17 cells run. Checks, reference architectures, conversions and files.

A mask is a 0/1 array of shape ``(17, 5)`` (one row per cell, one column per op, see
:mod:`instanas_gym.space.search_space`), or ``(B, 17, 5)`` for a batch. Random masks are drawn by
:mod:`instanas_gym.space.masks`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from instanas_gym.space.search_space import (
    FALLBACK_OP,
    MASK_SHAPE,
    MOBILENETV2_OP,
    NUM_CELLS,
    NUM_OPS,
    OPS,
    SearchSpace,
)
from instanas_gym.utils.files import FileFormatError, atomic_write_text, load_json

MASK_FORMAT = "instanas-mask-v1"
FLAT_BITS = NUM_CELLS * NUM_OPS


def validate_mask(mask: Any, batched: bool | None = False, name: str = "mask") -> np.ndarray:
    """Check that ``mask`` is a 0/1 array of shape (17, 5) (or (B, 17, 5) when ``batched``).

    ``batched=None`` accepts both. Accepts bool or integer dtypes (numpy arrays, torch tensors or
    nested lists); returns a uint8 numpy array. Raises ValueError naming ``name``, the expected
    shape, dtype and values.
    """
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    try:
        arr = np.asarray(mask)
    except (TypeError, ValueError, OverflowError) as err:
        raise ValueError(f"{name} must be a 0/1 array of shape {MASK_SHAPE}; could not read it as one ({err})") from None
    want = {False: "(17, 5)", True: "(B, 17, 5)", None: "(17, 5) or (B, 17, 5)"}[batched]
    ok_shape = arr.shape[-2:] == MASK_SHAPE and (
        (arr.ndim == 2 and batched in (False, None)) or (arr.ndim == 3 and batched in (True, None))
    )
    if not ok_shape:
        raise ValueError(f"{name} must have shape {want} (cells x ops), got {arr.shape}")
    if arr.dtype != np.bool_ and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must have a bool or integer dtype (uint8 expected), got {arr.dtype}")
    if arr.dtype != np.bool_ and arr.size and ((arr != 0) & (arr != 1)).any():
        bad = np.unique(arr[(arr != 0) & (arr != 1)])[:5].tolist()
        raise ValueError(f"{name} values must be 0 or 1, got {bad}")
    return arr.astype(np.uint8)


# ---- reference architectures -------------------------------------------------------------------
def single_op_mask(op: int) -> np.ndarray:
    """The single-path architecture with op ``op`` (a column of :data:`~instanas_gym.space.search_space.OPS`) in every cell."""
    if not 0 <= op < NUM_OPS:
        raise ValueError(f"op must be in [0, {NUM_OPS}), got {op}")
    mask = np.zeros(MASK_SHAPE, dtype=np.uint8)
    mask[:, op] = 1
    return mask


def mobilenetv2_mask() -> np.ndarray:
    """The MobileNetV2 path: inverted residual 3x3 expansion 6 in every cell."""
    return single_op_mask(MOBILENETV2_OP)


def all_ops_mask() -> np.ndarray:
    """Every op in every cell: the largest (slowest) architecture."""
    return np.ones(MASK_SHAPE, dtype=np.uint8)


def fixed_architectures() -> dict[str, np.ndarray]:
    """The single architectures reports show: one op everywhere (the first is MobileNetV2), all ops."""
    names = {MOBILENETV2_OP: "MobileNetV2 path"}
    out = {names.get(i, f"all cells {op.name}"): single_op_mask(i) for i, op in enumerate(OPS)}
    return out | {"all ops": all_ops_mask()}


# ---- conversions -------------------------------------------------------------------------------
def flatten_mask(mask: np.ndarray) -> np.ndarray:
    """(…, 17, 5) -> (…, 85), row-major (cell by cell)."""
    mask = np.asarray(mask)
    return mask.reshape(*mask.shape[:-2], FLAT_BITS)


def unflatten_mask(bits: np.ndarray) -> np.ndarray:
    """(…, 85) -> (…, 17, 5), the inverse of :func:`flatten_mask`."""
    bits = np.asarray(bits)
    if bits.shape[-1:] != (FLAT_BITS,):
        raise ValueError(f"expected a last dimension of {FLAT_BITS} bits, got shape {bits.shape}")
    return bits.reshape(*bits.shape[:-1], *MASK_SHAPE)


def mask_counts(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct masks of a batch (B, 17, 5) and how many images chose each, most used first:
    ``(distinct (K, 17, 5) uint8, counts (K,))``. A policy collapsed onto one architecture has K = 1."""
    masks = validate_mask(masks, batched=True, name="masks")
    distinct, counts = np.unique(flatten_mask(masks), axis=0, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return unflatten_mask(distinct[order]), counts[order]


# ---- files -------------------------------------------------------------------------------------
def save_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write one mask (17, 5) as JSON: ``{"format": ..., "ops": [op names], "mask": [[0/1] x 5] x 17}``."""
    m = validate_mask(mask)
    atomic_write_text(path, json.dumps({"format": MASK_FORMAT, "ops": [op.name for op in OPS], "mask": m.tolist()}))


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask (17, 5) uint8 from a file of :func:`save_mask` or a ``.npy`` array."""
    path = Path(path)
    hint = "write one with instanas_gym.space.masks.save_mask"
    if path.suffix == ".npy":
        if not path.is_file():
            raise FileNotFoundError(f"no mask file at {path}; {hint}")
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as err:  # any failure to parse the file means it is damaged
            raise FileFormatError(f"{path} is not a readable .npy mask ({err}); {hint}") from None
    else:
        data = load_json(path, "mask file", hint)
        if data.get("format") != MASK_FORMAT or "mask" not in data:
            raise FileFormatError(f"{path} is not a mask file of format {MASK_FORMAT} (a 'mask' key expected); {hint}")
        if "ops" in data and data["ops"] != [op.name for op in OPS]:
            raise FileFormatError(f"{path}: its 'ops' are not the search space's, {[op.name for op in OPS]}, "
                                  f"found {data['ops']!r:.120} (its columns would mean other ops); {hint}")
        arr = data["mask"]
    try:
        return validate_mask(arr, name=f"the mask in {path}")
    except ValueError as err:
        raise FileFormatError(f"{err}; {hint}") from None


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


#: Families of the random sandwich members (see the module docstring).
FAMILIES = ("single_op", "uniform_op", "bernoulli")

#: Range of the per-mask keep probability of the "bernoulli" family.
BERNOULLI_KEEP = (0.15, 0.7)

# ---- masks ---------------------------------------------------------------------------------------
def fastest_mask(ops_cost: np.ndarray, empty_cost: np.ndarray) -> np.ndarray:
    """The cheapest valid mask, uint8 (17, 5): per cell the cheaper of the empty cell and its
    cheapest op (ties go to the empty cell).

    Args:
        ops_cost: (17, 5) cost of each op (any unit: ms, MACs).
        empty_cost: (17,) cost of an empty cell in the same unit (0 for the identity, the fallback
            basic block's cost in a stage-opening cell).
    """
    ops_cost, empty_cost = np.asarray(ops_cost), np.asarray(empty_cost)
    if ops_cost.shape != MASK_SHAPE or empty_cost.shape != MASK_SHAPE[:1]:
        raise ValueError(f"ops_cost must be {MASK_SHAPE} and empty_cost ({MASK_SHAPE[0]},), "
                         f"got {ops_cost.shape} and {empty_cost.shape}")
    mask = np.zeros(MASK_SHAPE, dtype=np.uint8)
    cheapest = ops_cost.argmin(1)
    use_op = ops_cost.min(1) < empty_cost
    mask[np.flatnonzero(use_op), cheapest[use_op]] = 1
    return mask

def mac_costs(space: SearchSpace) -> tuple[np.ndarray, np.ndarray]:
    """(ops_cost (17, 5), empty_cost (17,)) in MACs at batch 1, for :func:`fastest_mask`."""
    ops = space.op_macs
    return ops, np.where(space.opens_stage, ops[:, FALLBACK_OP], 0)

def family_mask(rng: np.random.Generator, family: str) -> np.ndarray:
    """One random uint8 (17, 5) mask of ``family`` (one of :data:`FAMILIES`)."""
    if family == "single_op":
        return one_op_masks(rng, 1)[0]
    if family == "uniform_op":
        return single_op_mask(int(rng.integers(NUM_OPS)))
    if family == "bernoulli":
        return random_masks(rng, 1, float(rng.uniform(*BERNOULLI_KEEP)))[0]
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")

def sandwich_masks(rng: np.random.Generator, smallest: np.ndarray, n_random: int) -> list[np.ndarray]:
    """The networks of one sandwich step: ``[all ops, smallest, n_random random ones]``, uint8 (17, 5)
    each; every random one from a family drawn uniformly from :data:`FAMILIES`."""
    if n_random < 0:
        raise ValueError(f"n_random must be >= 0, got {n_random}")
    randoms = [family_mask(rng, FAMILIES[rng.integers(len(FAMILIES))]) for _ in range(n_random)]
    return [all_ops_mask(), validate_mask(smallest), *randoms]
