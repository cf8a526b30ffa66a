"""Commands that judge: ``evaluate`` (searches on the test split) and ``compute-outcomes``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from instanas_gym.cli.parse import parse, reported
from instanas_gym.envs.config import EnvConfig
from instanas_gym.space.data import DataConfig
from instanas_gym.utils.checks import check_int
from instanas_gym.utils.run import RunConfig


@dataclass(frozen=True)
class EvaluateConfig:
    """Settings of ``instanas-gym evaluate``: judge searches on the test split (table, Pareto plot,
    mask embedding, latency histogram, report.md in each folder; with several folders a family report)."""

    folders: tuple[str, ...]
    """Search output folders (``instanas-gym search --run.out``)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Where the test images are (default: where the search found its own)."""
    run: RunConfig = field(default_factory=RunConfig)
    """Threads and the device the networks run on for accuracy (the clock columns time the CPU);
    run.out: the folder of the family report of several folders (None: FIRST/../family)."""
    measure: int = 200
    """Test images whose masks are timed on the clock (0: none)."""
    limit: int | None = None
    """Evaluate the first N test images only (None: all)."""
    reference: tuple[str, ...] = ()
    """NAME=CHECKPOINT[,TABLE]: also judge the MobileNetV2 path of this supernet checkpoint (with its
    own latency table when its width differs), or the mask it was trained on alone."""
    instance_aware: bool = False
    """Also judge each searched policy against the static frontier of single architectures (gain,
    mutual information, oracle; instance_aware.json / .png and hardest_easiest.png in the folder)."""

    def __post_init__(self) -> None:
        if not self.folders:
            raise ValueError("folders: give at least one search folder (instanas-gym search --run.out FOLDER)")
        check_int("measure", self.measure, minimum=0)
        check_int("limit", self.limit, optional=True)
        parse_references(self.reference)


@dataclass(frozen=True)
class OutcomesConfig:
    """Settings of ``instanas-gym compute-outcomes``: the answers of the 18 probe architectures and a
    family's arms on a split, with each image's all-ops loss, stored beside the supernet
    (``<supernet>_outcomes_<split>.npz``); lookup mode and judging then read them."""

    env: EnvConfig = field(default_factory=lambda: EnvConfig(split="test"))
    """The supernet, latency table (which orders the probes), the family (env.family) and the split (env.split)."""
    run: RunConfig = field(default_factory=RunConfig)
    """Threads and device."""


def parse_references(specs: tuple[str, ...]) -> dict[str, tuple[str, str | None]]:
    """``NAME=CHECKPOINT[,TABLE]`` strings as {name: (checkpoint, table or None)}."""
    references = {}
    for spec in specs:
        name, sep, paths = spec.partition("=")
        checkpoint, _, table = paths.partition(",")
        if not sep or not name or not checkpoint:
            raise ValueError(f"reference takes NAME=CHECKPOINT[,TABLE], got {spec!r}")
        references[name] = (checkpoint, table or None)
    return references


def run_evaluate(argv: list[str], prog: str, description: str) -> None:
    cfg = parse(EvaluateConfig, argv, prog, description)
    import torch

    from instanas_gym.judge.awareness import summary_lines
    from instanas_gym.judge.search_report import evaluate_search, family_report, write_report
    from instanas_gym.utils.display import results_table

    console = Console()
    torch.set_num_threads(cfg.run.threads)
    evaluations = {}
    with reported(prog):
        for folder in cfg.folders:
            with console.status(f"evaluating {folder} on the test split"):
                ev = evaluate_search(folder, cfg.measure, cfg.limit, cfg.data.root, parse_references(cfg.reference),
                                     cfg.instance_aware, cfg.run.device)
            console.print(results_table(ev["results"], f"{folder}: test split ({len(ev['labels'])} images)"))
            if ev["instance_aware"] is not None:
                console.print("\n".join(summary_lines(ev["instance_aware"])), highlight=False)
            console.print(f"report: {write_report(folder, ev)}")
            evaluations[Path(folder).name] = ev
        if len(cfg.folders) > 1:
            out = cfg.run.out or str(Path(cfg.folders[0]).parent / "family")
            console.print(f"family report: {family_report(evaluations, out)}")


def run_compute_outcomes(argv: list[str], prog: str, description: str) -> None:
    cfg = parse(OutcomesConfig, argv, prog, description)
    import numpy as np

    from instanas_gym.agents.router_file import resolve_family
    from instanas_gym.space.family import probe_masks

    with reported(prog):
        bandit = cfg.env.bandit(cfg.env.train_split, cfg.run)
        family, source = resolve_family(cfg.env.family, cfg.env.dataset)
        probes = np.stack([mask for _, mask in probe_masks(bandit.table, seed=0)])
        store = bandit.outcome_store()
        store.get(np.concatenate([probes, family.masks]))
    Console().print(f"wrote {store.path}: the 18 probes and the {family.k} arms of {source} on the "
                    f"{bandit.num_images} images of the {bandit.split} split")
