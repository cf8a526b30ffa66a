"""Argument checks at the public boundary: each raises ``TypeError`` (wrong kind) or ``ValueError``
(out of range) with a message that names the argument. Nothing here imports torch (the ONNX Runtime
engine uses these checks without it)."""

from __future__ import annotations

import math
import os
from typing import Any, Literal

import numpy as np


def check_int(name: str, value: Any, minimum: int = 1, optional: bool = False) -> int | None:
    """``value`` as an int >= ``minimum`` (Python or numpy integer, not bool); None allowed if ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer{' or None' if optional else ''}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> float | None:
    """``value`` as a finite float in the interval [low, high] (ends open where asked); None if ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number{' or None' if optional else ''}, got {value!r}")
    v = float(value)
    below = low is not None and (v <= low if low_open else v < low)
    above = high is not None and (v >= high if high_open else v > high)
    if not math.isfinite(v) or below or above:
        lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
        raise ValueError(f"{name} must be a finite number in {lo}, {hi}, got {value!r}")
    return v


def check_array(name: str, value: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    """``value`` as a numpy array of ``shape``; ValueError naming ``name`` and ``what`` it should be
    when it cannot be read as an array or has another shape."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError, OverflowError) as err:
        raise ValueError(f"{name} must be {what}; could not read it as one ({err})") from None
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape} ({what}), got {arr.shape}")
    return arr


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_threads(name: str, value: Any, optional: bool = False) -> int | None:
    """``value`` as a thread count in [1, the cores this process may use]; None allowed if ``optional``.
    More threads than cores only slow a job down, and a huge count makes OpenMP crash the process."""
    threads = check_int(name, value, optional=optional)
    cores = available_cores()
    if threads is not None and threads > cores:
        raise ValueError(f"{name} must be at most {cores} (the cores this machine gives the process), got {threads}")
    return threads


#: Arithmetic of forward passes: float32, or bfloat16 autocast.
Precision = Literal["fp32", "bf16"]
PRECISIONS = ("fp32", "bf16")
#: The devices a job can run on, as the errors list them.
DEVICE_NAMES = "'auto', 'cpu', 'cuda' or 'cuda:N'"


def check_precision(precision: str, name: str = "precision") -> Precision:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ValueError naming ``name``."""
    if precision not in PRECISIONS:
        raise ValueError(f"{name} must be one of {PRECISIONS}, got {precision!r}")
    return precision  # type: ignore[return-value]
