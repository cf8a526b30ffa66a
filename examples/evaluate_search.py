"""Judge InstaNAS searches on the test split: table, Pareto plot, mask embedding, latency histogram.

    python examples/evaluate_search.py runs/search                           # one search: runs/search/report.md
    python examples/evaluate_search.py runs/search_A runs/search_B runs/search_C --out runs/family
    python examples/evaluate_search.py runs/search --reference "fine-tuned alone=runs/mbv2_ft/last.pt"

For each folder: accuracy, latency-table latency and the clock (batch 1 and batch 64) of the
instance-aware model against the MobileNetV2 path and the other single architectures of the same
supernet, and the pre-trained supernet's MobileNetV2 path; report.md and PNGs go into the folder.
With several folders, OUT/family.md and OUT/pareto.png put the family on one plot.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.console import Console

from agents.report import results_table
from agents.search_report import evaluate_search, family_report, write_report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="search output folders (examples/search.py --out)")
    p.add_argument("--measure", type=int, default=200, help="test images whose masks are timed (0: no clock)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N test images only")
    p.add_argument("--data-root", default=None)
    p.add_argument("--threads", type=int, default=2, help="torch threads (the clock at batch 1 uses the table's)")
    p.add_argument("--out", default=None, help="folder of the family report (several folders)")
    p.add_argument("--reference", action="append", default=[], metavar="NAME=CHECKPOINT[,TABLE]",
                   help="also judge the MobileNetV2 path of this supernet checkpoint (with its own latency "
                        "table when its width differs); repeatable")
    a = p.parse_args()
    references = {}
    for spec in a.reference:
        name, sep, paths = spec.partition("=")
        if not sep or not name or not paths:
            p.error(f"--reference takes NAME=CHECKPOINT[,TABLE], got {spec!r}")
        checkpoint, _, table = paths.partition(",")
        references[name] = (checkpoint, table or None)
    torch.set_num_threads(a.threads)
    console = Console()
    evaluations = {}
    for folder in a.folders:
        with console.status(f"evaluating {folder} on the test split"):
            ev = evaluate_search(folder, a.measure, a.limit, a.data_root, references)
        console.print(results_table(ev["results"], f"{folder}: test split ({len(ev['labels'])} images)"))
        console.print(f"report: {write_report(folder, ev)}")
        evaluations[Path(folder).name] = ev
    if len(a.folders) > 1:
        out = a.out or str(Path(a.folders[0]).parent / "family")
        console.print(f"family report: {family_report(evaluations, out)}")


if __name__ == "__main__":
    main()
