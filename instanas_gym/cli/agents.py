"""Commands that learn: ``train-reinforce VIEW``, ``search`` and ``compare``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Union

import tyro
from rich.console import Console

from instanas_gym.agents.config import ReinforceConfig, SearchConfig, preset
from instanas_gym.cli.parse import parse, reported
from instanas_gym.envs.config import EnvConfig, JudgeConfig
from instanas_gym.judge.config import CompareConfig
from instanas_gym.utils.checks import check_number
from instanas_gym.utils.run import RunConfig

#: ``train-reinforce masks|family``: the view's measured defaults (:func:`~instanas_gym.agents.config.preset`).
ReinforceCommand = Union[  # noqa: UP007 (tyro reads the Union's members as subcommands)
    Annotated[ReinforceConfig, tyro.conf.subcommand("masks", default=preset("masks"),
                                                    description="The paper's controller: 85 bits per image.")],
    Annotated[ReinforceConfig, tyro.conf.subcommand("family", default=preset("family"),
                                                    description="One of a family's architectures per image.")],
    Annotated[ReinforceConfig, tyro.conf.subcommand("cascade", default=preset("cascade"),
                                                    description="Architectures one after another until it stops.")],
]


def run_train_reinforce(argv: list[str], prog: str, description: str) -> None:
    cfg: ReinforceConfig = parse(ReinforceCommand, argv, prog, description)  # type: ignore[arg-type]
    from instanas_gym.agents.policy import load_policy
    from instanas_gym.agents.reinforce import train_reinforce
    from instanas_gym.judge.saved import judge_saved

    console = Console()
    out = Path(cfg.run.out or "runs/reinforce")
    with reported(prog, ReinforceCommand, argv):
        train_reinforce(cfg, console)
        judge_saved(load_policy(out / "policy.pt"), cfg.env, out, cfg.run, cfg.judge, console)
    console.print(f"wrote {out / 'policy.pt'} (instanas-gym demo --policy {out / 'policy.pt'})")


@dataclass(frozen=True)
class CascadeFitConfig:
    """Settings of ``instanas-gym fit-cascade``: the threshold cascade (no learning) of the family's
    architectures that is most accurate within a latency budget on the search split, then judged."""

    env: EnvConfig = field(default_factory=EnvConfig)
    """The environment: its training split chooses the rule, its test split judges it."""
    run: RunConfig = field(default_factory=lambda: RunConfig(out="runs/threshold_cascade"))
    """Threads, device and the output folder (policy.pt and cascade.json)."""
    budget_ms: float = 0.4
    """Mean milliseconds of the networks run per image on the training split, by the latency table."""
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    """How the fitted rule is judged on the test split."""

    def __post_init__(self) -> None:
        check_number("budget_ms", self.budget_ms, low=0, low_open=True)


def run_fit_cascade(argv: list[str], prog: str, description: str) -> None:
    cfg = parse(CascadeFitConfig, argv, prog, description)
    from instanas_gym.agents.cascade import fit_threshold_policy
    from instanas_gym.agents.policy import load_policy, save_policy
    from instanas_gym.agents.router_file import resolve_family
    from instanas_gym.judge.saved import judge_saved

    console = Console()
    out = Path(cfg.run.out or "runs/threshold_cascade")
    with reported(prog, CascadeFitConfig, argv):
        family = None if cfg.env.family is None else resolve_family(cfg.env.family, cfg.env.dataset)[0]
        cascade = cfg.env.make_cascade_vec(1, family, cfg.run).cascade
        policy, frontier = fit_threshold_policy(cascade.outcomes, cascade.network_ms, cascade.stages, cfg.budget_ms)
        console.print(f"{len(frontier)} threshold cascades on the Pareto set of the search split; within "
                      f"{cfg.budget_ms} ms: order {policy.rule.order}, thresholds "
                      f"{[round(t, 3) for t in policy.rule.thresholds]}")
        save_policy(out / "policy.pt", "cascade", policy, cascade.family, budget_ms=cfg.budget_ms)
        judge_saved(load_policy(out / "policy.pt"), cfg.env, out, cfg.run, cfg.judge, console)
    console.print(f"wrote {out / 'policy.pt'}")


def run_search(argv: list[str], prog: str, description: str) -> None:
    cfg = parse(SearchConfig, argv, prog, description)
    from instanas_gym.agents.search import search

    with reported(prog, SearchConfig, argv):
        out = search(cfg, Console())
    Console().print(f"search done: {out}/supernet.pt, {out}/policy.pt; "
                    f"judge it with `instanas-gym evaluate --folders {out}`")


def run_compare(argv: list[str], prog: str, description: str) -> None:
    cfg = parse(CompareConfig, argv, prog, description)
    from instanas_gym.judge.compare import NOTE, compare_agents
    from instanas_gym.utils.display import results_table

    console = Console()
    with reported(prog, CompareConfig, argv):
        summary = compare_agents(cfg)
    out = cfg.run.out
    console.print(results_table(summary, f"{cfg.env.env_id}: test split, mean over {len(cfg.seeds)} seeds"))
    console.print(NOTE, style="dim")
    console.print(f"wrote {out}/curves.csv, summary.csv, curves.png, summary.md")
