"""Commands that judge: ``evaluate`` (searches on the test split) and ``compute-outcomes``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from instanas_gym.cli.parse import parse, reported
from instanas_gym.envs.config import EnvConfig, JudgeConfig
from instanas_gym.space.data import DataConfig
from instanas_gym.utils.run import RunConfig


@dataclass(frozen=True)
class EvaluateConfig:
    """Settings of ``instanas-gym evaluate``: the bundled router, or searches, judged on the test split."""

    folders: tuple[str, ...] | None = None
    """Search folders to judge, each written by instanas-gym search; unset, the bundled router is judged."""
    data: DataConfig = field(default_factory=DataConfig)
    """Where the test images are; unset, where each search found its own."""
    run: RunConfig = field(default_factory=RunConfig)
    """Threads, device and the output folder: the bundled router's report (unset: runs/evaluate), or the
    family report of several folders (unset: a folder "family" beside the first)."""
    judge: JudgeConfig = field(default_factory=lambda: JudgeConfig(measure=200))
    """How the router or each search is judged on the test split."""
    reference: tuple[str, ...] = ()
    """Searches: also judge the MobileNetV2 path of these supernets, each given as NAME=CHECKPOINT[,TABLE]."""
    instance_aware: bool = False
    """Searches: also judge each policy against the static frontier of single architectures."""

    def __post_init__(self) -> None:
        if self.folders is not None and not self.folders:
            raise ValueError("folders: give at least one search folder (written by `instanas-gym search --run.out "
                             "FOLDER`), or leave --folders out to judge the bundled router")
        for name in ("reference", "instance_aware"):
            if self.folders is None and getattr(self, name):
                raise ValueError(f"{name} judges searches: give their --folders too")
        parse_references(self.reference)


@dataclass(frozen=True)
class OutcomesConfig:
    """Settings of ``instanas-gym compute-outcomes``: the answers of the 18 probe architectures and a
    family's arms on a split, with each image's all-ops loss, stored beside the supernet
    (``<supernet>_outcomes_<split>.npz``); lookup mode and judging then read them."""

    env: EnvConfig = field(default_factory=lambda: EnvConfig(split="test"))
    """The supernet, its latency table (which orders the probes), the family and the split."""
    run: RunConfig = field(default_factory=RunConfig)
    """Threads and device of the supernet (the outcomes file goes beside the supernet)."""


def parse_references(specs: tuple[str, ...]) -> dict[str, tuple[str, str | None]]:
    """``NAME=CHECKPOINT[,TABLE]`` strings as {name: (checkpoint, table or None)}."""
    references = {}
    for spec in specs:
        name, sep, paths = spec.partition("=")
        checkpoint, _, table = paths.partition(",")
        if not sep or not name or not checkpoint:
            raise ValueError(f"reference takes NAME=CHECKPOINT[,TABLE], such as mine=runs/x/last.pt, got {spec!r}")
        references[name] = (checkpoint, table or None)
    return references


def run_evaluate(argv: list[str], prog: str, description: str) -> None:
    cfg = parse(EvaluateConfig, argv, prog, description)
    console = Console()
    with reported(prog, EvaluateConfig, argv):
        if cfg.folders is None:
            _evaluate_bundled(cfg, console)
        else:
            _evaluate_searches(cfg, console)


def _evaluate_bundled(cfg: EvaluateConfig, console: Console) -> None:
    """The bundled router judged on the test split against the static frontier."""
    from instanas_gym.agents.router_file import load_router
    from instanas_gym.judge.awareness import judge_policy, print_judgement
    from instanas_gym.utils.paths import BUNDLED_ROUTER

    out = cfg.run.out or "runs/evaluate"
    with console.status("judging the bundled router on the test split against the static frontier"):
        report = judge_policy(load_router(BUNDLED_ROUTER), EnvConfig(data=cfg.data), out, cfg.run, cfg.judge)
    print_judgement(report, f"the bundled router: test split ({report['images']} images)", out, console)
    console.print("judge a search instead with `instanas-gym evaluate --folders FOLDER`")


def _evaluate_searches(cfg: EvaluateConfig, console: Console) -> None:
    """Each search folder judged on the test split (a report in each), and a family report of several."""
    import torch

    from instanas_gym.judge.awareness import summary_lines
    from instanas_gym.judge.search_report import evaluate_search, family_report, write_report
    from instanas_gym.utils.display import results_table

    torch.set_num_threads(cfg.run.threads)
    evaluations = {}
    for folder in cfg.folders or ():
        with console.status(f"evaluating {folder} on the test split"):
            ev = evaluate_search(folder, cfg.judge.measure, cfg.judge.limit, cfg.data.root,
                                 parse_references(cfg.reference), cfg.instance_aware, cfg.run.device,
                                 cfg.judge.own_archs)
        console.print(results_table(ev["results"], f"{folder}: test split ({len(ev['labels'])} images)"))
        if ev["instance_aware"] is not None:
            console.print("\n".join(summary_lines(ev["instance_aware"])), highlight=False)
        console.print(f"report: {write_report(folder, ev)}")
        evaluations[Path(folder).name] = ev
    if len(evaluations) > 1:
        out = cfg.run.out or str(Path(cfg.folders[0]).parent / "family")
        console.print(f"family report: {family_report(evaluations, out)}")


def run_compute_outcomes(argv: list[str], prog: str, description: str) -> None:
    cfg = parse(OutcomesConfig, argv, prog, description)
    import numpy as np

    from instanas_gym.agents.router_file import resolve_family
    from instanas_gym.space.family import probe_masks

    with reported(prog, OutcomesConfig, argv):
        bandit = cfg.env.bandit(cfg.env.train_split, cfg.run)
        family, source = resolve_family(cfg.env.family, cfg.env.dataset)
        probes = np.stack([mask for _, mask in probe_masks(bandit.table, seed=0)])
        store = bandit.outcome_store()
        store.get(np.concatenate([probes, family.masks]))
    Console().print(f"wrote {store.path}: the 18 probes and the {family.k} arms of {source} on the "
                    f"{bandit.num_images} images of the {bandit.split} split")
