"""Checking a latency table against the clock: Spearman rank correlation, mean absolute percentage
error and the share of masks predicted within +-10%, on fresh masks the table was not fitted on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from instanas_gym.latency.config import TableConfig as TableConfig  # its settings, re-exported
from instanas_gym.latency.measure import Progress, build_isolated_table, build_table, measure_masks
from instanas_gym.latency.table import LatencyTable
from instanas_gym.model.supernet import Supernet
from instanas_gym.space.masks import spread_masks
from instanas_gym.space.search_space import SearchSpace


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


def compare(predicted_ms: np.ndarray, measured_ms: np.ndarray) -> dict[str, float]:
    """Spearman, MAPE (%) and share (%) of predictions within +-10% of the measurement."""
    rel = np.abs(predicted_ms - measured_ms) / measured_ms
    return {
        "spearman": spearman(predicted_ms, measured_ms),
        "mape_pct": 100 * float(rel.mean()),
        "within_10pct": 100 * float((rel <= 0.10).mean()),
        "n_masks": len(measured_ms),
    }


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
    """Compare the table's network latency with the clock on ``n_masks`` fresh masks
    (:func:`~instanas_gym.space.masks.spread_masks` drawn with ``seed``)."""
    masks = validation_masks(model.space, n_masks, seed)
    measured = measure_masks(model, masks, table.threads, repeats, progress)
    predicted = np.asarray(table.network_ms(masks))
    return compare(predicted, measured) | {"predicted_ms": predicted.tolist(), "measured_ms": measured.tolist()}


def build_validated_table(
    model: Supernet, settings: TableConfig = TableConfig(), seed: int = 0,
    progress: Callable[[str, int], Progress | None] | None = None,
) -> tuple[LatencyTable, np.ndarray, dict[str, np.ndarray]]:
    """Build the eager PyTorch table in place twice (stability, ``settings.passes`` passes each) and the
    isolated-op table, time ``settings.validate_masks`` fresh masks ``settings.repeats`` times each, all on
    ``settings.timed_threads`` threads, and store the comparison in ``table.validation``.

    ``progress(name, total)`` returns a (done, total) callback per phase. Returns the table, the
    measured ms of the masks and the predictions ``{"in-place": ..., "isolated ops": ...}``.
    """
    passes, repeats, n_masks = settings.n_passes("torch"), settings.n_repeats("torch"), settings.validate_masks
    threads = settings.timed_threads
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
