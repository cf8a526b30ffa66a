"""The static frontier a per-image policy must beat: the upper concave envelope of single
architectures in (latency, accuracy), what random per-image mixtures of them reach; the gain of a
policy over it (with a bootstrap interval), and the label-reading oracle.

Units: latency in ms, accuracy as a fraction (0-1); gains in percentage points and percent of latency.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Frontier = tuple[np.ndarray, np.ndarray]


# ---- the static frontier -------------------------------------------------------------------------

def _on_or_below_chord(lat: np.ndarray, acc: np.ndarray, a: int, b: int, c: int) -> bool:
    """Whether point ``b`` lies on or below the chord from ``a`` to ``c`` (latencies a < b < c)."""
    return (acc[b] - acc[a]) * (lat[c] - lat[a]) <= (acc[c] - acc[a]) * (lat[b] - lat[a])


def static_frontier(latency_ms: np.ndarray, accuracy: np.ndarray) -> Frontier:
    """The upper concave envelope of single architectures in (latency, accuracy).

    Every point on a segment between two vertices is reached in expectation by a random per-image
    mixture of the two architectures, so this envelope (not the Pareto staircase) is what a policy
    has to beat. Points dominated by a faster-or-equal and at-least-as-accurate one, and points on or
    below a chord between two others, are dropped.

    Args:
        latency_ms: (K,) latency of each architecture (ms).
        accuracy: (K,) accuracy of each architecture (fraction, 0-1).

    Returns:
        ``(latency_ms, accuracy)`` of the vertices, sorted by latency; accuracy strictly increases.
    """
    lat, acc = np.asarray(latency_ms, dtype=np.float64).ravel(), np.asarray(accuracy, dtype=np.float64).ravel()
    if lat.shape != acc.shape or not len(lat):
        raise ValueError(f"latency_ms and accuracy must be equal-length and non-empty, got {lat.shape}, {acc.shape}")
    if not (np.isfinite(lat).all() and np.isfinite(acc).all()):
        raise ValueError("latency_ms and accuracy must be finite")
    hull: list[int] = []
    best = -np.inf
    for i in np.lexsort((-acc, lat)):  # fastest first; at equal latency the most accurate first
        if acc[i] <= best:
            continue  # a faster (or as fast) architecture is at least as accurate
        best = acc[i]
        while len(hull) >= 2 and _on_or_below_chord(lat, acc, hull[-2], hull[-1], i):
            hull.pop()
        hull.append(int(i))
    return lat[hull], acc[hull]


def frontier_accuracy(frontier: Frontier, latency_ms: np.ndarray | float) -> np.ndarray | float:
    """Accuracy (fraction) of the frontier at ``latency_ms`` (ms): linear between vertices, the
    slowest vertex's beyond it (a slower budget can always run it), nan below the fastest vertex."""
    lat, acc = frontier
    out = np.interp(latency_ms, lat, acc, left=np.nan, right=acc[-1])
    return float(out) if np.ndim(out) == 0 else out


def frontier_latency(frontier: Frontier, accuracy: np.ndarray | float) -> np.ndarray | float:
    """The least latency (ms) at which the frontier reaches ``accuracy`` (fraction): the fastest
    vertex's for any accuracy up to its own, nan above the best vertex's accuracy."""
    lat, acc = frontier
    out = np.interp(accuracy, acc, lat, left=lat[0], right=np.nan)
    return float(out) if np.ndim(out) == 0 else out


def gain_over_frontier(
    frontier: Frontier, latency_ms: np.ndarray | float, accuracy: np.ndarray | float
) -> dict[str, Any]:
    """How far points (``latency_ms`` in ms, ``accuracy`` a fraction) lie above the frontier.

    Returns:
        ``points``: 100 x (accuracy - frontier accuracy at equal latency), percentage points (nan
        below the fastest vertex); ``latency_pct``: 100 x (frontier latency - latency) / frontier
        latency at equal accuracy, the percent of latency saved (nan above the best vertex's
        accuracy). Both positive above the frontier, about 0 on it, negative below.
    """
    at_latency = frontier_accuracy(frontier, latency_ms)
    at_accuracy = np.asarray(frontier_latency(frontier, accuracy))
    points = 100.0 * (np.asarray(accuracy) - at_latency)
    latency_pct = 100.0 * (at_accuracy - np.asarray(latency_ms)) / at_accuracy
    scalar = np.ndim(points) == 0 and np.ndim(latency_pct) == 0
    return {"points": float(points) if scalar else points, "latency_pct": float(latency_pct) if scalar else latency_pct}


# ---- the family of single architectures ----------------------------------------------------------

def oracle(correct: np.ndarray, latency_ms: np.ndarray) -> dict[str, Any]:
    """The label-reading upper bound over K architectures: per image the cheapest one that is right,
    the cheapest of all where none is.

    Args:
        correct: bool (K, N), whether architecture k classifies image n right.
        latency_ms: (K,) latency of each architecture (ms).

    Returns:
        ``accuracy`` (fraction), ``latency_ms`` (mean over the images, ms) and ``choice`` (int (N,),
        the architecture index per image).
    """
    correct, lat = np.asarray(correct, dtype=bool), np.asarray(latency_ms, dtype=np.float64)
    if correct.ndim != 2 or lat.shape != correct.shape[:1] or not len(lat):
        raise ValueError(f"correct must be (K, N) and latency_ms (K,) with K >= 1, got {correct.shape}, {lat.shape}")
    order = np.argsort(lat, kind="stable")
    right = correct[order]
    choice = order[right.argmax(0)]  # the first right one cheapest first; argmax is 0 (the cheapest) where none is
    return {"accuracy": float(right.any(0).mean()), "latency_ms": float(lat[choice].mean()), "choice": choice}


def bootstrap_gain(policy_correct: np.ndarray, policy_ms: np.ndarray, refs_correct: np.ndarray, refs_ms: np.ndarray,
                   rounds: int = 1000, seed: int = 0) -> dict[str, float]:
    """The gain over the static frontier at the policy's mean latency, with a bootstrap 95% interval
    over the images: each round resamples the N images with replacement and recomputes the policy's
    accuracy and mean latency and every reference's accuracy, hence the frontier.

    Args:
        policy_correct: bool (N,); policy_ms: (N,) each image's latency under the policy (ms).
        refs_correct: bool (R, N), each single architecture on each image; refs_ms: (R,) their latency (ms).

    Returns ``points`` (on all images), ``low`` and ``high`` (the 2.5 and 97.5 percentiles), in
    percentage points; nan where the policy is faster than every reference.
    """
    correct, ms = np.asarray(policy_correct, np.float64), np.asarray(policy_ms, np.float64)
    refs, refs_ms = np.asarray(refs_correct, np.float64), np.asarray(refs_ms, np.float64)
    n = len(correct)
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=rounds).astype(np.float64)
    acc, lat, ref_acc = counts @ correct / n, counts @ ms / n, counts @ refs.T / n
    gains = np.array([100 * (acc[r] - frontier_accuracy(static_frontier(refs_ms, ref_acc[r]), lat[r]))
                      for r in range(rounds)])
    point = 100 * (correct.mean() - frontier_accuracy(static_frontier(refs_ms, refs.mean(1)), ms.mean()))
    low, high = np.nanpercentile(gains, [2.5, 97.5]) if np.isfinite(gains).any() else (np.nan, np.nan)
    return {"points": float(point), "low": float(low), "high": float(high)}


def saved_against_best_single(accuracy: float, latency_ms: float, refs_accuracy: np.ndarray, refs_ms: np.ndarray,
                              within: float = 0.002) -> dict[str, Any]:
    """Latency saved against the fastest single architecture within ``within`` (a fraction: 0.002 =
    0.2 points) of the policy's accuracy or above: ``index`` (into the references, None when none
    is that accurate), its ``accuracy`` and ``latency_ms``, and ``latency_pct`` = 100 x (its latency -
    the policy's) / its latency."""
    acc, lat = np.asarray(refs_accuracy, np.float64), np.asarray(refs_ms, np.float64)
    ok = np.flatnonzero(np.isfinite(acc) & (acc >= accuracy - within))
    if not len(ok):
        return {"index": None, "accuracy": float("nan"), "latency_ms": float("nan"), "latency_pct": float("nan")}
    k = int(ok[np.argmin(lat[ok])])
    return {"index": k, "accuracy": float(acc[k]), "latency_ms": float(lat[k]),
            "latency_pct": float(100 * (lat[k] - latency_ms) / lat[k])}
