"""Latency lookup table (LUT): built in place, predicted in bulk, validated against the clock.

Build (:func:`build_table`): whole forward passes of the supernet with dynamic execution at batch 1,
under random masks from sparse to dense, with a fixed thread count. Each op's time is taken *inside*
those passes (forward hooks around the op), so caches, allocator and thread pool are in the state a
real pass leaves them in; the entry of (cell, op) is the median over the passes that ran it. The stem
and the head-to-classifier span are hooked the same way. The same masks then run on the clock
without hooks. Per mask, clock minus everything hooked is fitted against the number of ops by least
squares (:func:`fit_overheads`): the intercept, held >= 0, is the forward's Python outside any module
and joins the hooked stem and head in the fixed cost; the slope (additions of op outputs, minus the
hooks' own overhead) is spread over the entries, so the LUT stays a plain sum that predicts the
hook-free clock.

An empty cell: the identity costs nothing beyond the fixed cost; a stage-opening cell runs its basic
block as the fallback, whose entry is the basic block's.

Predict: ``cells_ms(mask)`` is the latency of the 17 cells (the L of the reward, as in the paper's
code); ``network_ms(mask)`` adds the fixed cost. Both take one mask (17, 5) or a batch (B, 17, 5).

Validate (:func:`validate`): real wall-clock latency of random masks vs the prediction: Spearman rank
correlation, mean absolute percentage error, share within +-10%.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from rich.table import Table as RichTable

from .search_space import FALLBACK_OP, MASK_SHAPE, SEARCH_SPACE_VERSION, SearchSpace, mobilenetv2_mask, one_op_masks, random_masks, validate_mask
from .runtime import allocator, tune_allocator
from .supernet import Supernet

FORMAT = "instanas-latency-v1"
Progress = Callable[[int, int], None]  # (done, total)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_meta(space: SearchSpace, threads: int) -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_version": torch.__version__,
        "threads": threads,
        "allocator": allocator(),
        "batch_size": 1,
        "input_size": space.input_size,
        "in_channels": space.in_channels,
        "num_classes": space.num_classes,
        "width_mult": space.width_mult,
        "search_space_version": SEARCH_SPACE_VERSION,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


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
            validate_mask(m, batched=None)
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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        os.replace(tmp, path)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencyTable:
        if d.get("format") != FORMAT:
            raise ValueError(f"not a latency table of format {FORMAT}")
        ops = np.asarray(d["ops_ms"], dtype=np.float64)
        if ops.shape != MASK_SHAPE:
            raise ValueError(f"latency table must be {MASK_SHAPE}, got {ops.shape}")
        return cls(ops, float(d["fixed_ms"]), np.asarray(d["opens_stage"], bool), d.get("meta", {}), d.get("validation", {}))

    @classmethod
    def load(cls, path: str | os.PathLike, space: SearchSpace | None = None) -> LatencyTable:
        """Read a JSON table; with ``space``, check it applies (see :meth:`check`)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no latency table at {path}; build one with `python examples/build_latency_table.py "
                f"--supernet CHECKPOINT --out {path}`"
            )
        table = cls.from_dict(json.loads(path.read_text()))
        if space is not None:
            table.check(space)
        return table

    def check(self, space: SearchSpace) -> None:
        """Error if the table was built for another search space or width; warning for another CPU or torch."""
        want = {
            "search_space_version": SEARCH_SPACE_VERSION,
            "width_mult": space.width_mult,
            "input_size": space.input_size,
            "in_channels": space.in_channels,
        }
        bad = {k: (self.meta.get(k), v) for k, v in want.items() if self.meta.get(k) != v}
        if bad:
            detail = ", ".join(f"{k}: table {a!r} vs supernet {b!r}" for k, (a, b) in bad.items())
            raise ValueError(f"latency table does not match the supernet ({detail}); rebuild it")
        here = {"cpu_model": cpu_model(), "torch_version": torch.__version__}
        other = {k: (self.meta.get(k), v) for k, v in here.items() if self.meta.get(k) != v}
        if other:
            detail = ", ".join(f"{k}: table {a!r} vs here {b!r}" for k, (a, b) in other.items())
            warnings.warn(f"latency table was measured elsewhere ({detail}); its ms may not hold here", stacklevel=2)


# ---- measuring ----------------------------------------------------------------------------------
@contextmanager
def _threads(n: int) -> Iterator[None]:
    tune_allocator()
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _op_timer(model: Supernet, record: np.ndarray, fixed: np.ndarray) -> Iterator[None]:
    """Forward hooks that write the wall-clock seconds of the current pass into ``record`` (17, 5),
    one entry an op, and ``fixed`` (2,): the stem, and the head through the classifier."""
    starts: dict[object, float] = {}
    handles = []

    def span(first: torch.nn.Module, last: torch.nn.Module, out: np.ndarray, key: tuple[int, ...]) -> None:
        def pre(_m, _i) -> None:
            starts[key] = time.perf_counter()

        def post(_m, _i, _o) -> None:
            out[key] = time.perf_counter() - starts[key]

        handles.extend([first.register_forward_pre_hook(pre), last.register_forward_hook(post)])

    for c, cell in enumerate(model.cells):
        for j, op in enumerate(cell.ops):
            span(op, op, record, (c, j))
    span(model.stem, model.stem, fixed, (0,))
    span(model.head, model.classifier, fixed, (1,))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def fit_overheads(outside_ms: np.ndarray, n_ops: np.ndarray) -> tuple[float, float]:
    """Least-squares line ``outside_ms ~ intercept + slope * n_ops`` with ``intercept >= 0``.

    ``outside_ms`` (passes,): each pass's clock minus what its hooks timed; the slope (ms an op) is
    the additions of op outputs minus the hooks' own overhead, the intercept (ms) the forward's
    Python outside any module. A cost can't be negative: when noise tilts the free fit below zero,
    the intercept is held at 0 and the slope refitted (the constrained optimum lies on that bound).
    """
    slope, intercept = np.polyfit(n_ops, outside_ms, 1)
    if intercept < 0:
        slope, intercept = float(n_ops @ outside_ms / (n_ops @ n_ops)), 0.0
    return float(slope), float(intercept)


def spread_masks(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` masks from the MobileNetV2 path through single-op to dense Bernoulli masks (uint8)."""
    n_single = n // 5
    keep = np.linspace(0.05, 1.0, n - n_single - 1)
    dense = np.concatenate([random_masks(rng, 1, p) for p in keep])
    return np.concatenate([mobilenetv2_mask()[None], one_op_masks(rng, n_single), dense])


def _example_input(model: Supernet) -> torch.Tensor:
    s = model.space
    return torch.rand(1, s.in_channels, s.input_size, s.input_size)


@torch.inference_mode()
def wall_ms(model: Supernet, mask: np.ndarray, repeats: int = 15, x: torch.Tensor | None = None) -> float:
    """Median wall-clock ms of one batch-1 forward pass under ``mask`` (dynamic execution as set)."""
    x = _example_input(model) if x is None else x
    m = torch.from_numpy(np.asarray(mask, dtype=bool))
    return median_ms(lambda: model(x, m), repeats)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall-clock ms of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


@torch.inference_mode()
def build_table(
    model: Supernet,
    passes: int = 600,
    warmup: int = 50,
    threads: int = 1,
    seed: int = 0,
    progress: Progress | None = None,
) -> LatencyTable:
    """Measure the LUT in place: ``passes`` timed whole-network passes at batch 1 (see module doc)."""
    model = model.eval()
    mode = model.mode
    model.mode = "dynamic"
    rng = np.random.default_rng(seed)
    masks = spread_masks(rng, passes)
    eff = model.space.effective_mask(masks)
    x = _example_input(model)
    samples = np.full((passes, *MASK_SHAPE), np.nan)
    wall = np.zeros(passes)
    fixed_samples = np.zeros((passes, 2))
    record = np.full(MASK_SHAPE, np.nan)
    fixed = np.zeros(2)
    order = rng.permutation(passes)
    with _threads(threads):
        for i in range(warmup):
            model(x, torch.from_numpy(eff[i % passes]))
        with _op_timer(model, record, fixed):  # each op's time inside whole passes
            for done, i in enumerate(order):
                record[:] = np.nan
                model(x, torch.from_numpy(eff[i]))
                samples[i] = record
                fixed_samples[i] = fixed
                if progress is not None:
                    progress(done // 2 + 1, passes)
        for done, i in enumerate(order):  # the same masks on the clock, without hooks (median of 3)
            m = torch.from_numpy(eff[i])
            wall[i] = median_ms(lambda: model(x, m), 3) / 1e3
            if progress is not None:
                progress((passes + done) // 2 + 1, passes)
    model.mode = mode
    samples *= 1e3
    fixed_samples = fixed_samples.sum(1) * 1e3
    wall *= 1e3
    if not eff.any(axis=0).all():
        raise RuntimeError("some ops were never run while building the table; use more passes")
    ops_ms = np.nanmedian(np.where(eff, samples, np.nan), axis=0)
    # per mask, what the hooks miss or add: the forward's Python outside any module, plus a cost per
    # op run (the additions of op outputs, outside the hooks; the hooks' own overhead, inside: hence
    # the unhooked clock); see fit_overheads
    outside = wall - (eff * ops_ms).sum(axis=(1, 2)) - fixed_samples
    slope, python_ms = fit_overheads(outside, eff.sum(axis=(1, 2)).astype(float))
    ops_ms = np.maximum(ops_ms + slope, 0.0)
    modules_ms = float(np.median(fixed_samples))
    fixed_ms = modules_ms + python_ms
    meta = device_meta(model.space, threads) | {
        "passes": passes,
        "warmup": warmup,
        "method": "in-place",
        "fixed_modules_ms": modules_ms,
    }
    return LatencyTable(ops_ms, fixed_ms, model.space.opens_stage.copy(), meta)


@torch.inference_mode()
def build_isolated_table(model: Supernet, repeats: int = 30, threads: int = 1) -> LatencyTable:
    """The naive table of the paper's code: each op timed alone on a tensor of its input shape."""
    model = model.eval()
    ops_ms = np.zeros(MASK_SHAPE)
    s = model.space

    with _threads(threads):
        for c, cell in enumerate(model.cells):
            h = torch.rand(1, cell.spec.in_channels, cell.spec.in_size, cell.spec.in_size)
            for j, op in enumerate(cell.ops):
                ops_ms[c, j] = median_ms(lambda: op(h), repeats)
        x = _example_input(model)
        last = torch.rand(1, s.cells[-1].out_channels, s.final_size, s.final_size)
        fixed = median_ms(lambda: model.stem(model.preprocess(x)), repeats)
        fixed += median_ms(lambda: model.classifier(model.pool(model.head(last)).flatten(1)), repeats)
    meta = device_meta(s, threads) | {"repeats": repeats, "method": "isolated"}
    return LatencyTable(ops_ms, fixed, s.opens_stage.copy(), meta)


# ---- validating ---------------------------------------------------------------------------------
def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""

    def rank(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        _, inv, counts = np.unique(v, return_inverse=True, return_counts=True)
        return np.bincount(inv, weights=r)[inv] / counts[inv]

    ra, rb = rank(np.asarray(a, float)), rank(np.asarray(b, float))
    return float(np.corrcoef(ra, rb)[0, 1])


def compare(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """Spearman, MAPE (%) and share (%) of predictions within +-10% of the measurement."""
    rel = np.abs(predicted - measured) / measured
    return {
        "spearman": spearman(predicted, measured),
        "mape_pct": 100 * float(rel.mean()),
        "within_10pct": 100 * float((rel <= 0.10).mean()),
        "n_masks": int(len(measured)),
    }


@torch.inference_mode()
def measure_masks(
    model: Supernet, masks: np.ndarray, threads: int = 1, repeats: int = 15, progress: Progress | None = None
) -> np.ndarray:
    """Wall-clock ms (median of ``repeats``) of each mask's batch-1 dynamic forward pass."""
    model = model.eval()
    mode = model.mode
    model.mode = "dynamic"
    out = np.zeros(len(masks))
    x = _example_input(model)
    with _threads(threads):
        for i, m in enumerate(masks):
            out[i] = wall_ms(model, m, repeats, x)
            if progress is not None:
                progress(i + 1, len(masks))
    model.mode = mode
    return out


def validation_masks(space: SearchSpace, n_masks: int, seed: int) -> np.ndarray:
    """The effective masks :func:`validate` times for ``seed``."""
    return space.effective_mask(spread_masks(np.random.default_rng(seed), n_masks))


def validate(
    table: LatencyTable,
    model: Supernet,
    n_masks: int = 200,
    repeats: int = 15,
    seed: int = 1,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Compare the table's network latency with the clock on ``n_masks`` fresh random masks
    (:func:`spread_masks` drawn with ``seed``)."""
    masks = validation_masks(model.space, n_masks, seed)
    measured = measure_masks(model, masks, int(table.meta.get("threads", 1)), repeats, progress)
    predicted = np.asarray(table.network_ms(masks))
    return compare(predicted, measured) | {"predicted_ms": predicted.tolist(), "measured_ms": measured.tolist()}


def build_validated_table(
    model: Supernet,
    passes: int = 2000,
    threads: int = 1,
    n_masks: int = 200,
    repeats: int = 15,
    seed: int = 0,
    progress: Callable[[str, int], Progress] | None = None,
) -> tuple[LatencyTable, np.ndarray, dict[str, np.ndarray]]:
    """Build the in-place table twice (stability) and the isolated-op table, time ``n_masks`` fresh
    masks, and store the comparison in ``table.validation``.

    ``progress(name, total)`` returns a (done, total) callback per phase. Returns the table, the
    measured ms of the masks and the predictions ``{"in-place": ..., "isolated ops": ...}``.
    """
    bar = progress or (lambda name, total: None)
    table = build_table(model, passes, threads=threads, seed=seed, progress=bar("in-place table", passes))
    again = build_table(model, passes, threads=threads, seed=seed + 100, progress=bar("rebuild (stability)", passes))
    isolated = build_isolated_table(model, threads=threads)
    report = validate(table, model, n_masks, repeats, seed + 1, progress=bar("validation (clock)", n_masks))
    measured = np.asarray(report.pop("measured_ms"))
    masks = validation_masks(model.space, n_masks, seed + 1)  # the masks validate timed
    predicted = {"in-place": np.asarray(report.pop("predicted_ms")), "isolated ops": np.asarray(isolated.network_ms(masks))}
    table.validation = {
        "in_place": report,
        "isolated": compare(predicted["isolated ops"], measured),
        "rebuild_vs_first_mape_pct": compare(np.asarray(again.network_ms(masks)), predicted["in-place"])["mape_pct"],
        "rebuild_vs_first_max_entry_diff_pct": float(100 * np.max(np.abs(again.ops_ms - table.ops_ms) / table.ops_ms)),
        "repeats": repeats,
    }
    return table, measured, predicted


def validation_table(table: LatencyTable, title: str) -> RichTable:
    """The validation figures of both tables as a rich table."""
    report = RichTable(title=title)
    for col in ("table", "Spearman", "MAPE (%)", "within +-10% (%)"):
        report.add_column(col, justify="right")
    for name, key in (("in-place", "in_place"), ("isolated ops", "isolated")):
        v = table.validation[key]
        report.add_row(name, f"{v['spearman']:.3f}", f"{v['mape_pct']:.2f}", f"{v['within_10pct']:.1f}")
    return report
