"""An honest comparison: every agent, several seeds, the same env-step budget, judged on the test split.

Agents: REINFORCE (ours), SB3 PPO and A2C, a uniform-random policy and the fixed MobileNetV2 mask.
All learn (or just act) on the training split under the same latency-bound schedule; all are then
evaluated on every test image with the final bounds. REINFORCE's controller is timed in the latency
table's runtime and counted end to end (``e2e_ms``, ``e2e_measured_ms``). Everything is seeded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from instanas_gym.bandit import InstaNASBandit
from instanas_gym.display import markdown_table
from instanas_gym.files import atomic_write_text
from instanas_gym.masks import mobilenetv2_mask
from instanas_gym.plots import curves_with_bands
from instanas_gym.runlog import RunLogger, write_csv

from ..envs.config import EnvConfig
from .controller import ControllerConfig
from .evaluation import Policy, controller_latency_ms, controller_policy, evaluate_policy, fixed_policy, random_policy
from .policy_gradient import PolicyGradientConfig
from .reinforce import ReinforceConfig, train_reinforce
from .sb3 import sb3_policy, train_sb3

Agent = Literal["REINFORCE", "PPO", "A2C", "random", "MobileNetV2"]
AGENTS: tuple[Agent, ...] = ("REINFORCE", "PPO", "A2C", "random", "MobileNetV2")
SUMMARY_KEYS = ("accuracy", "latency_ms", "network_latency_ms", "measured_ms", "controller_ms", "e2e_ms",
                "e2e_measured_ms", "reward", "ops_per_cell", "distinct_masks", "wall_s")


@dataclass(frozen=True)
class CompareConfig:
    """Arguments of :func:`compare_agents` (``instanas-gym compare`` exposes each as a flag)."""

    env: EnvConfig = field(default_factory=EnvConfig)
    """The environment every agent learns on (training split) and is judged on (test split)."""
    agents: tuple[Agent, ...] = AGENTS
    seeds: tuple[int, ...] = (0, 1, 2)
    total_steps: int = 16_000
    """Env steps per agent and seed."""
    num_envs: int = 32
    anneal_upper: bool = True
    pg: PolicyGradientConfig = field(default_factory=PolicyGradientConfig)
    """REINFORCE's update (its lr and alpha among them)."""
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    """REINFORCE's controller."""
    measure: int = 100
    """Test images whose masks are timed on the clock."""
    eval_limit: int | None = None
    """Test images evaluated (None: all)."""
    threads: int = 2
    out: str = "runs/compare"


def run_fixed(policy: Policy, cfg: CompareConfig, seed: int) -> list[dict[str, Any]]:
    """Step the training env with a non-learning policy for the budget, logging like the agents do."""
    venv = cfg.env.make_vec(cfg.num_envs)
    obs, _ = venv.reset(seed=seed)
    reward_fn = venv.unwrapped.bandit.reward
    updates = max(1, cfg.total_steps // cfg.num_envs)
    log, start = RunLogger(None, step_key="env_steps"), time.perf_counter()
    log_every = max(1, updates // 50)
    for update in range(updates):
        if cfg.anneal_upper:
            reward_fn.anneal(update / max(1, updates - 1))
        obs, rewards, _, _, info = venv.step(policy(obs))
        final = info["final_info"]
        log.add({"reward": float(rewards.mean()), "accuracy": float(final["correct"].mean()),
                 "latency_ms": float(final["latency_ms"].mean())})
        if (update + 1) % log_every == 0:
            log.flush(env_steps=(update + 1) * cfg.num_envs, wall_s=time.perf_counter() - start)
    return log.history


def run_agent(
    agent: str, seed: int, cfg: CompareConfig, judge: InstaNASBandit | None = None
) -> tuple[list[dict[str, Any]], Policy, float, float | None]:
    """Train (or run) one agent with one seed; returns its log rows, its policy, wall-clock seconds and,
    for REINFORCE with a ``judge`` bandit, its controller's ms at batch 1 in the runtime and thread
    count of the judge's latency table (None otherwise)."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    out = Path(cfg.out) / f"{agent}_seed{seed}"
    controller_ms = None
    if agent == "REINFORCE":
        rcfg = ReinforceConfig(env=cfg.env, pg=cfg.pg, controller=cfg.controller, total_steps=cfg.total_steps,
                               batch_size=cfg.num_envs, anneal_upper=cfg.anneal_upper, seed=seed,
                               threads=cfg.threads, out=str(out))
        controller, rows = train_reinforce(rcfg)
        policy = controller_policy(controller)
        wall = time.perf_counter() - start
        if judge is not None:
            meta = judge.table.meta
            controller_ms = controller_latency_ms(controller, judge.data.spec.image_shape,
                                                  meta.get("runtime", "torch"), int(meta.get("threads", 1)))
        return rows, policy, wall, controller_ms
    elif agent in ("PPO", "A2C"):
        model, rows = train_sb3(agent.lower(), cfg.env, cfg.total_steps, cfg.num_envs, seed, cfg.anneal_upper, out=out)
        policy = sb3_policy(model)
    elif agent == "random":
        rows = run_fixed(random_policy(seed), cfg, seed)
        policy = random_policy(seed + 1000)
    elif agent == "MobileNetV2":
        policy = fixed_policy(mobilenetv2_mask())
        rows = run_fixed(policy, cfg, seed)
    else:
        raise ValueError(f"unknown agent {agent!r}; expected one of {AGENTS}")
    return rows, policy, time.perf_counter() - start, controller_ms


def compare_agents(cfg: CompareConfig) -> dict[str, dict[str, float]]:
    """Run every agent x seed; write curves.csv, summary.csv, curves.png and summary.md to ``out``.

    Returns per agent the mean over seeds of the test metrics (and ``*_std``).
    """
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    bandit = cfg.env.bandit("test")
    if cfg.anneal_upper:
        bandit.reward.anneal(1.0)  # judge every agent with the bounds the search ends on
    curves: dict[str, list[list[dict[str, float]]]] = {}
    finals: dict[str, list[dict[str, float]]] = {}
    for agent in cfg.agents:
        for seed in cfg.seeds:
            rows, policy, wall, controller_ms = run_agent(agent, seed, cfg, bandit)
            result = evaluate_policy(policy, bandit, measure=cfg.measure, limit=cfg.eval_limit, controller_ms=controller_ms)
            result["wall_s"] = wall
            curves.setdefault(agent, []).append(rows)
            finals.setdefault(agent, []).append(result)
    write_csv([{"agent": agent, "seed": seed, "env_steps": r["env_steps"], "reward": r["reward"]}
               for agent, runs in curves.items() for seed, rows in zip(cfg.seeds, runs) for r in rows],
              out / "curves.csv")
    keys = [k for k in SUMMARY_KEYS if any(k in r for results in finals.values() for r in results)]
    write_csv([{"agent": agent, "seed": seed, **{k: r.get(k, "") for k in keys}}
               for agent, results in finals.items() for seed, r in zip(cfg.seeds, results)], out / "summary.csv")
    plot = {}
    for agent, runs in curves.items():
        n = min(len(r) for r in runs)
        plot[agent] = (np.array([r["env_steps"] for r in runs[0][:n]]), np.array([[r["reward"] for r in run[:n]] for run in runs]))
    curves_with_bands(plot, out / "curves.png", "env steps (images)", "mean reward (training split)",
                      f"{cfg.env.env_id}: reward during training"
                      + (" (latency bound annealed: later rewards are harder)" if cfg.anneal_upper else ""))
    summary: dict[str, dict[str, float]] = {}
    for agent, results in finals.items():
        summary[agent] = {k: float(np.mean([r[k] for r in results])) for k in results[0]}
        summary[agent] |= {f"{k}_std": float(np.std([r[k] for r in results])) for k in results[0]}
    atomic_write_text(
        out / "summary.md",
        f"{cfg.env.env_id}, {len(cfg.seeds)} seeds, {cfg.total_steps} env steps each; test split; mean over seeds\n\n"
        + markdown_table(summary) + "\n"
    )
    return summary
