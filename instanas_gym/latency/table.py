"""The latency lookup table (LUT): per (cell, op) latency plus a fixed cost, for one device.

Predict: ``cells_ms(mask)`` is the latency of the 17 cells (the L of the reward, as in the paper's
code); ``network_ms(mask)`` adds the fixed cost (stem, head, classifier, the forward's own
overhead). Both take one mask (17, 5) or a batch (B, 17, 5). An empty cell: the identity costs
nothing; a stage-opening cell runs its basic block as the fallback, whose entry is the basic block's.

Files are JSON (format :data:`FORMAT`), schema-checked on load: shapes, entries in
[0, :data:`MAX_ENTRY_MS`] with at least one op costing something, metadata (a ``threads`` entry is a
positive integer); :meth:`LatencyTable.check` then checks the table against a search space.
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
from instanas_gym.utils.checks import available_cores
from instanas_gym.utils.files import FileFormatError, atomic_write_json, load_json
from instanas_gym.utils.paths import in_package

FORMAT = "instanas-latency-v1"
#: Metadata every table must carry, and must match the search space it is used with.
SPACE_KEYS = ("search_space_version", "width_mult", "input_size", "in_channels", "num_classes", "cell_merge")
#: Largest entry (ms) a table may hold: a thousand seconds per op is beyond any device, and keeps every
#: sum, difference and square of the reward finite.
MAX_ENTRY_MS = 1e6


def build_hint(path: Path) -> str:
    """How to build the table ``path`` names: ONNX Runtime's unless the name says otherwise."""
    backend, name = ("", "latency_onnxruntime.json") if "onnxruntime" in Path(path).name else \
        (" --backend torch", "latency.json")
    build = f"`instanas-gym build-latency-table --env.supernet CHECKPOINT{backend} --run.out FOLDER`"
    if in_package(path):  # the package's own file: restore it, never write there
        return f"reinstall instanas-gym to restore the bundled table, or build one with {build} and pass FOLDER/{name}"
    return f"build one with {build} (it writes FOLDER/{name}) and pass that file"


#: What to do about a table made for another supernet (it may be the package's own: never edit that).
OTHER_TABLE = ("measure a table for this supernet with `instanas-gym build-latency-table --env.supernet CHECKPOINT` "
               "and pass it as latency_table (--env.latency-table)")


@dataclass
class LatencyTable:
    """Per (cell, op) latency in ms at batch 1, plus the fixed cost, for one device and search space.

    ``ops_ms`` (17, 5): the cost of each op where it runs; ``fixed_ms``: stem, head, classifier and
    the forward's own overhead; ``opens_stage`` (17,): cells whose empty case runs the basic block;
    ``cell_ms`` (17,): what a cell costs on top of its ops wherever one runs (its residual add, the
    calls around it), ``merge_ms`` (17,): on top of that where two or more run (their mean). Tables
    fitted without the cell terms hold zeros there.
    """

    ops_ms: np.ndarray
    fixed_ms: float
    opens_stage: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    cell_ms: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CELLS))
    merge_ms: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CELLS))

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
        empty = ~m.any(-1)
        total = (m * self.ops_ms).sum(axis=(-2, -1)) + (empty * self.empty_ms).sum(-1)
        runs = ~empty | self.opens_stage  # an empty stage opener runs its fallback basic block
        total = total + (runs * self.cell_ms).sum(-1) + ((m.sum(-1) >= 2) * self.merge_ms).sum(-1)
        return float(total) if np.ndim(total) == 0 else total

    def network_ms(self, mask: np.ndarray) -> np.ndarray | float:
        """LUT latency (ms) of the whole network: the cells plus the fixed cost."""
        return self.cells_ms(mask) + self.fixed_ms

    @property
    def threads(self) -> int:
        """Threads to time anything compared with this table: those it was timed with
        (``meta["threads"]``, default 1), at most the cores this process may use."""
        return min(int(self.meta.get("threads", 1)), available_cores())

    # ---- persistence ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "ops_ms": np.round(self.ops_ms, 6).tolist(),
            "fixed_ms": round(float(self.fixed_ms), 6),
            "opens_stage": self.opens_stage.astype(bool).tolist(),
            "cell_ms": np.round(self.cell_ms, 6).tolist(),
            "merge_ms": np.round(self.merge_ms, 6).tolist(),
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
        if not np.isfinite(ops).all() or (ops < 0).any() or (ops > MAX_ENTRY_MS).any():
            raise FileFormatError(f"{source}: ops_ms must be finite, in [0, {MAX_ENTRY_MS:g}] ms")
        if not (ops > 0).any():
            raise FileFormatError(f"{source}: ops_ms are all 0: every architecture would cost the same, nothing to "
                                  "trade accuracy against")
        fixed = d["fixed_ms"]
        if isinstance(fixed, bool) or not isinstance(fixed, (int, float)) or not math.isfinite(fixed) \
                or not 0 <= fixed <= MAX_ENTRY_MS:
            raise FileFormatError(f"{source}: fixed_ms must be a finite number in [0, {MAX_ENTRY_MS:g}] (ms), "
                                  f"got {fixed!r:.80}")
        opens = _array(d["opens_stage"], source, "opens_stage", (NUM_CELLS,), bool)
        if not isinstance(d["meta"], dict) or not isinstance(d.get("validation", {}), dict):
            raise FileFormatError(f"{source}: meta and validation must be JSON objects")
        threads = d["meta"].get("threads", 1)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise FileFormatError(f"{source}: meta.threads (the threads it was timed with) must be an integer >= 1, "
                                  f"got {threads!r:.80}")
        cells = [_array(d.get(k, [0.0] * NUM_CELLS), source, k, (NUM_CELLS,), float) for k in ("cell_ms", "merge_ms")]
        if any(not np.isfinite(c).all() or (c < 0).any() or (c > MAX_ENTRY_MS).any() for c in cells):
            raise FileFormatError(f"{source}: cell_ms and merge_ms must be finite, in [0, {MAX_ENTRY_MS:g}] ms")
        return cls(ops, float(fixed), opens, d["meta"], d.get("validation", {}), *cells)

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
            raise FileFormatError(f"{source} does not match the supernet ({detail}); {OTHER_TABLE}")
        if not np.array_equal(self.opens_stage, space.opens_stage):
            raise FileFormatError(f"{source}: opens_stage does not match the search space's stage openers; "
                                  f"{OTHER_TABLE}")
        gpu_table = self.meta.get("device", "cpu") == "cuda"  # tables before device metadata describe the CPU
        here = {"device_name": here_gpu_name()} if gpu_table else {"cpu_model": cpu_model()}
        here["torch_version"] = torch_version()
        if not gpu_table and int(self.meta.get("threads", 1)) > available_cores():
            here["threads"] = available_cores()
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
