"""Judge InstaNAS searches on the test split: a table, a Pareto plot, the masks' embedding, a latency
histogram and report.md in each folder, and a family report of several (``instanas-gym evaluate``
also judges the bundled router, reference networks and instance-awareness).

    python examples/evaluate_search.py --folders runs/search
    python examples/evaluate_search.py --folders runs/search_A runs/search_B --run.out runs/family
"""

from dataclasses import dataclass, field
from pathlib import Path

import torch
import tyro
from rich.console import Console

from instanas_gym.envs.config import JudgeConfig
from instanas_gym.judge.search_report import evaluate_search, family_report, write_report
from instanas_gym.space.data import DataConfig
from instanas_gym.utils.display import results_table
from instanas_gym.utils.run import RunConfig


@dataclass(frozen=True)
class Args:
    folders: tuple[str, ...]
    """Search folders to judge, each written by examples/search.py or instanas-gym search."""
    data: DataConfig = field(default_factory=DataConfig)
    """Where the test images are; unset, where each search found its own."""
    run: RunConfig = field(default_factory=RunConfig)
    """Threads, device, and the family report's folder (unset: "family" beside the first folder)."""
    judge: JudgeConfig = field(default_factory=lambda: JudgeConfig(measure=200))
    """How much of the test split is judged, and how many images are also timed on the clock."""


def main(args: Args) -> None:
    console = Console()
    torch.set_num_threads(args.run.threads)
    evaluations = {}
    for folder in args.folders:
        with console.status(f"judging {folder} on the test split"):
            ev = evaluate_search(folder, args.judge.measure, args.judge.limit, args.data.root, device=args.run.device)
        console.print(results_table(ev["results"], f"{folder}: test split ({len(ev['labels'])} images)"))
        console.print(f"report: {write_report(folder, ev)}")
        evaluations[Path(folder).name] = ev
    if len(evaluations) > 1:
        out = args.run.out or str(Path(args.folders[0]).parent / "family")
        console.print(f"family report: {family_report(evaluations, out)}")


if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__.split("\n\n")[0]))
