"""Masks: which ops of the 17 cells run. Checks, reference architectures, conversions and files.

A mask is a 0/1 array of shape ``(17, 5)`` (one row per cell, one column per op, see
:mod:`instanas_gym.search_space`), or ``(B, 17, 5)`` for a batch. Random masks are drawn by
:mod:`instanas_gym.samplers`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from instanas_gym.files import FileFormatError, atomic_write_text, load_json
from instanas_gym.search_space import MASK_SHAPE, MOBILENETV2_OP, NUM_CELLS, NUM_OPS, OPS

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
    """The single-path architecture with op ``op`` (a column of :data:`~instanas_gym.search_space.OPS`) in every cell."""
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
    hint = "write one with instanas_gym.masks.save_mask"
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
        arr = data["mask"]
    try:
        return validate_mask(arr, name=f"the mask in {path}")
    except ValueError as err:
        raise FileFormatError(f"{err}; {hint}") from None
