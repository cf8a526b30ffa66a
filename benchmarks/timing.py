"""Shared timing helpers of the benchmark scripts."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def rate(fn: Callable[[], object], items_per_call: int, seconds: float) -> float:
    """Items per second of ``fn`` (called repeatedly for ``seconds`` after two warm-up calls)."""
    fn()
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n * items_per_call / (time.perf_counter() - start)


def interleaved_rates(
    fns: dict[str, Callable[[], object]], items_per_call: int, seconds: float, rounds: int = 5
) -> dict[str, float]:
    """Median items/s of each function over ``rounds`` alternating rounds of ``seconds / rounds`` each.

    Alternating the contenders spreads slow phases of a shared machine over all of them, and the
    median drops a round that one of them happened to lose.
    """
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name].append(rate(fn, items_per_call, seconds / rounds))
    return {k: float(np.median(v)) for k, v in samples.items()}


def interleaved_steps(calls: dict[str, tuple[Callable[[], object], int]], seconds: float) -> dict[str, float]:
    """Steps/s of each ``name: (fn, steps per call)``: :func:`interleaved_rates` of the calls, times
    the steps each call makes (environments stepping ``num_envs`` images per call)."""
    rates = interleaved_rates({name: fn for name, (fn, _) in calls.items()}, 1, seconds)
    return {name: rates[name] * calls[name][1] for name in calls}
