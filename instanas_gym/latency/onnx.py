"""Latency tables for the deployed model: whole sub-networks timed in ONNX Runtime, fitted per
(cell, op) plus a fixed cost, and calibration of any table to the machine at hand. Times in ms.

Build (:func:`build_onnx_table`): ``passes`` masks from sparse to dense
(:func:`~instanas_gym.space.masks.spread_masks`) are each exported as a static graph holding only their
ops (:class:`~instanas_gym.model.subnetwork.SubNetwork`) and timed at batch 1 in ONNX Runtime (median
of ``repeats`` runs, fixed thread count, each run beside a reference graph's so that a drift of the
machine's speed cancels: :func:`measure_onnx_masks`). The table is the non-negative least-squares fit of those
whole-network times on which ops each network runs (the effective mask: fallbacks included) plus a
fixed cost, so its sums predict the runtime's clock. Unlike eager PyTorch, ONNX Runtime fuses
convolutions with their BatchNorm and activations and has no per-call Python, so its costs follow
the arithmetic much more closely.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from instanas_gym.latency.config import TableConfig
from instanas_gym.latency.machine import device_meta
from instanas_gym.latency.measure import Progress, median_ms, torch_threads
from instanas_gym.latency.table import LatencyTable
from instanas_gym.latency.validation import compare, validation_masks
from instanas_gym.model.subnetwork import SubNetwork, onnx_bytes
from instanas_gym.model.supernet import Supernet
from instanas_gym.space.masks import mobilenetv2_mask, spread_masks
from instanas_gym.space.search_space import MASK_SHAPE
from instanas_gym.utils.devices import cpu_copy
from instanas_gym.utils.runtime import session_options

RUNTIME = "onnxruntime"
#: Runs of a mask, and of the reference beside it, per block of :func:`measure_onnx_masks`.
BLOCK_RUNS = 5


def time_onnx_ms(graph: bytes, image_shape: tuple[int, int, int], threads: int = 1, repeats: int = 30) -> float:
    """Median wall-clock ms of one batch-1 run of an ONNX graph (uint8 images in) in ONNX Runtime."""
    feed = {"images": np.zeros((1, *image_shape), np.uint8)}
    session = _session(graph, threads, feed)
    return median_ms(lambda: session.run(None, feed), repeats)


def _session(graph: bytes, threads: int, feed: dict[str, np.ndarray]) -> ort.InferenceSession:
    """A session of ``graph``, run 3 times to warm it up."""
    session = ort.InferenceSession(graph, session_options(threads), providers=["CPUExecutionProvider"])
    for _ in range(3):
        session.run(None, feed)
    return session


def _block_ms(session: ort.InferenceSession, feed: dict[str, np.ndarray], runs: int) -> float:
    """Median ms of ``runs`` back-to-back runs of ``session`` (the first run after a switch of graph included)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(1e3 * (time.perf_counter() - start))
    return float(np.median(times))


def measure_onnx_masks(
    model: Supernet, masks: np.ndarray, threads: int = 1, repeats: int = 30, progress: Progress | None = None
) -> np.ndarray:
    """ONNX Runtime ms at batch 1 of each mask's exported sub-network, shape (len(masks),).

    The machine's speed drifts while masks are timed one after another (on a shared virtual machine
    by 20-40% within seconds), so each mask's ``repeats`` runs alternate, in blocks of
    :data:`BLOCK_RUNS`, with runs of a reference graph, the MobileNetV2 path: a mask's time is the
    median ratio of its blocks to the reference's blocks beside them, times the reference's median
    over the whole call. Masks timed in one call are so timed at one speed of the machine."""
    s = model.space
    shape = (s.input_size, s.input_size, s.in_channels)
    per_block = min(repeats, BLOCK_RUNS)
    blocks = -(-repeats // per_block)
    feed = {"images": np.zeros((1, *shape), np.uint8)}
    reference = _session(onnx_bytes(SubNetwork(model, mobilenetv2_mask()), shape), threads, feed)
    ratios, reference_ms = np.zeros(len(masks)), []
    for i, mask in enumerate(masks):
        session = _session(onnx_bytes(SubNetwork(model, mask), shape), threads, feed)
        pairs = [(_block_ms(reference, feed, per_block), _block_ms(session, feed, per_block)) for _ in range(blocks)]
        ref, own = np.array(pairs).T
        ratios[i] = float(np.median(own / ref))
        reference_ms.extend(ref)
        if progress is not None:
            progress(i + 1, len(masks))
    return ratios * float(np.median(reference_ms))


def fit_costs(masks: np.ndarray, measured_ms: np.ndarray,
              cell_terms: bool = False) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Non-negative least squares of ``measured_ms`` (N,) on the effective ``masks`` (N, 17, 5) plus an
    intercept: (per-op ms (17, 5), fixed ms, per-cell ms (17,), per-cell merge ms (17,)). With
    ``cell_terms`` the fit also has, per cell, a cost paid wherever the cell runs an op and one paid
    where it runs two or more (:class:`~instanas_gym.latency.table.LatencyTable`); else those are 0.
    Entries nothing informs get 0."""
    m = masks.astype(bool)
    parts = [m.reshape(len(m), -1).astype(float)]
    if cell_terms:
        parts += [m.any(-1).astype(float), (m.sum(-1) >= 2).astype(float)]
    x = np.concatenate([*parts, np.ones((len(m), 1))], axis=1)
    active = np.ones(x.shape[1], dtype=bool)
    coef = np.zeros(x.shape[1])
    for _ in range(x.shape[1]):  # active-set: drop the most negative coefficient, refit, until none is
        sol, *_ = np.linalg.lstsq(x[:, active], measured_ms, rcond=None)
        coef[:] = 0.0
        coef[active] = sol
        if (coef >= 0).all():
            break
        active[int(np.argmin(np.where(active, coef, np.inf)))] = False
    coef = np.maximum(coef, 0.0)
    ops, rest = coef[: m[0].size].reshape(MASK_SHAPE), coef[m[0].size : -1]
    cells, merges = (rest[: MASK_SHAPE[0]], rest[MASK_SHAPE[0] :]) if cell_terms else (np.zeros(17), np.zeros(17))
    return ops, float(coef[-1]), cells, merges


def build_onnx_table(model: Supernet, settings: TableConfig = TableConfig(), seed: int = 0,
                     progress: Progress | None = None, cell_terms: bool = True) -> LatencyTable:
    """Measure the deployment runtime's table (see module doc): ``settings.passes`` exported masks
    timed ``settings.repeats`` times each on ``settings.timed_threads`` threads, fitted (with per-cell
    terms unless ``cell_terms`` is False, :func:`fit_costs`)."""
    passes, repeats = settings.n_passes(RUNTIME), settings.n_repeats(RUNTIME)
    threads = settings.timed_threads
    entries = MASK_SHAPE[0] * MASK_SHAPE[1] + 1 + (2 * MASK_SHAPE[0] if cell_terms else 0)
    if passes < entries:
        raise ValueError(f"passes must be >= {entries} (one per entry and the fixed cost), got {passes}")
    masks = model.space.effective_mask(spread_masks(np.random.default_rng(seed), passes))
    measured = measure_onnx_masks(model.eval(), masks, threads, repeats, progress)
    ops_ms, fixed_ms, cell_ms, merge_ms = fit_costs(masks, measured, cell_terms)
    meta = device_meta(model.space, threads) | {
        "runtime": RUNTIME, "runtime_version": ort.__version__, "passes": passes, "repeats": repeats,
        "method": "whole-network fit" + (" with per-cell terms" if cell_terms else ""),
    }
    table = LatencyTable(ops_ms, fixed_ms, model.space.opens_stage.copy(), meta, {}, cell_ms, merge_ms)
    table.validation = {"fit": compare(np.asarray(table.network_ms(masks)), measured)}
    return table


def validate_onnx(table: LatencyTable, model: Supernet, n_masks: int = 100, seed: int = 1, repeats: int = 30,
                  progress: Progress | None = None) -> dict[str, Any]:
    """Spearman, MAPE and share within +-10% of the table against ONNX Runtime on fresh masks."""
    masks = validation_masks(model.space, n_masks, seed)
    measured = measure_onnx_masks(model, masks, table.threads, repeats, progress)
    return compare(np.asarray(table.network_ms(masks)), measured)


def module_latency_ms(
    module: torch.nn.Module, image_shape: tuple[int, int, int], output: str, runtime: str = "torch", threads: int = 1,
    repeats: int = 50,
) -> float:
    """Median ms of ``module`` (uint8 images (B, H, W, C) -> one tensor, named ``output`` in its
    graph) on one image (batch 1) in ``runtime``: "torch" (eager) or "onnxruntime" (its exported
    graph), with ``threads`` threads, on the CPU. What times every policy's network: a controller, a
    router with its routing rule, an SB3 actor."""
    module = cpu_copy(module)
    if runtime == "onnxruntime":
        return time_onnx_ms(onnx_bytes(module.eval(), image_shape, output), image_shape, threads, repeats)
    x = torch.zeros((1, *image_shape), dtype=torch.uint8)
    with torch.inference_mode(), torch_threads(threads):
        return median_ms(lambda: module(x), repeats)


def controller_latency_ms(
    controller: torch.nn.Module, image_shape: tuple[int, int, int], runtime: str = "torch", threads: int = 1, repeats: int = 50
) -> float:
    """Median ms of the controller on one image (batch 1) in ``runtime``: "torch" (eager) or
    "onnxruntime" (its exported graph), with ``threads`` threads, on the CPU."""
    return module_latency_ms(controller, image_shape, "mask_logits", runtime, threads, repeats)
