"""Measuring a latency table in place, and timing masks on the clock. Every time here is in ms.

Build (:func:`build_table`): whole forward passes of the supernet with dynamic execution at batch 1,
under masks from sparse to dense (:func:`~instanas_gym.space.masks.spread_masks`), with a fixed thread
count. Each op's time is taken *inside* those passes (forward hooks around the op), so caches,
allocator and thread pool are in the state a real pass leaves them in; the entry of (cell, op) is
the median over the passes that ran it. The stem and the head-to-classifier span are hooked the same
way. The same masks then run on the clock without hooks. Per mask, clock minus everything hooked is
fitted against the number of ops by least squares (:func:`fit_overheads`): the intercept, held >= 0,
is the forward's Python outside any module and joins the hooked stem and head in the fixed cost; the
slope (additions of op outputs, minus the hooks' own overhead) is spread over the entries, so the LUT
stays a plain sum that predicts the hook-free clock.

On a GPU (the model on a CUDA device) kernels run asynchronously: the clock is read with CUDA events
after a synchronisation (:func:`median_ms`), and the op hooks synchronise before reading the time,
so each entry is the op's GPU time, not its launch time. The table's metadata names the device.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from instanas_gym.latency.machine import device_meta
from instanas_gym.latency.table import LatencyTable
from instanas_gym.model.supernet import Supernet
from instanas_gym.space.masks import spread_masks
from instanas_gym.space.search_space import MASK_SHAPE
from instanas_gym.utils.checks import check_threads
from instanas_gym.utils.devices import CPU
from instanas_gym.utils.runtime import tune_allocator

Progress = Callable[[int, int], None]  # (done, total)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads (at most the cores this process may use) and the tuned
    allocator, then restore the count."""
    n = check_threads("threads", n)
    tune_allocator()
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def median_ms(fn: Callable[[], object], repeats: int, device: torch.device = CPU) -> float:
    """Median ms of ``fn()`` over ``repeats`` calls, after one warm-up call: wall clock on the CPU,
    CUDA events (the GPU's own time, from launch to completion) on a CUDA ``device``."""
    fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(repeats):
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
    else:
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def example_input(model: Supernet) -> torch.Tensor:
    """A random batch-1 image of the model's input shape, on the model's device."""
    s = model.space
    return torch.rand(1, s.in_channels, s.input_size, s.input_size, device=model.mean.device)


@torch.inference_mode()
def wall_ms(model: Supernet, mask: np.ndarray, repeats: int = 15, x: torch.Tensor | None = None) -> float:
    """Median wall-clock ms of one batch-1 forward pass under ``mask`` (the model's execution mode)."""
    x = example_input(model) if x is None else x
    m = torch.from_numpy(np.asarray(mask, dtype=bool))
    return median_ms(lambda: model(x, m), repeats, x.device)


@torch.inference_mode()
def measure_masks(
    model: Supernet, masks: np.ndarray, threads: int = 1, repeats: int = 15, progress: Progress | None = None
) -> np.ndarray:
    """Wall-clock ms (median of ``repeats``) of each mask's batch-1 dynamic forward pass."""
    model = model.eval()
    mode, model.mode = model.mode, "dynamic"
    out = np.zeros(len(masks))
    x = example_input(model)
    with torch_threads(threads):
        for i, m in enumerate(masks):
            out[i] = wall_ms(model, m, repeats, x)
            if progress is not None:
                progress(i + 1, len(masks))
    model.mode = mode
    return out


@contextmanager
def _op_timer(model: Supernet, record_ms: np.ndarray, fixed_ms: np.ndarray) -> Iterator[None]:
    """Forward hooks that write the wall-clock ms of the current pass into ``record_ms`` (17, 5), one
    entry an op, and ``fixed_ms`` (2,): the stem, and the head through the classifier."""
    starts: dict[object, float] = {}
    handles = []
    device = model.mean.device
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    def span(first: torch.nn.Module, last: torch.nn.Module, out: np.ndarray, key: tuple[int, ...]) -> None:
        def pre(_m, _i) -> None:
            sync()
            starts[key] = time.perf_counter()

        def post(_m, _i, _o) -> None:
            sync()
            out[key] = 1e3 * (time.perf_counter() - starts[key])

        handles.extend([first.register_forward_pre_hook(pre), last.register_forward_hook(post)])

    for c, cell in enumerate(model.cells):
        for j, op in enumerate(cell.ops):
            span(op, op, record_ms, (c, j))
    span(model.stem, model.stem, fixed_ms, (0,))
    span(model.head, model.classifier, fixed_ms, (1,))
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


@dataclass
class PassTimes:
    """What :func:`time_passes` measured, per pass: hooked op times (passes, 17, 5; NaN where the
    op did not run), hooked stem + head (passes,) and the hook-free clock (passes,), all in ms."""

    ops_ms: np.ndarray
    fixed_ms: np.ndarray
    wall_ms: np.ndarray


def time_passes(
    model: Supernet, masks: np.ndarray, warmup: int, rng: np.random.Generator, progress: Progress | None
) -> PassTimes:
    """Run every effective mask once with op hooks, then on the clock without them (median of 3),
    both in an order drawn from ``rng``."""
    passes = len(masks)
    x = example_input(model)
    ops = np.full((passes, *MASK_SHAPE), np.nan)
    fixed, wall = np.zeros(passes), np.zeros(passes)
    record, span = np.full(MASK_SHAPE, np.nan), np.zeros(2)
    order = rng.permutation(passes)
    for i in range(warmup):
        model(x, torch.from_numpy(masks[i % passes]))
    with _op_timer(model, record, span):
        for done, i in enumerate(order):
            record[:] = np.nan
            model(x, torch.from_numpy(masks[i]))
            ops[i], fixed[i] = record, span.sum()
            if progress is not None:
                progress(done // 2 + 1, passes)
    for done, i in enumerate(order):
        m = torch.from_numpy(masks[i])
        wall[i] = median_ms(lambda: model(x, m), 3, x.device)
        if progress is not None:
            progress((passes + done) // 2 + 1, passes)
    return PassTimes(ops, fixed, wall)


def fit_table(times: PassTimes, masks: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Entries (17, 5), fixed cost and its hooked part (ms) from the passes of :func:`time_passes`."""
    if not masks.any(axis=0).all():
        raise RuntimeError("some ops were never run while building the table; use more passes")
    ops_ms = np.nanmedian(np.where(masks, times.ops_ms, np.nan), axis=0)
    outside = times.wall_ms - (masks * ops_ms).sum(axis=(1, 2)) - times.fixed_ms
    slope, python_ms = fit_overheads(outside, masks.sum(axis=(1, 2)).astype(float))
    modules_ms = float(np.median(times.fixed_ms))
    return np.maximum(ops_ms + slope, 0.0), modules_ms + python_ms, modules_ms


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
    if passes < 2:
        raise ValueError(f"passes must be >= 2, got {passes}")
    model = model.eval()
    mode, model.mode = model.mode, "dynamic"
    rng = np.random.default_rng(seed)
    masks = model.space.effective_mask(spread_masks(rng, passes))
    try:
        with torch_threads(threads):
            times = time_passes(model, masks, warmup, rng, progress)
    finally:
        model.mode = mode
    ops_ms, fixed_ms, modules_ms = fit_table(times, masks)
    meta = device_meta(model.space, threads, model.mean.device) | {
        "passes": passes, "warmup": warmup, "method": "in-place", "fixed_modules_ms": modules_ms,
    }
    return LatencyTable(ops_ms, fixed_ms, model.space.opens_stage.copy(), meta)


@torch.inference_mode()
def build_isolated_table(model: Supernet, repeats: int = 30, threads: int = 1) -> LatencyTable:
    """The naive table of the paper's code: each op timed alone on a tensor of its input shape."""
    model = model.eval()
    ops_ms = np.zeros(MASK_SHAPE)
    s = model.space
    device = model.mean.device
    with torch_threads(threads):
        for c, cell in enumerate(model.cells):
            h = torch.rand(1, cell.spec.in_channels, cell.spec.in_size, cell.spec.in_size, device=device)
            for j, op in enumerate(cell.ops):
                ops_ms[c, j] = median_ms(lambda: op(h), repeats, device)
        x = example_input(model)
        last = torch.rand(1, s.cells[-1].out_channels, s.final_size, s.final_size, device=device)
        fixed = median_ms(lambda: model.stem(model.preprocess(x)), repeats, device)
        fixed += median_ms(lambda: model.classifier(model.pool(model.head(last)).flatten(1)), repeats, device)
    meta = device_meta(s, threads, device) | {"repeats": repeats, "method": "isolated"}
    return LatencyTable(ops_ms, fixed, s.opens_stage.copy(), meta)



