"""Build a latency lookup table in place, validate it against the clock, and plot the check.

    python examples/build_latency_table.py --supernet runs/fmnist/last.pt --out runs/fmnist/latency.json

Writes the JSON table (with its validation figures) and a PNG scatter beside it: predicted vs
measured latency of random masks, with the +-10% band, for the in-place table and the naive
isolated-op table. Close other programs first: the table is a measurement of this machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from instanas_gym.checkpoint import BUNDLED_SUPERNET, load_supernet
from instanas_gym.latency import build_validated_table, validation_table
from instanas_gym.plots import latency_scatter


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--supernet", default=str(BUNDLED_SUPERNET), help="supernet checkpoint")
    p.add_argument("--out", required=True, help="JSON file to write (the PNG goes beside it)")
    p.add_argument("--passes", type=int, default=2000, help="timed whole-network passes per build")
    p.add_argument("--threads", type=int, default=1, help="torch threads while measuring")
    p.add_argument("--validate-masks", type=int, default=200, help="random masks timed for validation")
    p.add_argument("--repeats", type=int, default=15, help="timed runs per validation mask (median)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    console = Console()
    model, _ = load_supernet(a.supernet)
    out = Path(a.out)
    with Progress(console=console) as progress:

        def bar(name: str, total: int):
            task = progress.add_task(name, total=total)
            return lambda done, _total: progress.update(task, completed=done)

        table, measured, predicted = build_validated_table(
            model, a.passes, a.threads, a.validate_masks, a.repeats, a.seed, progress=bar
        )
    table.save(out)
    png = out.with_suffix(".png")
    latency_scatter(measured, predicted, png, f"LUT vs clock ({len(measured)} masks, {a.threads} thread(s))")
    console.print(validation_table(table, f"latency table {out}"))
    console.print(f"rebuild vs first: MAPE {table.validation['rebuild_vs_first_mape_pct']:.2f}% of predictions; "
                  f"fixed {table.fixed_ms:.3f} ms; wrote {out} and {png}")


if __name__ == "__main__":
    main()
