"""Calibrating a latency table to the machine at hand: time at most 20 masks here and scale the
table by the median ratio of those times to its predictions, so a table built
elsewhere, or on another day, predicts this machine's clock (the relative structure of a table
holds across machines of a kind; its absolute level moves). Works for any runtime: the caller
passes the function that times masks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from instanas_gym.latency.table import LatencyTable
from instanas_gym.latency.validation import compare


def calibrate(
    table: LatencyTable, measure: Callable[[np.ndarray], np.ndarray], space_masks: np.ndarray
) -> tuple[LatencyTable, dict[str, float]]:
    """Scale ``table`` to this machine: ``measure(masks)`` times ``space_masks`` (effective, at most
    20) here, and the table is multiplied by the median ratio of measured to predicted ms (robust to
    a mask or two timed while something else ran, and aimed at relative error). Returns the scaled table and ``{"scale", "mape_before_pct", "mape_after_pct"}``."""
    if not 1 <= len(space_masks) <= 20:
        raise ValueError(f"calibrate times 1 to 20 masks, got {len(space_masks)}")
    measured = np.asarray(measure(space_masks), dtype=float)
    predicted = np.asarray(table.network_ms(space_masks), dtype=float)
    scale = float(np.median(measured / predicted))
    scaled = LatencyTable(table.ops_ms * scale, table.fixed_ms * scale, table.opens_stage.copy(),
                          table.meta | {"calibration_scale": scale}, dict(table.validation),
                          table.cell_ms * scale, table.merge_ms * scale)
    before = compare(predicted, measured)["mape_pct"]
    after = compare(predicted * scale, measured)["mape_pct"]
    return scaled, {"scale": scale, "mape_before_pct": before, "mape_after_pct": after, "n_masks": len(measured)}
