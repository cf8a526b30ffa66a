"""How a latency table is measured (:class:`TableConfig`, nested in ``build-latency-table`` and
``prepare`` as ``--table.*``).

Light on purpose: the command line imports this module to parse its flags, so it imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from instanas_gym.space.search_space import NUM_CELLS, NUM_OPS
from instanas_gym.utils.checks import check_int, check_threads

#: Fewest exported masks an ONNX Runtime table is fitted on: one per op of every cell, two per cell (its
#: per-cell terms) and the fixed cost.
ONNX_MIN_PASSES = NUM_CELLS * NUM_OPS + 1 + 2 * NUM_CELLS
#: Masks timed for the fit, and timed runs per mask, when not given: per runtime.
DEFAULT_PASSES = {"onnxruntime": 300, "torch": 2000}
DEFAULT_REPEATS = {"onnxruntime": 30, "torch": 15}


@dataclass(frozen=True)
class TableConfig:
    """How a latency table is measured (``build-latency-table``, ``prepare``)."""

    passes: int | None = None
    """Masks timed for the fit; unset, 300 for ONNX Runtime (at least 120) and 2000 for torch."""
    repeats: int | None = None
    """Timed runs per mask, the median kept; unset, 30 for ONNX Runtime and 15 for torch."""
    timed_threads: int = 1
    """Threads the table is timed with; the environment's latency is that of this many."""
    validate_masks: int = 200
    """Fresh masks timed to check the finished table against the clock."""

    def __post_init__(self) -> None:
        check_int("table.passes", self.passes, optional=True)
        check_int("table.repeats", self.repeats, optional=True)
        check_threads("table.timed_threads", self.timed_threads)
        check_int("table.validate_masks", self.validate_masks)

    def check_backend(self, backend: str) -> None:
        """Refuse settings the ``backend``'s table cannot be measured with (a ValueError naming them)."""
        if backend == "onnxruntime" and self.passes is not None and self.passes < ONNX_MIN_PASSES:
            raise ValueError(f"table.passes must be >= {ONNX_MIN_PASSES} for an ONNX Runtime table (one mask per op "
                             f"of every cell, two per cell and the fixed cost), got {self.passes}")

    def n_passes(self, backend: str) -> int:
        return self.passes if self.passes is not None else DEFAULT_PASSES[backend]

    def n_repeats(self, backend: str) -> int:
        return self.repeats if self.repeats is not None else DEFAULT_REPEATS[backend]
