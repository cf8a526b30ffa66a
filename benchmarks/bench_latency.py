"""How well the latency tables predict the clock: in-place vs the naive isolated-op table.

    python benchmarks/bench_latency.py [--supernet PATH] [--threads 1] [--masks 200]
    python benchmarks/bench_latency.py --table instanas_gym/assets/latency_fashion_mnist.json  # check a table


Prints Spearman rank correlation, mean absolute percentage error and the share of masks within
+-10% of the measured wall-clock latency (batch 1, dynamic execution), for both tables side by
side, plus the in-place table's rebuild stability. Targets: Spearman >= 0.95, MAPE <= 5%, >= 90%
within +-10%. Writes the scatter plot to benchmarks/latency_scatter.png. With ``--table``, no table
is built: the given one is checked against the clock of this machine and code, as it stands.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from instanas_gym.judge.plots import latency_scatter
from instanas_gym.latency.table import LatencyTable
from instanas_gym.latency.validation import TableConfig, build_validated_table, validate
from instanas_gym.model.checkpoint import load_supernet
from instanas_gym.utils.display import validation_table
from instanas_gym.utils.paths import BUNDLED_SUPERNET


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--supernet", default=str(BUNDLED_SUPERNET))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--passes", type=int, default=2000)
    p.add_argument("--masks", type=int, default=200)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--seed", type=int, default=10)
    p.add_argument("--table", default=None, help="check this existing table instead of building one")
    a = p.parse_args()
    model, _ = load_supernet(a.supernet)
    if a.table is not None:
        table = LatencyTable.load(a.table, model.space)
        report = validate(table, model, a.masks, a.repeats, a.seed)
        Console().print(f"{a.table} vs the clock, {a.masks} masks, {table.meta.get('threads', 1)} thread(s), "
                        f"batch 1: Spearman {report['spearman']:.3f}, MAPE {report['mape_pct']:.2f}%, "
                        f"within +-10% {report['within_10pct']:.1f}%")
        return
    settings = TableConfig(passes=a.passes, repeats=a.repeats, timed_threads=a.threads, validate_masks=a.masks)
    table, measured, predicted = build_validated_table(model, settings, a.seed)
    console = Console()
    console.print(validation_table(table, f"LUT vs clock: {a.masks} masks, {a.threads} thread(s), batch 1"))
    console.print(f"rebuild vs first build: MAPE {table.validation['rebuild_vs_first_mape_pct']:.2f}%, "
                  f"largest entry change {table.validation['rebuild_vs_first_max_entry_diff_pct']:.1f}%")
    png = Path(__file__).parent / "latency_scatter.png"
    latency_scatter(measured, predicted, png, f"LUT vs clock ({a.masks} masks, {a.threads} thread(s))")
    console.print(f"scatter plot: {png}")


if __name__ == "__main__":
    main()
