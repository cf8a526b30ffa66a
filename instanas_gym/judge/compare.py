"""An honest comparison: every agent, several seeds, the same env-step budget, judged on the test split.

Agents, over the 85-bit masks: REINFORCE (ours), SB3 PPO and A2C, a uniform-random policy and the
fixed MobileNetV2 mask. Over a family of K architectures (``CompareConfig.family``; its ``Discrete(K)``
view, stepped in lookup mode by default): REINFORCE-family (a categorical controller), SB3 PPO-family
and A2C-family, VW-family (Vowpal Wabbit's contextual bandit), ``router`` (not RL: a supervised
router fitted to each arm's correctness on the training images of the budget, free from the lookup
outcomes, routing each image to the arm of highest expected env reward at the final bounds,
:func:`~instanas_gym.agents.router.expected_rewards`: E[R_k] = c (p_k (R_A(L_k) + 1) - 1)) and
``best-single`` (the arm of highest mean reward on those training images at the final bounds: what a
context-free bandit converges to). All learn (or just act) on the training split, ``total_steps``
images each (REINFORCE-family also rewards extra arms of the same images by lookup, its
leave-one-out baseline; the router makes ``router_epochs`` passes over its images), under the same
latency-bound schedule; all are then judged on the test split with the final bounds.

Two judgements per agent and seed: :func:`~instanas_gym.judge.evaluation.evaluate_policy` (accuracy,
latency, reward) and :func:`~instanas_gym.judge.awareness.instance_awareness` against the 18
probe architectures plus the policy's own (its ``judge.own_archs`` most used): the gain over the static
frontier at the end-to-end latency, distinct architectures, the most used one's share, and the mutual
information of the choice with the class and the difficulty. The probes' correctness (and that of
every architecture once scored) and the images' all-ops loss are computed once and shared, read from
and kept in the scores stored beside the supernet (:func:`~instanas_gym.judge.awareness.stored_scores`).
Controllers are timed at batch 1 in the latency table's runtime and counted end to end
(``controller_ms``, ``e2e_ms``): REINFORCE's and REINFORCE-family's networks, the router
(with its routing rule), and the actors of the SB3 policies; VW-family's decision (pooling, VW's
feature string and predictor) on the clock as it runs here, having no ONNX graph
(:func:`~instanas_gym.agents.vw.vw_latency_ms`). random, MobileNetV2 and best-single have no
controller. Everything is seeded.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium.vector import VectorEnv

from instanas_gym.agents.config import ReinforceConfig
from instanas_gym.agents.policy import Policy, arm_policy, controller_policy, fixed_policy, random_policy
from instanas_gym.agents.reinforce import train_reinforce
from instanas_gym.agents.router import Router, expected_reward_policy, router_latency_ms, train_router
from instanas_gym.agents.router_file import resolve_family
from instanas_gym.agents.sb3 import sb3_latency_ms, sb3_policy, train_sb3
from instanas_gym.agents.vw import train_vw, vw_latency_ms, vw_policy
from instanas_gym.envs.bandit import InstaNASBandit
from instanas_gym.envs.reward import LatencyReward
from instanas_gym.judge.awareness import instance_awareness
from instanas_gym.judge.cascade import judge_cascade
from instanas_gym.judge.cascade_agents import CASCADE_AGENTS, run_cascade_agent
from instanas_gym.judge.config import AGENTS, FAMILY_AGENTS, CompareConfig
from instanas_gym.judge.evaluation import evaluate_policy
from instanas_gym.judge.plots import curves_with_bands
from instanas_gym.judge.stored_results import comparison_settings, finished_result
from instanas_gym.latency.onnx import controller_latency_ms
from instanas_gym.space.family import probe_masks
from instanas_gym.space.masks import mobilenetv2_mask
from instanas_gym.utils.display import markdown_table
from instanas_gym.utils.files import atomic_write_json, atomic_write_text
from instanas_gym.utils.runlog import RunLogger, write_csv

#: What :func:`instance_awareness` adds to each agent's row.
AWARE_KEYS = ("gain_points", "gain_latency_pct", "distinct_archs", "archs_2pct", "top_share", "mi_class_bits",
              "mi_difficulty_bits", "cmi_difficulty_class_bits")
SUMMARY_KEYS = ("accuracy", "latency_ms", "network_latency_ms", "measured_ms", "controller_ms", "e2e_ms",
                "e2e_measured_ms", "reward", "ops_per_cell", "distinct_masks", *AWARE_KEYS, "gain_low", "gain_high",
                "saved_vs_single_pct", "stages", "stop_1_share", "wall_s")


def judge_bandit(cfg: CompareConfig) -> InstaNASBandit:
    """The test split's bandit with the bounds every agent is judged with: those the search ends on."""
    bandit = cfg.env.bandit("test", cfg.run)
    bandit.reward.anneal(1.0)
    return bandit


def best_single_arm(correct: np.ndarray, cells_ms: np.ndarray, reward: LatencyReward) -> int:
    """The arm of highest mean env reward under ``reward``'s current bounds: ``correct`` bool (K, N),
    whether arm k classifies image n right; ``cells_ms`` (K,) the arms' cell latencies (ms). Ties: the
    lower index."""
    correct, lat = np.asarray(correct, dtype=bool), np.asarray(cells_ms, dtype=np.float64)
    if correct.ndim != 2 or lat.shape != correct.shape[:1] or not correct.size:
        raise ValueError(f"correct must be (K, N) and cells_ms (K,), K, N >= 1, got {correct.shape}, {lat.shape}")
    return int(np.argmax(reward(correct, np.broadcast_to(lat[:, None], correct.shape))["reward"].mean(1)))


class FamilyArms:
    """The family the family-view agents act over (``cfg.family``), its training env, and each arm's
    correctness on the training images of the budget (computed once: looked up in lookup mode)."""

    def __init__(self, cfg: CompareConfig, judge: InstaNASBandit) -> None:
        self.cfg, self.judge = cfg, judge
        self.family, self.source = resolve_family(cfg.env.family, cfg.env.dataset)
        self.cells_ms = np.asarray(judge.table.cells_ms(self.family.masks), dtype=np.float64).reshape(self.family.k)
        self.latency_ms = self.cells_ms + judge.table.fixed_ms
        """(K,) whole-network latency of each arm by the table (ms)."""
        self._train: tuple[np.ndarray, np.ndarray] | None = None

    def venv(self) -> VectorEnv:
        """The family view of the training env, ``cfg.num_envs`` images per step (lookup mode per ``cfg.lookup``)."""
        return self.cfg.env.make_family_vec(self.cfg.num_envs, self.family, self.cfg.run)

    def train_correct(self) -> tuple[np.ndarray, np.ndarray]:
        """The first ``total_steps`` training images (uint8 (N, H, W, C)) and whether each arm is right
        on them (bool (K, N)), computed on the first call."""
        if self._train is None:
            bandit = self.venv().unwrapped.bandit
            n = min(self.cfg.total_steps, bandit.num_images)
            self._train = (bandit.data.images[:n],
                           bandit.outcome_store(progress=False).get(self.family.masks, n).correct)
        return self._train

    def reward_arch(self) -> np.ndarray:
        """(K,) each arm's R_A at the judge's (final) bounds."""
        return self.judge.reward.arch_reward(self.cells_ms)


def run_fixed(act: Policy, venv: VectorEnv, cfg: CompareConfig, seed: int) -> list[dict[str, Any]]:
    """Step ``venv`` with a non-learning ``act`` (images -> actions) for the budget, logging like the agents do."""
    obs, _ = venv.reset(seed=seed)
    reward_fn = venv.unwrapped.bandit.reward
    updates = max(1, cfg.total_steps // cfg.num_envs)
    log, start = RunLogger(None, step_key="env_steps"), time.perf_counter()
    log_every = max(1, updates // 50)
    for update in range(updates):
        reward_fn.anneal_step(update, updates)
        obs, rewards, _, _, info = venv.step(act(obs))
        final = info["final_info"]
        log.add({"reward": float(rewards.mean()), "accuracy": float(final["correct"].mean()),
                 "latency_ms": float(final["latency_ms"].mean())})
        if (update + 1) % log_every == 0:
            log.flush(env_steps=(update + 1) * cfg.num_envs, wall_s=time.perf_counter() - start)
    return log.history


def run_agent(
    agent: str, seed: int, cfg: CompareConfig, judge: InstaNASBandit | None = None, arms: FamilyArms | None = None
) -> tuple[list[dict[str, Any]], Policy, float, float | None]:
    """Train (or run) one agent with one seed; returns its log rows (none for the router), its policy,
    wall-clock seconds and its controller's ms at batch 1 in the runtime and thread count of the judge's
    latency table (VW-family's on the clock; None where it has no controller).

    ``judge``: the test bandit (default :func:`judge_bandit`); ``arms``: the family-view agents'
    family (default: built from ``cfg`` and ``judge``)."""
    if agent not in AGENTS:
        raise ValueError(f"unknown agent {agent!r}; expected one of {AGENTS}")
    judge = judge or judge_bandit(cfg)
    if agent in FAMILY_AGENTS:
        arms = arms or FamilyArms(cfg, judge)
    torch.manual_seed(seed)
    meta = judge.table.meta
    runtime, threads, shape = meta.get("runtime", "torch"), int(meta.get("threads", 1)), judge.data.spec.image_shape
    start = time.perf_counter()
    out = Path(cfg.run.out or "runs/compare") / f"{agent}_seed{seed}"
    rows: list[dict[str, Any]] = []
    run = replace(cfg.run, seed=seed, out=str(out))
    if agent in ("REINFORCE", "REINFORCE-family"):
        view = "masks" if agent == "REINFORCE" else "family"
        rcfg = ReinforceConfig(view=view, env=cfg.env, run=run, pg=cfg.pg, controller=cfg.controller,
                               total_steps=cfg.total_steps, batch_size=cfg.num_envs)
        network, rows = train_reinforce(rcfg)
        wall = time.perf_counter() - start
        if view == "masks":
            return rows, controller_policy(network), wall, controller_latency_ms(network, shape, runtime, threads)
        ms = router_latency_ms(network, shape, runtime, threads, latency_ms=arms.latency_ms)
        return rows, arm_policy(network, arms.family.masks), wall, ms
    if agent == "router":
        router = Router(ReinforceConfig().controller, shape[-1], arms.family.k)
        images, correct = arms.train_correct()
        train_router(router, images, correct, cfg.router_epochs, seed=seed)
        policy = expected_reward_policy(router, arms.family.masks, arms.reward_arch(), judge.reward.correct_reward)
        wall = time.perf_counter() - start
        return rows, policy, wall, router_latency_ms(router, shape, runtime, threads, latency_ms=arms.latency_ms)
    if agent in ("PPO", "A2C", "PPO-family", "A2C-family"):
        family = arms.family if agent.endswith("-family") else None
        extra = {"family": family} if family is not None else {}
        model, rows = train_sb3(agent.split("-")[0].lower(), cfg.env, cfg.total_steps, cfg.num_envs, seed,
                                out=out, **extra)
        policy = sb3_policy(model, family)
        wall = time.perf_counter() - start
        return rows, policy, wall, sb3_latency_ms(model, shape, runtime, threads)
    if agent == "VW-family":
        agent_vw, rows = train_vw(arms.venv(), arms.family, cfg.total_steps, seed, out=out)
        policy = vw_policy(agent_vw, arms.family)
        wall = time.perf_counter() - start
        return rows, policy, wall, vw_latency_ms(agent_vw, shape, threads)
    rows, policy = _fixed_agent(agent, seed, cfg, judge, arms)
    return rows, policy, time.perf_counter() - start, None


def _fixed_agent(agent: str, seed: int, cfg: CompareConfig, judge: InstaNASBandit,
                 arms: FamilyArms | None) -> tuple[list[dict[str, Any]], Policy]:
    """The agents that do not learn (best-single, random, MobileNetV2): their log rows and policy."""
    if agent == "best-single":
        _, correct = arms.train_correct()
        arm = best_single_arm(correct, arms.cells_ms, judge.reward)
        rows = run_fixed(lambda obs: np.full(len(obs), arm, dtype=np.int64), arms.venv(), cfg, seed)
        return rows, fixed_policy(arms.family.masks[arm])
    if agent == "random":
        return run_fixed(random_policy(seed), cfg.env.make_vec(cfg.num_envs, cfg.run), cfg, seed), random_policy(seed + 1000)
    policy = fixed_policy(mobilenetv2_mask())  # MobileNetV2
    return run_fixed(policy, cfg.env.make_vec(cfg.num_envs, cfg.run), cfg, seed), policy


def judged_agent(agent: str, seed: int, cfg: CompareConfig, judge: InstaNASBandit, arms: FamilyArms | None,
                 probes: np.ndarray, store: Any) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Train one agent with one seed and judge it on the test split: its log rows and result."""
    if agent in CASCADE_AGENTS:
        rows, actor, wall, ms, family = run_cascade_agent(agent, seed, cfg, judge)
        out = Path(cfg.run.out or "runs/compare") / f"{agent}_seed{seed}"
        report = judge_cascade(actor, cfg.env, family, ms, out, agent, cfg.run, cfg.judge.limit, cfg.judge.measure)
        return rows, cascade_figures(report) | {"controller_ms": ms, "wall_s": wall}
    rows, policy, wall, controller_ms = run_agent(agent, seed, cfg, judge, arms)
    result = evaluate_policy(policy, judge, measure=cfg.judge.measure, limit=cfg.judge.limit,
                             controller_ms=controller_ms)
    report = instance_awareness(policy, judge, probes, controller_ms or 0.0, limit=cfg.judge.limit,
                                own_limit=cfg.judge.own_archs, store=store)
    return rows, result | aware_figures(report) | {"wall_s": wall}


def cascade_figures(report: dict[str, Any]) -> dict[str, float]:
    """The figures of a :func:`~instanas_gym.judge.cascade.judge_cascade` report a comparison row shows."""
    g, best = report["gain"], report["best_single_within_0.2pt"]
    return {"accuracy": report["accuracy"], "network_latency_ms": report["network_latency_ms"],
            "e2e_ms": report["e2e_ms"], "gain_points": g["points"], "gain_low": g["low"], "gain_high": g["high"],
            "gain_latency_pct": g["latency_pct"], "saved_vs_single_pct": best["latency_pct"],
            "stages": float(np.dot(np.arange(1, len(report["stop_share"]) + 1), report["stop_share"])),
            "stop_1_share": report["stop_share"][0], **_clock_figures(report)}


def _clock_figures(report: dict[str, Any]) -> dict[str, float]:
    """A cascade report's clock check (``judge.measure`` images) as the comparison's measured columns."""
    if "clock" not in report:
        return {}
    measured = report["clock"]["clock_ms"]
    return {"measured_ms": measured, "e2e_measured_ms": measured + report["e2e_ms"] - report["network_latency_ms"]}


def aware_figures(report: dict[str, Any]) -> dict[str, float]:
    """The figures of an :func:`instance_awareness` report a comparison row shows (:data:`AWARE_KEYS`)."""
    return {"gain_points": report["gain"]["points"], "gain_latency_pct": report["gain"]["latency_pct"],
            "distinct_archs": float(report["distinct_archs"]), "archs_2pct": float(report["archs_2pct"]),
            "top_share": float(report["arch_share"][0]),
            "mi_class_bits": report["mi_class_bits"], "mi_difficulty_bits": report["mi_difficulty_bits"],
            "cmi_difficulty_class_bits": report["cmi_difficulty_class_bits"]}


#: What summary.md and the printed table say beside the legend.
NOTE = ("gain: above the static frontier of the 18 probes and the policy's own architectures, at the e2e latency "
        "where a controller is counted (REINFORCE, REINFORCE-family, router, PPO/A2C and their -family: timed at "
        "batch 1 in the table's runtime) and VW-family (its decision on the clock, batch 1); "
        "random, MobileNetV2 and best-single have no controller; the cascade agents: also above the frontier of "
        "a searched pool of 300 static masks, their decisions counted (instanas_gym.judge.cascade).")


#: Each finished agent x seed's judgement, in its folder under ``out``: a rerun of the same comparison
#: reuses it instead of training again, so a killed comparison loses at most the pair it was running.
RESULT_FILE = "result.json"


def _plot_curves(curves: dict[str, list[list[dict[str, float]]]], cfg: CompareConfig, path: Path) -> None:
    """Each agent's training reward over env steps, a band over its seeds."""
    plot = {}
    for agent, runs in curves.items():
        n = min(len(r) for r in runs)
        plot[agent] = (np.array([r["env_steps"] for r in runs[0][:n]]), np.array([[r["reward"] for r in run[:n]] for run in runs]))
    curves_with_bands(plot, path, "env steps (images)", "mean reward (training split)",
                      f"{cfg.env.env_id}: reward during training"
                      + (" (latency bound annealed: later rewards are harder)" if cfg.env.reward.anneal else ""))


def compare_agents(cfg: CompareConfig) -> dict[str, dict[str, float]]:
    """Run every agent x seed; write curves.csv, summary.csv, curves.png and summary.md to ``out``.

    Each finished agent x seed is stored in ``out/<agent>_seed<seed>/result.json`` (:data:`RESULT_FILE`);
    running the same comparison again (after a kill, or with more agents or seeds) reuses those and
    trains only the rest. Returns per agent the mean over seeds of the test metrics (and ``*_std``).
    """
    torch.set_num_threads(cfg.run.threads)
    out = Path(cfg.run.out or "runs/compare")
    out.mkdir(parents=True, exist_ok=True)
    judge = judge_bandit(cfg)
    arms = FamilyArms(cfg, judge) if any(a in FAMILY_AGENTS for a in cfg.agents) else None
    probes = np.stack([mask for _, mask in probe_masks(judge.table, seed=0)])
    store = judge.outcome_store()  # single architectures' answers on the test images, shared by every agent
    curves: dict[str, list[list[dict[str, float]]]] = {}
    finals: dict[str, list[dict[str, float]]] = {}
    settings = comparison_settings(cfg)
    for agent in cfg.agents:
        for seed in cfg.seeds:
            done = out / f"{agent}_seed{seed}" / RESULT_FILE
            finished = finished_result(done, settings)
            if finished is not None:
                rows, result = finished
            else:
                rows, result = judged_agent(agent, seed, cfg, judge, arms, probes, store)
                atomic_write_json(done, {"settings": settings, "agent": agent, "seed": seed, "result": result,
                                         "rows": rows})
            if rows:
                curves.setdefault(agent, []).append(rows)
            finals.setdefault(agent, []).append(result)
    write_csv([{"agent": agent, "seed": seed, "env_steps": r["env_steps"], "reward": r["reward"]}
               for agent, runs in curves.items() for seed, rows in zip(cfg.seeds, runs) for r in rows],
              out / "curves.csv")
    keys = [k for k in SUMMARY_KEYS if any(k in r for results in finals.values() for r in results)]
    write_csv([{"agent": agent, "seed": seed, **{k: r.get(k, "") for k in keys}}
               for agent, results in finals.items() for seed, r in zip(cfg.seeds, results)], out / "summary.csv")
    _plot_curves(curves, cfg, out / "curves.png")
    summary: dict[str, dict[str, float]] = {}
    for agent, results in finals.items():
        # results kept by an earlier version may lack some
        common = [k for k in results[0] if all(k in r for r in results)]
        summary[agent] = {k: float(np.mean([r[k] for r in results])) for k in common}
        summary[agent] |= {f"{k}_std": float(np.std([r[k] for r in results])) for k in common}
    family = "" if arms is None else f"; family of {arms.family.k} arms ({arms.source.name}, " + \
        ("lookup" if cfg.env.lookup else "live") + f", the arms' {cfg.env.bn_statistics} BatchNorm statistics)"
    atomic_write_text(
        out / "summary.md",
        f"{cfg.env.env_id}, {len(cfg.seeds)} seed{'s' * (len(cfg.seeds) != 1)}, {cfg.total_steps} env steps each{family}; test split"
        f"{'' if cfg.judge.limit is None else f' (first {cfg.judge.limit} images)'}; mean over seeds\n\n"
        + markdown_table(summary) + f"\n\n{NOTE}\n"
    )
    return summary
