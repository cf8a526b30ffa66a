"""An honest comparison: every agent, several seeds, the same env-step budget, judged on the test split.

Agents: REINFORCE (ours), SB3 PPO and A2C, a uniform-random policy and the fixed MobileNetV2 mask.
All learn (or just act) on the training split under the same latency-bound schedule; all are then
evaluated on every test image with the final bounds. Everything is seeded.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import instanas_gym  # noqa: F401
from instanas_gym.plots import curves_with_bands
from instanas_gym.search_space import mobilenetv2_mask

from .evaluation import Policy, controller_policy, evaluate_policy, fixed_policy, random_policy, bandit_on_test_split
from .reinforce import ReinforceConfig, train_reinforce
from .report import markdown_table
from .sb3 import sb3_policy, train_sb3

AGENTS = ("REINFORCE", "PPO", "A2C", "random", "MobileNetV2")
SUMMARY_KEYS = ("accuracy", "latency_ms", "network_latency_ms", "measured_ms", "reward", "ops_per_cell",
                "distinct_masks", "wall_s")


@dataclass
class CompareConfig:
    env_id: str = "InstaNAS-FashionMNIST-v0"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    agents: tuple[str, ...] = AGENTS
    seeds: tuple[int, ...] = (0, 1, 2)
    total_steps: int = 16_000
    num_envs: int = 32
    anneal_upper: bool = True
    reinforce_lr: float = 1e-3  # REINFORCE's Adam learning rate
    alpha: float = 0.8  # REINFORCE's encouragement bound
    measure: int = 100  # test images whose masks are timed on the clock
    eval_limit: int | None = None  # test images evaluated (None: all)
    threads: int = 2
    out: str = "runs/compare"


def run_fixed(policy: Policy, cfg: CompareConfig, seed: int) -> list[dict[str, float]]:
    """Step the training env with a non-learning policy for the budget, logging like the agents do."""
    venv = gym.make_vec(cfg.env_id, num_envs=cfg.num_envs, vectorization_mode="vector_entry_point", **cfg.env_kwargs)
    obs, _ = venv.reset(seed=seed)
    reward_fn = venv.unwrapped.bandit.reward
    updates = max(1, cfg.total_steps // cfg.num_envs)
    rows, window, start = [], [], time.perf_counter()
    log_every = max(1, updates // 50)
    for update in range(updates):
        if cfg.anneal_upper:
            reward_fn.anneal(update / max(1, updates - 1))
        obs, rewards, _, _, info = venv.step(policy(obs))
        window.append((rewards.mean(), info["final_info"]["correct"].mean(), info["final_info"]["latency_ms"].mean()))
        if (update + 1) % log_every == 0:
            r, acc, lat = np.mean(window, axis=0)
            rows.append({"env_steps": (update + 1) * cfg.num_envs, "reward": float(r), "accuracy": float(acc),
                         "latency_ms": float(lat), "wall_s": time.perf_counter() - start})
            window = []
    return rows


def run_agent(agent: str, seed: int, cfg: CompareConfig) -> tuple[list[dict[str, float]], Policy, float]:
    """Train (or run) one agent with one seed; returns its log rows, its policy and wall-clock seconds."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    out = Path(cfg.out) / f"{agent}_seed{seed}"
    if agent == "REINFORCE":
        rcfg = ReinforceConfig(env_id=cfg.env_id, env_kwargs=cfg.env_kwargs, total_steps=cfg.total_steps,
                               batch_size=cfg.num_envs, lr=cfg.reinforce_lr, alpha=cfg.alpha,
                               anneal_upper=cfg.anneal_upper, seed=seed,
                               threads=cfg.threads, out=str(out))
        controller, rows = train_reinforce(rcfg)
        policy = controller_policy(controller, rcfg.alpha)
    elif agent in ("PPO", "A2C"):
        model, rows = train_sb3(agent.lower(), cfg.env_id, cfg.env_kwargs, cfg.total_steps, cfg.num_envs, seed,
                                cfg.anneal_upper, out=out)
        policy = sb3_policy(model)
    elif agent == "random":
        rows = run_fixed(random_policy(seed), cfg, seed)
        policy = random_policy(seed + 1000)
    elif agent == "MobileNetV2":
        policy = fixed_policy(mobilenetv2_mask())
        rows = run_fixed(policy, cfg, seed)
    else:
        raise ValueError(f"unknown agent {agent!r}; expected one of {AGENTS}")
    return rows, policy, time.perf_counter() - start


def compare_agents(cfg: CompareConfig) -> dict[str, dict[str, float]]:
    """Run every agent x seed; write curves.csv, summary.csv, curves.png and summary.md to ``out``.

    Returns per agent the mean over seeds of the test metrics (and ``*_std``).
    """
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    bandit = bandit_on_test_split(cfg.env_id, cfg.env_kwargs)
    if cfg.anneal_upper:
        bandit.reward.anneal(1.0)  # judge every agent with the bounds the search ends on
    curves: dict[str, list[list[dict[str, float]]]] = {}
    finals: dict[str, list[dict[str, float]]] = {}
    for agent in cfg.agents:
        for seed in cfg.seeds:
            rows, policy, wall = run_agent(agent, seed, cfg)
            result = evaluate_policy(policy, bandit, measure=cfg.measure, limit=cfg.eval_limit)
            result["wall_s"] = wall
            curves.setdefault(agent, []).append(rows)
            finals.setdefault(agent, []).append(result)
    with open(out / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["agent", "seed", "env_steps", "reward"])
        for agent, runs in curves.items():
            for seed, rows in zip(cfg.seeds, runs):
                w.writerows([agent, seed, r["env_steps"], r["reward"]] for r in rows)
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        keys = [k for k in SUMMARY_KEYS if k in next(iter(finals.values()))[0]]
        w.writerow(["agent", "seed", *keys])
        for agent, results in finals.items():
            w.writerows([agent, seed, *(r[k] for k in keys)] for seed, r in zip(cfg.seeds, results))
    plot = {}
    for agent, runs in curves.items():
        n = min(len(r) for r in runs)
        plot[agent] = (np.array([r["env_steps"] for r in runs[0][:n]]), np.array([[r["reward"] for r in run[:n]] for run in runs]))
    curves_with_bands(plot, out / "curves.png", "env steps (images)", "mean reward (training split)",
                      f"{cfg.env_id}: reward during training"
                      + (" (latency bound annealed: later rewards are harder)" if cfg.anneal_upper else ""))
    summary: dict[str, dict[str, float]] = {}
    for agent, results in finals.items():
        summary[agent] = {k: float(np.mean([r[k] for r in results])) for k in results[0]}
        summary[agent] |= {f"{k}_std": float(np.std([r[k] for r in results])) for k in results[0]}
    (out / "summary.md").write_text(
        f"{cfg.env_id}, {len(cfg.seeds)} seeds, {cfg.total_steps} env steps each; test split; mean over seeds\n\n"
        + markdown_table(summary) + "\n"
    )
    return summary
