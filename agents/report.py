"""Result tables, as rich tables for the terminal and markdown for READMEs."""

from __future__ import annotations

from rich.table import Table

COLUMNS = (
    ("accuracy", "test acc (%)", "{:.2f}"),
    ("latency_ms", "LUT cells (ms)", "{:.3f}"),
    ("network_latency_ms", "LUT network (ms)", "{:.3f}"),
    ("measured_ms", "measured (ms)", "{:.3f}"),
    ("measured_b64_ms", "measured b64 (ms/img)", "{:.3f}"),
    ("macs", "MMACs", "{:.2f}"),
    ("ops_per_cell", "ops/cell", "{:.2f}"),
    ("distinct_masks", "masks used", "{:.0f}"),
    ("reward", "reward", "{:+.2f}"),
    ("wall_s", "train time (s)", "{:.0f}"),
)


def _cells(result: dict[str, float]) -> list[tuple[str, str]]:
    out = []
    for key, title, fmt in COLUMNS:
        if key in result:
            value = result[key] / 1e6 if key == "macs" else result[key]
            out.append((title, fmt.format(value)))
    return out


def results_table(results: dict[str, dict[str, float]], title: str) -> Table:
    """A rich table, one row per policy; columns for the metrics present."""
    table = Table(title=title)
    first = _cells(next(iter(results.values())))
    table.add_column("policy")
    for name, _ in first:
        table.add_column(name, justify="right")
    for policy, result in results.items():
        table.add_row(policy, *(v for _, v in _cells(result)))
    return table


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    """The same table in markdown."""
    first = _cells(next(iter(results.values())))
    lines = ["| policy | " + " | ".join(n for n, _ in first) + " |", "|---" * (len(first) + 1) + "|"]
    for policy, result in results.items():
        lines.append(f"| {policy} | " + " | ".join(v for _, v in _cells(result)) + " |")
    return "\n".join(lines)
