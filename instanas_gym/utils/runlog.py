"""Logging a run: window means of per-step statistics, written as CSV rows (and TensorBoard scalars
when ``tensorboard`` is installed) and shown on a rich progress bar. Every training loop of the
project (supernet, REINFORCE, Stable-Baselines3, the search, the comparison) logs through this.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from instanas_gym.utils.files import atomic_write_text


def progress_bar(console: Console | None = None, disable: bool = False) -> Progress:
    """The project's progress display: description, bar, done/total, a ``stats`` field, elapsed, ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=disable,
    )


def window_means(window: list[dict[str, float]]) -> dict[str, float]:
    """The mean of every key over a window of per-step statistics (keys of the first step)."""
    return {k: float(np.mean([w[k] for w in window])) for k in window[0]}


class CsvLog:
    """Rows appended to a CSV file, flushed and fsynced row by row; the header is the first row's keys
    (later rows may omit keys). ``append=True`` continues an existing file (a resumed run)."""

    def __init__(self, path: str | os.PathLike, append: bool = False, fields: Iterable[str] | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fields: list[str] | None = list(fields) if fields is not None else None
        if append and self.path.is_file() and self.path.stat().st_size:
            with self.path.open(newline="") as f:
                self._fields = next(csv.reader(f), None) or self._fields
            self._file = self.path.open("a", newline="")
        else:
            self._file = self.path.open("w", newline="")
            if self._fields is not None:
                self._write_header()

    def _write_header(self) -> None:
        csv.writer(self._file).writerow(self._fields)

    def write(self, row: dict[str, Any]) -> None:
        if self._fields is None:
            self._fields = list(row)
            self._write_header()
        csv.DictWriter(self._file, fieldnames=self._fields, extrasaction="ignore").writerow(row)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


class RunLogger:
    """Per-step statistics -> window means every ``log_every`` steps -> CSV, TensorBoard, the bar.

    Args:
        out: folder of ``<name>.csv`` (and ``tb/`` for TensorBoard); None: no files.
        name: the CSV file's stem.
        step_key: the row key that counts progress (x axis of TensorBoard), e.g. ``"env_steps"``.
        describe: formats a row for the progress bar's ``stats`` field.
        progress, task: the rich progress display and task to update (optional).
        append: continue an existing CSV (a resumed run).
    """

    def __init__(
        self,
        out: str | os.PathLike | None,
        name: str = "log",
        step_key: str = "step",
        describe: Callable[[dict[str, Any]], str] | None = None,
        progress: Progress | None = None,
        task: Any = None,
        append: bool = False,
    ) -> None:
        self.step_key = step_key
        self.describe = describe
        self.progress, self.task = progress, task
        self.window: list[dict[str, float]] = []
        self.history: list[dict[str, Any]] = []
        self.csv = CsvLog(Path(out) / f"{name}.csv", append) if out is not None else None
        self._tb = None
        if out is not None and importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(Path(out) / "tb" / name))

    def add(self, stats: dict[str, float]) -> None:
        """One step's statistics."""
        self.window.append(stats)

    def flush(self, **fields: Any) -> dict[str, Any] | None:
        """Write the window's means as one row (``fields`` first: step counters, bounds, wall time),
        show it on the bar, start a new window; returns the row (None for an empty window)."""
        if not self.window:
            return None
        row = fields | window_means(self.window)
        self.window = []
        self.history.append(row)
        if self.csv is not None:
            self.csv.write(row)
        if self._tb is not None:
            for k, v in row.items():
                if k != self.step_key and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, row.get(self.step_key, len(self.history)))
        if self.progress is not None and self.describe is not None:
            self.progress.update(self.task, stats=self.describe(row))
        return row

    def close(self) -> None:
        if self.csv is not None:
            self.csv.close()
        if self._tb is not None:
            self._tb.close()


def write_csv(rows: list[dict[str, Any]], path: str | os.PathLike) -> None:
    """Write ``rows`` as one CSV file atomically (the header is every key, in order of appearance)."""
    if not rows:
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
