"""The InstaNAS reward: task correctness gates a latency reward from the LUT.

    R_T = +c if the image is classified right, else -c            (c = 10)
    R_A = max(0, (UB - L)(L - LB)) / ((UB - LB) / 2)^2            ("parabola", the default)
    R_A = 1 if L <= LB, 0 if L >= UB, ((UB - L) / (UB - LB))^2     ("monotone", an option)
    R   = R_T * R_A if right, else R_T

L is the LUT latency of the mask's 17 cells in ms (stem and head excluded, as in the paper's code).
The parabola is 1 at the midpoint of [LB, UB] and 0 at and beyond both bounds: it rewards a target
latency band, not speed at any price. LB defaults to the fastest mask's latency; UB anneals linearly
from 0.7 x (all-ops latency) to 0.5 x (MobileNetV2-path latency) over the search.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .latency import LatencyTable
from .search_space import all_ops_mask, mobilenetv2_mask

RewardShape = Literal["parabola", "monotone"]
REWARD_SHAPES = ("parabola", "monotone")


def fastest_cells_ms(table: LatencyTable) -> float:
    """LUT latency (ms) of the fastest mask: per cell, the cheaper of its empty case and its cheapest op."""
    return float(np.minimum(table.empty_ms, table.ops_ms.min(axis=1)).sum())


class LatencyReward:
    """R = R_T * R_A if correct else R_T (see the module docstring).

    Args:
        table: the latency lookup table.
        correct_reward: c, the magnitude of R_T.
        shape: ``"parabola"`` or ``"monotone"``.
        lower_ms: LB in ms; default the fastest mask's cell latency.
        upper_ms: UB in ms; default ``upper_start_ms``.
        upper_start_frac: ``upper_start_ms`` = this x the all-ops cell latency (0.7, the paper's).
        upper_end_frac: ``upper_end_ms``, where :meth:`anneal` ends, = this x the MobileNetV2-path cell
            latency (0.5, the paper's; other values give the searches of other latency targets).
    """

    def __init__(
        self,
        table: LatencyTable,
        correct_reward: float = 10.0,
        shape: RewardShape = "parabola",
        lower_ms: float | None = None,
        upper_ms: float | None = None,
        upper_start_frac: float = 0.7,
        upper_end_frac: float = 0.5,
    ) -> None:
        if shape not in REWARD_SHAPES:
            raise ValueError(f"reward shape must be one of {REWARD_SHAPES}, got {shape!r}")
        if correct_reward <= 0:
            raise ValueError(f"correct_reward must be > 0, got {correct_reward}")
        self.table = table
        self.correct_reward = float(correct_reward)
        self.shape = shape
        self.upper_start_ms = upper_start_frac * float(table.cells_ms(all_ops_mask()))
        self.upper_end_ms = upper_end_frac * float(table.cells_ms(mobilenetv2_mask()))
        self.lower_ms, self.upper_ms = 0.0, 1.0
        self.set_bounds(fastest_cells_ms(table) if lower_ms is None else lower_ms,
                        self.upper_start_ms if upper_ms is None else upper_ms)

    def set_bounds(self, lower_ms: float | None = None, upper_ms: float | None = None) -> None:
        """Set LB and/or UB in ms (None keeps the current one); requires 0 <= LB < UB."""
        lower = self.lower_ms if lower_ms is None else float(lower_ms)
        upper = self.upper_ms if upper_ms is None else float(upper_ms)
        if not 0 <= lower < upper:
            raise ValueError(f"latency bounds need 0 <= lower < upper, got lower={lower} ms, upper={upper} ms")
        self.lower_ms, self.upper_ms = lower, upper

    def anneal(self, progress: float) -> float:
        """Set UB for ``progress`` in [0, 1] of the search (linear from start to end); returns UB in ms."""
        progress = min(max(progress, 0.0), 1.0)
        upper = self.upper_start_ms + (self.upper_end_ms - self.upper_start_ms) * progress
        self.set_bounds(upper_ms=max(upper, self.lower_ms + 1e-6))
        return self.upper_ms

    def arch_reward(self, latency_ms: np.ndarray) -> np.ndarray:
        """R_A in [0, 1] for cell latencies L in ms."""
        lat = np.asarray(latency_ms, dtype=np.float64)
        lb, ub = self.lower_ms, self.upper_ms
        if self.shape == "parabola":
            return np.maximum(0.0, (ub - lat) * (lat - lb)) / ((ub - lb) / 2) ** 2
        return np.clip((ub - lat) / (ub - lb), 0.0, 1.0) ** 2

    def __call__(self, correct: np.ndarray, latency_ms: np.ndarray) -> dict[str, np.ndarray]:
        """Reward terms for a batch: ``reward``, ``reward_task`` (R_T) and ``reward_arch`` (R_A)."""
        correct = np.asarray(correct, dtype=bool)
        r_task = np.where(correct, self.correct_reward, -self.correct_reward)
        r_arch = self.arch_reward(latency_ms)
        return {"reward": np.where(correct, r_task * r_arch, r_task), "reward_task": r_task, "reward_arch": r_arch}

    def constants(self) -> dict[str, float | str]:
        """The reward's constants, as they go into ``info``."""
        return {
            "reward_shape": self.shape,
            "correct_reward": self.correct_reward,
            "lower_ms": self.lower_ms,
            "upper_ms": self.upper_ms,
        }
