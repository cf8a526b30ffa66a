"""The latency lookup table (LUT): per (cell, op) latency plus a fixed cost, for one device.

Predict: ``cells_ms(mask)`` is the latency of the 17 cells (the L of the reward, as in the paper's
code); ``network_ms(mask)`` adds the fixed cost (stem, head, classifier, the forward's own
overhead). Both take one mask (17, 5) or a batch (B, 17, 5). An empty cell: the identity costs
nothing; a stage-opening cell runs its basic block as the fallback, whose entry is the basic block's.

Files are JSON (format :data:`FORMAT`), schema-checked on load: shapes, finite non-negative
entries, metadata; :meth:`LatencyTable.check` then checks the table against a search space.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instanas_gym.latency.machine import cpu_model, here_gpu_name, torch_version
from instanas_gym.space.search_space import FALLBACK_OP, MASK_SHAPE, NUM_CELLS, SEARCH_SPACE_VERSION, SearchSpace
from instanas_gym.utils.files import FileFormatError, atomic_write_json, load_json

FORMAT = "instanas-latency-v1"
#: Metadata every table must carry, and must match the search space it is used with.
SPACE_KEYS = ("search_space_version", "width_mult", "input_size", "in_channels", "num_classes", "cell_merge")


def build_hint(path: Path) -> str:
    """How to build the table ``path`` names: ONNX Runtime's unless the name says otherwise."""
    backend = "" if "onnxruntime" in Path(path).name else " --backend torch"
    return (f"build one with `instanas-gym build-latency-table --env.supernet CHECKPOINT{backend} "
            f"--run.out {Path(path).parent}`")


@dataclass
class LatencyTable:
    """Per (cell, op) latency in ms at batch 1, plus the fixed cost, for one device and search space.

    ``ops_ms`` (17, 5): the cost of each op where it runs; ``fixed_ms``: stem, head, classifier and
    the forward's own overhead; ``opens_stage`` (17,): cells whose empty case runs the basic block.
    """

    ops_ms: np.ndarray
    fixed_ms: float
    opens_stage: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)

    # ---- predict --------------------------------------------------------------------------------
    @property
    def empty_ms(self) -> np.ndarray:
        """(17,) cost of a cell with no op: 0 for the identity, the basic block for a stage opener."""
        return np.where(self.opens_stage, self.ops_ms[:, FALLBACK_OP], 0.0)

    def cells_ms(self, mask: np.ndarray) -> np.ndarray | float:
        """LUT latency (ms) of the 17 cells: float for one mask, (B,) array for a batch."""
        m = np.asarray(mask).astype(bool)
        if m.shape[-2:] != MASK_SHAPE:
            raise ValueError(f"mask must have shape {MASK_SHAPE} or (B, *{MASK_SHAPE}), got {m.shape}")
        total = (m * self.ops_ms).sum(axis=(-2, -1)) + (~m.any(-1) * self.empty_ms).sum(-1)
        return float(total) if np.ndim(total) == 0 else total

    def network_ms(self, mask: np.ndarray) -> np.ndarray | float:
        """LUT latency (ms) of the whole network: the cells plus the fixed cost."""
        return self.cells_ms(mask) + self.fixed_ms

    # ---- persistence ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "ops_ms": np.round(self.ops_ms, 6).tolist(),
            "fixed_ms": round(float(self.fixed_ms), 6),
            "opens_stage": self.opens_stage.astype(bool).tolist(),
            "meta": self.meta,
            "validation": self.validation,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the table as JSON, atomically."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "latency table") -> LatencyTable:
        """The table of a dict of :meth:`to_dict`; FileFormatError (naming ``source``) if it is not one."""
        if d.get("format") != FORMAT:
            raise FileFormatError(f"{source} is not a latency table (format {FORMAT!r} expected, found {d.get('format')!r})")
        missing = [k for k in ("ops_ms", "fixed_ms", "opens_stage", "meta") if k not in d]
        if missing:
            raise FileFormatError(f"{source} lacks {missing}")
        ops = _array(d["ops_ms"], source, "ops_ms", MASK_SHAPE, float)
        if not np.isfinite(ops).all() or (ops < 0).any():
            raise FileFormatError(f"{source}: ops_ms must be finite and >= 0 ms")
        fixed = d["fixed_ms"]
        if isinstance(fixed, bool) or not isinstance(fixed, (int, float)) or not math.isfinite(fixed) or fixed < 0:
            raise FileFormatError(f"{source}: fixed_ms must be a finite number >= 0 (ms), got {fixed!r}")
        opens = _array(d["opens_stage"], source, "opens_stage", (NUM_CELLS,), bool)
        if not isinstance(d["meta"], dict) or not isinstance(d.get("validation", {}), dict):
            raise FileFormatError(f"{source}: meta and validation must be JSON objects")
        return cls(ops, float(fixed), opens, d["meta"], d.get("validation", {}))

    @classmethod
    def load(cls, path: str | os.PathLike, space: SearchSpace | None = None) -> LatencyTable:
        """Read a JSON table; with ``space``, check it applies (see :meth:`check`)."""
        path = Path(path)
        table = cls.from_dict(load_json(path, "latency table", build_hint(path)), str(path))
        if space is not None:
            table.check(space, str(path))
        return table

    def check(self, space: SearchSpace, source: str = "latency table") -> None:
        """Error if the table was built for another search space; warning for another CPU (GPU, for
        a table of a CUDA device) or torch."""
        want = space.to_dict() | {"search_space_version": SEARCH_SPACE_VERSION}
        bad = {k: (self.meta.get(k), want[k]) for k in SPACE_KEYS if self.meta.get(k) != want[k]}
        if bad:
            detail = ", ".join(f"{k}: table {a!r} vs supernet {b!r}" for k, (a, b) in bad.items())
            raise FileFormatError(f"{source} does not match the supernet ({detail}); rebuild it")
        if not np.array_equal(self.opens_stage, space.opens_stage):
            raise FileFormatError(f"{source}: opens_stage does not match the search space's stage openers; rebuild it")
        gpu_table = self.meta.get("device", "cpu") == "cuda"  # tables before device metadata describe the CPU
        here = {"device_name": here_gpu_name()} if gpu_table else {"cpu_model": cpu_model()}
        here["torch_version"] = torch_version()
        other = {k: (self.meta.get(k), v) for k, v in here.items() if self.meta.get(k) != v}
        if other:
            detail = ", ".join(f"{k}: table {a!r} vs here {b!r}" for k, (a, b) in other.items())
            warnings.warn(f"{source} was measured elsewhere ({detail}); its ms may not hold here", stacklevel=2)


def _array(value: Any, source: str, key: str, shape: tuple[int, ...], kind: type) -> np.ndarray:
    """``value`` as a numpy array of ``shape``: floats, or JSON booleans for ``kind=bool``."""
    try:
        arr = np.asarray(value, dtype=object if kind is bool else np.float64)
    except (TypeError, ValueError) as err:
        raise FileFormatError(f"{source}: {key} must be numbers of shape {shape} ({err})") from None
    if arr.shape != shape:
        raise FileFormatError(f"{source}: {key} must have shape {shape}, got {arr.shape}")
    if kind is bool:
        if not all(isinstance(v, bool) for v in arr.flat):
            raise FileFormatError(f"{source}: {key} must hold true/false values")
        return arr.astype(bool)
    return arr
