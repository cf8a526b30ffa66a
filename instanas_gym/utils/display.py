"""Result tables for the terminal (rich, legible at 80 columns: short headers and a legend) and for
markdown files. Accuracy is stored as a fraction everywhere in code and shown here as a percentage."""

from __future__ import annotations

import textwrap
from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

_NBSP = "\u00a0"

#: (key, short header, format, legend) of every metric a results table can show.
COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("accuracy", "acc %", "{:.2f}", "test accuracy"),
    ("latency_ms", "cells", "{:.3f}", "LUT latency of the 17 cells (ms)"),
    ("network_latency_ms", "LUT", "{:.3f}", "LUT latency of the whole network (ms)"),
    ("measured_ms", "clock", "{:.3f}", "measured latency at batch 1 (ms)"),
    ("measured_b64_ms", "b64", "{:.3f}", "measured ms per image at batch 64"),
    ("e2e_ms", "e2e", "{:.3f}", "end to end by the table: controller + whole network (ms)"),
    ("e2e_measured_ms", "e2e clk", "{:.3f}", "end to end by the clock, batch 1 (ms)"),
    ("macs", "MMAC", "{:.2f}", "multiply-accumulates per image (millions)"),
    ("ops_per_cell", "ops", "{:.2f}", "ops per cell"),
    ("distinct_masks", "archs", "{:.0f}", "distinct architectures used"),
    ("reward", "R", "{:+.2f}", "mean reward"),
    ("gain_points", "gain pt", "{:+.2f}", "accuracy above the static frontier at equal latency (points)"),
    ("gain_latency_pct", "gain L%", "{:+.1f}", "latency saved against the static frontier at equal accuracy (%)"),
    ("distinct_archs", "eff", "{:.0f}", "distinct effective architectures (the ops that run)"),
    ("archs_2pct", "eff 2%", "{:.0f}", "effective architectures serving at least 2% of the images"),
    ("top_share", "top %", "{:.1f}", "images the most used architecture serves (%)"),
    ("mi_class_bits", "MI cls", "{:.2f}", "mutual information of the architecture and the class (bits)"),
    ("mi_difficulty_bits", "MI dif", "{:.2f}", "mutual information of the architecture and the difficulty (bits)"),
    ("cmi_difficulty_class_bits", "MI dif|cls", "{:.2f}",
     "conditional mutual information of the architecture and the difficulty given the class (bits)"),
    ("wall_s", "time s", "{:.0f}", "training time (s)"),
)
PERCENT_KEYS = ("accuracy", "top_share")


def _value(key: str, value: float) -> float:
    if key == "macs":
        return value / 1e6
    return 100 * value if key in PERCENT_KEYS else value


def _present(results: dict[str, dict[str, float]]) -> list[tuple[str, str, str, str]]:
    """The columns of the metrics any row has."""
    return [c for c in COLUMNS if any(c[0] in r for r in results.values())]


def _cell(result: dict[str, float], key: str, fmt: str) -> str:
    """A formatted value, or "-" where this row has no such metric (e.g. no controller, no e2e)."""
    return fmt.format(_value(key, result[key])) if key in result else "-"


def results_table(results: dict[str, dict[str, float]], title: str, width: int = 80) -> Group:
    """Rich tables, one row per policy and a column per metric present, then a legend of the short
    headers. Metrics that would not fit in ``width`` columns go to a second table below the first,
    so the whole stays legible in an 80-column terminal."""
    cols = _present(results)
    cells = {p: [_cell(r, k, fmt) for k, _, fmt, _ in cols] for p, r in results.items()}
    name_width = max(11, *(len(word) for p in results for word in p.split()))
    chunks: list[list[int]] = [[]]
    used = name_width + 3  # the box's edge and the policy column's padding
    for i, (_, short, _, _) in enumerate(cols):
        col = max(len(short), *(len(v[i]) for v in cells.values())) + 2
        if chunks[-1] and used + col > width - 2:
            chunks.append([])
            used = name_width + 3
        chunks[-1].append(i)
        used += col
    tables = []
    for n, chunk in enumerate(chunks):
        table = Table(title=title if n == 0 else None, box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False)
        table.add_column("policy", min_width=name_width)
        for i in chunk:
            table.add_column(cols[i][1], justify="right", no_wrap=True)
        for policy, values in cells.items():
            table.add_row(policy, *(values[i] for i in chunk))
        tables.append(table)
    # wrapped here, never inside a short header ("time s"): its spaces are non-breaking while wrapping
    entries = "; ".join(f"{short.replace(' ', _NBSP)}: {text}" for _, short, _, text in cols)
    legend = Text(textwrap.fill(entries, width, break_long_words=False).replace(_NBSP, " "), style="dim")
    return Group(*tables, legend)


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    """The same table in markdown, with the legend's long names as headers."""
    cols = _present(results)
    lines = ["| policy | " + " | ".join(text for *_, text in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for policy, result in results.items():
        lines.append(f"| {policy} | " + " | ".join(_cell(result, k, fmt) for k, _, fmt, _ in cols) + " |")
    return "\n".join(lines)


def metrics_table(metrics: dict[str, float], title: str) -> Table:
    """Test accuracy of the supernet's reference architectures (``test_acc_*`` fractions) after training."""
    table = Table(title=title)
    table.add_column("architecture")
    table.add_column("top-1 accuracy", justify="right")
    names = {"mobilenetv2": "MobileNetV2 path", "all_ops": "all ops", "random": "random masks (p=0.5)",
             "fixed": "the fixed mask it trained", "teacher": "the teacher (trained alone)"}
    for key, name in names.items():
        if f"test_acc_{key}" in metrics:
            table.add_row(name, f"{100 * metrics[f'test_acc_{key}']:.2f}%")
    return table


def validation_table(validation: dict[str, Any], title: str) -> Table:
    """The clock check of a latency table (its ``validation`` dict) beside the isolated-op table's."""
    report = Table(title=title)
    for col in ("table", "Spearman", "MAPE %", "within 10% (%)"):
        report.add_column(col, justify="right")
    for name, key in (("in-place", "in_place"), ("isolated ops", "isolated")):
        v = validation[key]
        report.add_row(name, f"{v['spearman']:.3f}", f"{v['mape_pct']:.2f}", f"{v['within_10pct']:.1f}")
    return report
