"""Commands that learn: ``train-reinforce VIEW``, ``search`` and ``compare``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Union

import tyro
from rich.console import Console

from instanas_gym.agents.config import ReinforceConfig, SearchConfig, preset
from instanas_gym.cli.parse import parse, reported
from instanas_gym.judge.config import CompareConfig

#: ``train-reinforce masks|family``: the view's measured defaults (:func:`~instanas_gym.agents.config.preset`).
ReinforceCommand = Union[  # noqa: UP007 (tyro reads the Union's members as subcommands)
    Annotated[ReinforceConfig, tyro.conf.subcommand("masks", default=preset("masks"),
                                                    description="The paper's controller: 85 bits per image.")],
    Annotated[ReinforceConfig, tyro.conf.subcommand("family", default=preset("family"),
                                                    description="One of a family's architectures per image.")],
]


def run_train_reinforce(argv: list[str], prog: str, description: str) -> None:
    cfg: ReinforceConfig = parse(ReinforceCommand, argv, prog, description)  # type: ignore[arg-type]
    from instanas_gym.agents.policy import load_policy
    from instanas_gym.agents.reinforce import train_reinforce
    from instanas_gym.judge.awareness import judge_policy, print_judgement

    console = Console()
    out = Path(cfg.run.out or "runs/reinforce")
    with reported(prog, ReinforceCommand, argv):
        train_reinforce(cfg, console)
        saved = load_policy(out / "policy.pt")
        with console.status("judging the greedy policy on the test split against the static frontier"):
            report = judge_policy(saved, cfg.env, out, cfg.run, cfg.judge_limit, own_limit=16)
    print_judgement(report, f"{cfg.env.env_id}: test split ({report['images']} images)", out, console)
    console.print(f"wrote {out / 'policy.pt'} (instanas-gym demo --controller {out / 'policy.pt'})")


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
