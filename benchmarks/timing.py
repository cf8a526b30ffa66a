"""Shared timing helper of the benchmark scripts."""

from __future__ import annotations

import time
from collections.abc import Callable


def rate(fn: Callable[[], object], items_per_call: int, seconds: float) -> float:
    """Items per second of ``fn`` (called repeatedly for ``seconds`` after two warm-up calls)."""
    fn()
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n * items_per_call / (time.perf_counter() - start)
