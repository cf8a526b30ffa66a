"""Plots written as PNG files (matplotlib, no display needed). matplotlib comes with the ``plots``
extra (``pip install 'instanas-gym[plots]'``); without it every plot is skipped with a warning, and
whatever judges or measures goes on without its figures."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from instanas_gym.space.masks import mask_counts

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:  # the plots extra is not installed
    plt = None

#: What a plot says when matplotlib is missing.
NO_MATPLOTLIB = "matplotlib is not installed, so no plot is written (pip install 'instanas-gym[plots]')"


def _plot(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A plot that is skipped (returning None), with a warning, when matplotlib is not installed."""

    @functools.wraps(fn)
    def plot_or_skip(*args: Any, **kwargs: Any) -> Any:
        if plt is None:
            warnings.warn(NO_MATPLOTLIB, stacklevel=2)
            return None
        return fn(*args, **kwargs)

    return plot_or_skip


def _save(fig: plt.Figure, path: str | os.PathLike) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@_plot
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
    _save(fig, path)


@_plot
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
    _save(fig, path)


@_plot
def pareto_plot(
    points: dict[str, tuple[float, float]],
    path: str | os.PathLike,
    xlabel: str = "latency (ms)",
    title: str = "accuracy vs latency",
    highlight: Sequence[str] = (),
) -> None:
    """Accuracy (%) against latency (ms), one numbered point per name, the names in a legend beside
    the axes (labels on the points would collide); the names in ``highlight`` (e.g. the searched
    models) are drawn as stars and joined in latency order (their front)."""
    fig, ax = plt.subplots(figsize=(11, 5.5))
    stars, dots = plt.get_cmap("autumn"), plt.get_cmap("tab20")
    n_star = max(1, sum(n in highlight for n in points))
    i_star = i_dot = 0
    for number, (name, (lat, acc)) in enumerate(points.items(), start=1):
        if name in highlight:
            color, marker, size = stars(0.8 * i_star / n_star), "*", 160
            i_star += 1
        else:
            color, marker, size = dots(i_dot % dots.N), "o", 45
            i_dot += 1
        ax.scatter([lat], [acc], s=size, marker=marker, zorder=3, color=color, label=f"{number}: {name}")
        ax.annotate(str(number), (lat, acc), textcoords="offset points", xytext=(4, 3), fontsize=7)
    front = sorted(points[n] for n in highlight if n in points)
    if len(front) > 1:
        ax.plot(*zip(*front), color="tab:red", lw=1, alpha=0.6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _save(fig, path)


def embedding_2d(vectors: np.ndarray) -> tuple[np.ndarray, str]:
    """2-D embedding of row vectors: UMAP when ``umap-learn`` is installed, else PCA; returns
    (points (n, 2), method name)."""
    x = np.asarray(vectors, dtype=np.float64)
    try:
        import umap  # type: ignore[import-not-found]

        return umap.UMAP(n_components=2, random_state=0).fit_transform(x), "UMAP"
    except ImportError:
        centred = x - x.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return centred @ vt[:2].T, "PCA"


@_plot
def mask_embedding(
    masks: np.ndarray, labels: np.ndarray, class_names: Sequence[str], path: str | os.PathLike, title: str
) -> str:
    """The chosen masks (n, 17, 5) embedded in 2-D, coloured by class. Many masks coincide, so points
    are jittered by 0.05 (a bit flip moves a mask by about 1) and the title counts the distinct masks;
    the axes span at least 2 units, so one mask for every image shows as one blot, not a cloud."""
    flat = masks.reshape(len(masks), -1)
    distinct = len(mask_counts(masks)[1])
    points, method = embedding_2d(flat)
    points = points + np.random.default_rng(0).normal(0, 0.05, points.shape)
    fig, ax = plt.subplots(figsize=(7, 5.5))
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for c, name in enumerate(class_names):
        sel = labels == c
        if sel.any():
            ax.scatter(points[sel, 0], points[sel, 1], s=6, alpha=0.6, color=cmap(c % cmap.N), label=name)
    for axis, set_lim in ((0, ax.set_xlim), (1, ax.set_ylim)):
        lo, hi = points[:, axis].min(), points[:, axis].max()
        mid, half = (lo + hi) / 2, max((hi - lo) / 2 * 1.1, 1.0)
        set_lim(mid - half, mid + half)
    ax.set_title(f"{title}\n{distinct} distinct mask{'s' * (distinct != 1)} for {len(masks)} images ({method})")
    ax.set_xticks([])
    ax.set_yticks([])
    if len(class_names) <= 20:
        ax.legend(fontsize=7, markerscale=2, loc="best")
    _save(fig, path)
    return method


@_plot
def latency_histogram(
    per_image_ms: np.ndarray, references: dict[str, float], path: str | os.PathLike, title: str
) -> None:
    """Histogram of per-image latency (ms) with vertical lines at reference latencies."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(per_image_ms, bins=40, color="tab:blue", alpha=0.8)
    for i, (name, ms) in enumerate(references.items()):
        ax.axvline(ms, color=plt.get_cmap("tab10")(i + 1), ls="--", label=f"{name}: {ms:.2f} ms")
    ax.set_xlabel("latency per image (ms, latency table, whole network)")
    ax.set_ylabel("test images")
    ax.set_title(title)
    ax.legend(fontsize=8)
    _save(fig, path)


@_plot
def instance_aware_plot(report: dict, path: str | os.PathLike) -> None:
    """Accuracy (%) against latency (ms) of an instance-awareness report
    (``instanas_gym.judge.awareness.instance_awareness``): the family's single architectures,
    their static frontier (flat beyond its slowest vertex), the policy end to end and network only,
    and the label-reading oracle; the title states the policy's gain over the frontier."""
    front, oracle = report["frontier"], report["oracle"]
    f_ms, f_acc = np.asarray(front["latency_ms"]), 100 * np.asarray(front["accuracy"])
    acc = 100 * report["accuracy"]
    right = 1.03 * max(np.max(report["family_latency_ms"]), report["e2e_ms"], oracle["latency_ms"])
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.scatter(report["family_latency_ms"], 100 * np.asarray(report["family_accuracy"]), s=16, color="tab:grey",
               alpha=0.7, zorder=2, label=f"single architectures ({len(report['family_latency_ms'])})")
    (line,) = ax.plot(f_ms, f_acc, "-o", ms=3, color="tab:blue", zorder=3,
                      label="static frontier (random per-image mixtures)")
    ax.plot([f_ms[-1], max(right, f_ms[-1])], [f_acc[-1]] * 2, ":", color=line.get_color(), zorder=3)
    ax.scatter([report["e2e_ms"]], [acc], marker="*", s=240, color="tab:red", zorder=4,
               label=f"policy, end to end ({report['e2e_ms']:.3f} ms)")
    ax.scatter([report["network_ms"]], [acc], marker="*", s=240, facecolors="none", edgecolors="tab:red", zorder=4,
               label=f"policy, network only ({report['network_ms']:.3f} ms)")
    ax.scatter([oracle["latency_ms"]], [100 * oracle["accuracy"]], marker="^", s=90, color="tab:green", zorder=4,
               label="oracle (reads the labels)")
    points = report["gain"]["points"]
    gain = "below the frontier's fastest architecture" if np.isnan(points) else f"{points:+.2f} points"
    ax.set_title(f"policy vs static frontier at equal latency: {gain}\n{report['distinct_archs']} distinct "
                 f"architectures, {report['images']} images")
    ax.set_xlabel("latency (ms, latency table, batch 1)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    _save(fig, path)


@_plot
def hardest_easiest_plot(
    images: np.ndarray, difficulty: np.ndarray, arch_ids: np.ndarray, labels: np.ndarray, path: str | os.PathLike,
    n: int = 8,
) -> None:
    """The ``n`` easiest (top row) and ``n`` hardest (bottom row) images (uint8 (N, H, W, C)) by
    ``difficulty`` (N,) (a per-image loss: higher is harder), each titled with the architecture index
    ``arch_ids`` gave it and its class ``labels``."""
    order = np.argsort(np.asarray(difficulty), kind="stable")
    n = max(1, min(n, len(order)))
    rows = (("easiest", order[:n]), ("hardest", order[::-1][:n]))
    fig, axes = plt.subplots(2, n, figsize=(1.5 * n + 0.6, 3.9), squeeze=False)
    for r, (name, idx) in enumerate(rows):
        for c, i in enumerate(idx):
            ax = axes[r, c]
            image = images[i]
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"arch {int(arch_ids[i])}\nclass {int(labels[i])}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=9)
    _save(fig, path)
