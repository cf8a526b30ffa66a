"""Judging a cascade policy on the test split against the best static architectures near its latency.

The frontier it is judged against holds the 18 probe architectures, every architecture of its
family, and the best single architectures of a search over a pool of static masks
(:func:`~instanas_gym.space.family.static_pool`, scored on training images of the search split,
:func:`~instanas_gym.judge.pool.pool_frontier`): the vertices of that pool's frontier, each then scored on the test images.
A frontier of weak probes would flatter any policy.

Reported: accuracy, mean latency (the networks run plus the policy's own cost, by the latency table),
the gain over the frontier at that latency with a bootstrap 95% interval over the test images
(:func:`~instanas_gym.judge.frontier.bootstrap_gain`), the latency saved against the frontier at equal
accuracy and against the fastest single architecture within 0.2 points of the policy's accuracy,
how many images stop at each stage, overall and by difficulty quintile (the all-ops loss).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from instanas_gym.agents.cascade import CascadeActor, run_policy
from instanas_gym.envs.bandit import InstaNASBandit
from instanas_gym.envs.config import EnvConfig
from instanas_gym.judge.awareness import jsonable, print_clock
from instanas_gym.judge.evaluation import clock_ms, clock_report
from instanas_gym.judge.frontier import (
    bootstrap_gain,
    frontier_latency,
    gain_over_frontier,
    saved_against_best_single,
    static_frontier,
)
from instanas_gym.judge.information import difficulty_bins
from instanas_gym.judge.pool import POOL_IMAGES, POOL_SIZE, pool_frontier
from instanas_gym.space.family import ArchitectureFamily, probe_masks
from instanas_gym.utils.display import results_table
from instanas_gym.utils.files import atomic_write_json
from instanas_gym.utils.run import RunConfig


def references(test: InstaNASBandit, family: ArchitectureFamily, pool: tuple[list[str], np.ndarray]) -> dict[str, Any]:
    """The single architectures a cascade is judged against, each on the test images: ``names``,
    ``masks``, ``latency_ms`` (whole network, by the table), ``correct`` bool (R, N)."""
    named = probe_masks(test.table, seed=0) + list(zip(family.names, family.masks)) + list(zip(*pool))
    eff = test.model.space.effective_mask(np.stack([m for _, m in named])).astype(np.uint8)
    first = {}
    for (name, _), m in zip(named, eff):
        first.setdefault(m.tobytes(), name)
    masks = np.stack([np.frombuffer(k, np.uint8).reshape(17, 5) for k in first])
    outcomes = test.outcome_store().get(masks)
    return {"names": list(first.values()), "masks": masks, "correct": outcomes.correct,
            "latency_ms": np.asarray(test.table.network_ms(masks), dtype=np.float64)}


def judge_cascade(actor: CascadeActor, env: EnvConfig, family: ArchitectureFamily | None, controller_ms: float,
                  out: str | Path, what: str = "cascade", run: RunConfig | None = None,
                  limit: int | None = None, measure: int = 0) -> dict[str, Any]:
    """``actor`` (greedy) on ``env``'s test split in the cascade view of ``family`` (None: the default),
    its own cost ``controller_ms`` counted per image, judged as the module docstring says; writes
    ``out/cascade.json`` and returns the report. With ``measure`` > 0, ``clock`` compares the networks
    each of the first ``measure`` images ran, timed on the clock (each architecture once), with the table."""
    test_env = replace(env, split="test")
    size = test_env.bandit("test", run).num_images
    n = size if limit is None else min(limit, size)
    venv = test_env.make_cascade_vec(n, family, run, controller_ms=controller_ms, progress=False)
    test = venv.bandit
    res = run_policy(actor, venv, np.arange(n))
    pool = pool_frontier(env.bandit(env.train_split, run), POOL_SIZE, POOL_IMAGES)
    refs = references(test, venv.cascade.family, pool)
    report = _figures(res, refs, test.outcome_store().loss(n), env.stages, n)
    report |= {"policy": what, "controller_ms": controller_ms, "family": list(venv.cascade.family.names),
               "pool": {"size": POOL_SIZE, "images": POOL_IMAGES, "vertices": pool[0]}}
    if measure:
        arm_ms, m = clock_ms(test, venv.cascade.family.masks), min(measure, n)
        clock = float(np.mean([arm_ms[list(arms)].sum() for arms in res["arms"][:m]]))
        report["clock"] = clock_report(m, clock, float(res["network_ms"][:m].mean()))
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(out) / "cascade.json", jsonable({k: v for k, v in report.items() if k != "per_image"}))
    return report


def _figures(res: dict[str, Any], refs: dict[str, Any], loss: np.ndarray, stages: int, n: int) -> dict[str, Any]:
    correct, ms = res["correct"], res["network_ms"]
    refs_correct = refs["correct"][:, :n]
    refs_acc = refs_correct.mean(1)
    acc, lat = float(correct.mean()), float(ms.mean())
    frontier = static_frontier(refs["latency_ms"], refs_acc)
    best = saved_against_best_single(acc, lat, refs_acc, refs["latency_ms"])
    difficulty = difficulty_bins(loss)
    stop = np.array([[np.mean(res["stages"][difficulty == q] == s) for s in range(1, stages + 1)] for q in range(5)])
    return {
        "images": n, "accuracy": acc, "network_latency_ms": lat, "e2e_ms": lat,
        "gain": bootstrap_gain(correct, ms, refs_correct, refs["latency_ms"]) | {
            "latency_pct": float(gain_over_frontier(frontier, lat, acc)["latency_pct"])},
        "frontier_latency_at_accuracy_ms": float(frontier_latency(frontier, acc)),
        "best_single_within_0.2pt": best | {"name": None if best["index"] is None else refs["names"][best["index"]]},
        "stop_share": [float(np.mean(res["stages"] == s)) for s in range(1, stages + 1)],
        "stop_share_by_difficulty": stop.tolist(),
        "frontier": {"latency_ms": frontier[0], "accuracy": frontier[1]},
        "references": {"names": refs["names"], "latency_ms": refs["latency_ms"], "accuracy": refs_acc},
        "per_image": res,
    }


def print_cascade(report: dict[str, Any], title: str, console: Console) -> None:
    """The report's figures as a table and three lines."""
    g, best = report["gain"], report["best_single_within_0.2pt"]
    rows = {report["policy"]: {"accuracy": report["accuracy"], "e2e_ms": report["e2e_ms"], "gain_points": g["points"],
                               "gain_latency_pct": g["latency_pct"]}}
    if best["index"] is not None:
        rows[f"fastest single within 0.2 pt ({best['name']})"] = {"accuracy": best["accuracy"],
                                                                  "e2e_ms": best["latency_ms"]}
    console.print(results_table(rows, title))
    console.print(f"gain over the static frontier {g['points']:+.2f} points (95% interval {g['low']:+.2f} to "
                  f"{g['high']:+.2f}); {g['latency_pct']:+.1f}% latency at equal accuracy; "
                  f"{best['latency_pct']:+.1f}% against the fastest single architecture within 0.2 points")
    shares = ", ".join(f"stage {s + 1} {100 * v:.1f}%" for s, v in enumerate(report["stop_share"]))
    console.print(f"images stopping at each stage: {shares}; easiest fifth stop at stage 1 "
                  f"{100 * report['stop_share_by_difficulty'][0][0]:.1f}%, hardest fifth "
                  f"{100 * report['stop_share_by_difficulty'][4][0]:.1f}%")
    print_clock(report, console)
