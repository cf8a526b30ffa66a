"""Judging a saved policy file on the test split, whatever its view: the frontier table of a
masks- or family-view policy (:mod:`instanas_gym.judge.awareness`), the cascade report of a
cascade-view one (:mod:`instanas_gym.judge.cascade`), printed and written beside the policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from instanas_gym.envs.config import EnvConfig, JudgeConfig
from instanas_gym.utils.run import RunConfig


def judge_saved(saved: Any, env: EnvConfig, out: str | Path, run: RunConfig, judge: JudgeConfig | None = None,
                console: Console | None = None) -> dict[str, Any]:
    """Judge ``saved`` (a :class:`~instanas_gym.agents.policy.SavedPolicy`) on ``env``'s test split as
    ``judge`` says (None: every image, none timed on the clock), its decision's cost counted; print the
    report and write it to ``out`` (``cascade.json``, or the frontier table's files); returns the report."""
    console, judge = console or Console(), judge or JudgeConfig()
    out = Path(out)
    title = f"{env.env_id}: test split"
    status = console.status("judging the greedy policy on the test split against the static frontier")
    if saved.view == "cascade":
        from instanas_gym.agents.cascade import decision_ms
        from instanas_gym.judge.cascade import judge_cascade, print_cascade

        with status:
            bandit = env.bandit("test", run)
            meta, shape = bandit.table.meta, bandit.data.spec.image_shape
            ms = decision_ms(saved.network, shape, meta.get("runtime", "torch"), int(meta.get("threads", 1)))
            report = judge_cascade(saved.actor(), env, saved.family, ms, out, f"cascade ({out.name})", run,
                                   judge.limit, judge.measure)
        print_cascade(report, f"{title} ({report['images']} images)", console)
        return report
    from instanas_gym.judge.awareness import judge_policy, print_judgement

    with status:
        report = judge_policy(saved, env, out, run, judge)
    print_judgement(report, f"{title} ({report['images']} images)", out, console)
    return report
