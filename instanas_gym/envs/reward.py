"""The InstaNAS reward: task correctness gates a latency reward from the LUT.

    R_T = +c if the image is classified right, else -c            (c = 10)
    R_A = max(0, (UB - L)(L - LB)) / ((UB - LB) / 2)^2            ("parabola", the default)
    R_A = 1 if L <= LB, 0 if L >= UB, ((UB - L) / (UB - LB))^2     ("monotone", an option)
    R   = R_T * R_A if right, else R_T

L is the LUT latency of the mask's 17 cells in ms (stem and head excluded, as in the paper's code).
The parabola is 1 at the midpoint of [LB, UB] and 0 at and beyond both bounds: it rewards a target
latency band, not speed at any price. LB defaults to the fastest mask's latency; UB anneals linearly
from 0.7 x (all-ops latency) to 0.5 x (MobileNetV2-path latency) over the search, or (``anneal=False``)
sits at its end value throughout.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from instanas_gym.latency.table import LatencyTable
from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask
from instanas_gym.utils.checks import check_number

RewardShape = Literal["parabola", "monotone"]
REWARD_SHAPES = ("parabola", "monotone")


@dataclass(frozen=True)
class RewardConfig:
    """The reward's settings, passed whole from the command line to the environment, the bandit and
    :class:`LatencyReward`. Latencies are the 17 cells' LUT latency in ms."""

    correct_reward: float = 10.0
    """The reward c of a right answer (a wrong one gets -c)."""
    shape: RewardShape = "parabola"
    """How the latency reward R_A falls off: "parabola" (the paper's, a band) or "monotone" (faster is better)."""
    lower_ms: float | None = None
    """Lower latency bound LB in ms; unset, the fastest mask's latency."""
    upper_ms: float | None = None
    """Upper latency bound UB in ms at the start; unset, upper_start_frac times the all-ops latency."""
    upper_start_frac: float = 0.7
    """Where the annealed UB starts, as a fraction of the all-ops latency (the paper's 0.7)."""
    upper_end_frac: float = 0.5
    """Where the annealed UB ends, as a fraction of the MobileNetV2 path's latency (the paper's 0.5)."""
    anneal: bool = True
    """Move UB from its start to its end over a search (the paper's schedule); with --no-anneal, UB
    stays at its end value, the bound a policy is judged by."""

    def __post_init__(self) -> None:
        if self.shape not in REWARD_SHAPES:
            raise ValueError(f"reward.shape must be one of {REWARD_SHAPES}, got {self.shape!r}")
        for name in ("correct_reward", "upper_start_frac", "upper_end_frac"):
            check_number(name, getattr(self, name), low=0, low_open=True)
        for name in ("lower_ms", "upper_ms"):
            check_number(name, getattr(self, name), low=0, optional=True)
        if self.lower_ms is not None and self.upper_ms is not None and self.lower_ms >= self.upper_ms:
            raise ValueError(f"lower_ms and upper_ms need lower < upper, got lower_ms={self.lower_ms} and "
                             f"upper_ms={self.upper_ms} (ms)")
        if not isinstance(self.anneal, (bool, np.bool_)):
            raise TypeError(f"reward anneal must be True or False, got {self.anneal!r}")

    @classmethod
    def coerce(cls, value: RewardConfig | dict[str, Any] | None) -> RewardConfig:
        """A RewardConfig from itself, a dict of its fields (as ``gymnasium.make`` kwargs) or None."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(cls.__dataclass_fields__))
            if unknown:
                raise TypeError(f"reward: unknown fields {unknown}; RewardConfig has {sorted(cls.__dataclass_fields__)}")
            return cls(**value)
        raise TypeError(f"reward must be a RewardConfig, a dict of its fields or None, got {type(value).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fastest_cells_ms(table: LatencyTable) -> float:
    """LUT latency (ms) of the fastest mask: per cell, the cheaper of its empty case and its cheapest op."""
    return float(np.minimum(table.empty_ms, table.ops_ms.min(axis=1)).sum())


class LatencyReward:
    """R = R_T * R_A if correct else R_T (see the module docstring).

    Args:
        table: the latency lookup table.
        config: the settings (see :class:`RewardConfig`); ``upper_start_ms`` and ``upper_end_ms``,
            where :meth:`anneal` starts and ends, follow from its fractions and the table.
    """

    def __init__(self, table: LatencyTable, config: RewardConfig | None = None) -> None:
        cfg = config or RewardConfig()
        self.config = cfg
        self.table = table
        self.correct_reward = float(cfg.correct_reward)
        self.shape = cfg.shape
        self.upper_start_ms = cfg.upper_start_frac * float(table.cells_ms(all_ops_mask()))
        self.upper_end_ms = cfg.upper_end_frac * float(table.cells_ms(mobilenetv2_mask()))
        if not cfg.anneal:
            self.upper_start_ms = self.upper_end_ms
        self.lower_ms, self.upper_ms = 0.0, 1.0
        self.set_bounds(fastest_cells_ms(table) if cfg.lower_ms is None else cfg.lower_ms,
                        self.upper_start_ms if cfg.upper_ms is None else cfg.upper_ms)

    def set_bounds(self, lower_ms: float | None = None, upper_ms: float | None = None) -> None:
        """Set LB and/or UB in ms (None keeps the current one); requires 0 <= LB < UB."""
        lower = self.lower_ms if lower_ms is None else float(lower_ms)
        upper = self.upper_ms if upper_ms is None else float(upper_ms)
        if not (math.isfinite(lower) and math.isfinite(upper) and 0 <= lower < upper):
            raise ValueError(f"latency bounds need 0 <= lower < upper, got lower={lower} ms, upper={upper} ms")
        self.lower_ms, self.upper_ms = lower, upper

    def anneal(self, progress: float) -> float:
        """Set UB for ``progress`` in [0, 1] of the search (linear from start to end); returns UB in ms."""
        if not math.isfinite(progress):
            raise ValueError(f"progress must be a finite number in [0, 1], got {progress}")
        progress = min(max(progress, 0.0), 1.0)
        upper = self.upper_start_ms + (self.upper_end_ms - self.upper_start_ms) * progress
        self.set_bounds(upper_ms=max(upper, self.lower_ms + 1e-6))
        return self.upper_ms

    def anneal_step(self, step: int, steps: int) -> float:
        """Set UB for training step ``step`` (0-based) of ``steps``: the one schedule every agent and
        the search use, linear from the start at step 0 to the end at the last step (a no-op when the
        reward does not anneal); returns UB in ms."""
        if not self.config.anneal:
            return self.upper_ms
        return self.anneal(step / max(1, steps - 1))

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

    def use_table(self, table: LatencyTable, scale: float) -> None:
        """Switch to ``table``, the current one scaled by ``scale`` (a calibration): every bound in ms
        scales with it, so R_A of every mask stays the same."""
        check_number("scale", scale, low=0, low_open=True)
        self.table = table
        self.upper_start_ms *= scale
        self.upper_end_ms *= scale
        self.lower_ms, self.upper_ms = self.lower_ms * scale, self.upper_ms * scale

    def constants(self) -> dict[str, float | str]:
        """The reward's constants, as they go into ``info``."""
        return {
            "reward_shape": self.shape,
            "correct_reward": self.correct_reward,
            "lower_ms": self.lower_ms,
            "upper_ms": self.upper_ms,
        }
