"""Plots written as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def latency_scatter(
    measured_ms: Sequence[float],
    predicted: dict[str, Sequence[float]],
    path: str | os.PathLike,
    title: str = "latency table vs clock",
) -> None:
    """Predicted vs measured latency (ms) per table, with the identity line and the +-10% band."""
    measured = np.asarray(measured_ms)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    lo, hi = 0.9 * measured.min(), 1.1 * measured.max()
    for name, pred in predicted.items():
        ax.scatter(measured, pred, s=10, alpha=0.7, label=name)
        hi = max(hi, 1.05 * float(np.max(pred)))
        lo = min(lo, 0.95 * float(np.min(pred)))
    line = np.linspace(lo, hi, 50)
    ax.plot(line, line, "k-", lw=1, label="predicted = measured")
    ax.fill_between(line, 0.9 * line, 1.1 * line, color="grey", alpha=0.2, label="+-10%")
    ax.set_xlabel("measured wall-clock latency (ms, batch 1)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curves_with_bands(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    path: str | os.PathLike,
    xlabel: str,
    ylabel: str,
    title: str,
) -> None:
    """One line per name: x (n,) against y (seeds, n), mean with a min-max band over seeds."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (x, ys) in curves.items():
        ys = np.atleast_2d(ys)
        mean = ys.mean(0)
        (line,) = ax.plot(x, mean, label=f"{name} ({len(ys)} seeds)")
        if len(ys) > 1:
            ax.fill_between(x, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
