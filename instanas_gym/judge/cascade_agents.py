"""The cascade-view agents of ``compare``: each learns (or is fitted) on the training split with the
comparison's budget of images and returns a greedy cascade policy, its cost per decision and its family.

* ``threshold-cascade``: no learning, the confidence rule fitted to ``cascade_budget_ms`` on the
  training images of the budget (:func:`~instanas_gym.agents.cascade.fit_threshold_policy`);
* ``REINFORCE-cascade``: :func:`~instanas_gym.agents.reinforce.train_reinforce`, view "cascade";
* ``PPO-cascade``, ``A2C-cascade``: Stable-Baselines3 on the cascade view (:mod:`instanas_gym.agents.sb3`);
* ``router-cascade``: the supervised router (each arm's correctness on the training images) chooses
  the first architecture; where its answer's top-1 probability is under a threshold (fitted to the
  budget on the training images), the family's most accurate architecture runs next.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from instanas_gym.agents.cascade import CascadeActor, decision_ms, fit_threshold_policy, greedy_actor
from instanas_gym.agents.config import ControllerConfig, ReinforceConfig
from instanas_gym.agents.reinforce import train_reinforce
from instanas_gym.agents.router import Router, predict_correct, train_router
from instanas_gym.agents.router_file import resolve_family
from instanas_gym.agents.sb3 import CascadeExtractor, sb3_cascade_actor, train_sb3
from instanas_gym.envs.bandit import InstaNASBandit
from instanas_gym.latency.onnx import module_latency_ms
from instanas_gym.space.family import ArchitectureFamily

CASCADE_AGENTS = ("threshold-cascade", "REINFORCE-cascade", "PPO-cascade", "A2C-cascade", "router-cascade")


def run_cascade_agent(agent: str, seed: int, cfg: Any, judge: InstaNASBandit
                      ) -> tuple[list[dict[str, Any]], CascadeActor, float, float, ArchitectureFamily]:
    """Train (or fit) one cascade agent with one seed (``cfg``: a ``CompareConfig``); returns its log
    rows, greedy actor, wall-clock seconds, cost per decision (ms, the judge's table's runtime) and family."""
    start = time.perf_counter()
    family = None if cfg.env.family is None else resolve_family(cfg.env.family, cfg.env.dataset)[0]
    run = replace(cfg.run, seed=seed, out=str(Path(cfg.run.out or "runs/compare") / f"{agent}_seed{seed}"))
    train = cfg.env.make_cascade_vec(1, family, run).cascade
    meta, shape = judge.table.meta, judge.data.spec.image_shape
    runtime, threads = meta.get("runtime", "torch"), int(meta.get("threads", 1))
    torch.manual_seed(seed)
    if agent == "threshold-cascade":
        n = min(cfg.total_steps, train.bandit.num_images)
        o = train.outcomes
        subset = replace(o, prediction=o.prediction[:, :n], confidence=o.confidence[:, :n], labels=o.labels[:n])
        policy, _ = fit_threshold_policy(subset, train.network_ms, train.stages, cfg.cascade_budget_ms)
        return [], greedy_actor(policy), time.perf_counter() - start, 0.0, train.family
    if agent == "REINFORCE-cascade":
        rcfg = ReinforceConfig(view="cascade", env=cfg.env, run=run, pg=cfg.pg, total_steps=cfg.total_steps,
                               batch_size=cfg.num_envs)
        network, rows = train_reinforce(rcfg)
        ms = decision_ms(network, shape, runtime, threads)
        return rows, greedy_actor(network), time.perf_counter() - start, ms, train.family
    if agent in ("PPO-cascade", "A2C-cascade"):
        model, rows = train_sb3(agent.split("-")[0].lower(), cfg.env, cfg.total_steps, cfg.num_envs, seed,
                                out=run.out, family=train.family, cascade=True)
        ms = module_latency_ms(_SB3Decision(model.policy).eval(), shape, "action", runtime,
                               threads)
        return rows, sb3_cascade_actor(model, train.k), time.perf_counter() - start, ms, train.family
    if agent == "router-cascade":
        return _router_cascade(cfg, seed, train, start, shape, runtime, threads)
    raise ValueError(f"unknown cascade agent {agent!r}; expected one of {CASCADE_AGENTS}")


def _router_cascade(cfg: Any, seed: int, train: Any, start: float, shape: tuple[int, int, int], runtime: str,
                    threads: int) -> tuple[list[dict[str, Any]], CascadeActor, float, float, ArchitectureFamily]:
    """The router chooses stage 1; under a threshold the most accurate architecture runs next (the
    threshold: the most accurate within the budget on the training images, else never escalating)."""
    n = min(cfg.total_steps, train.bandit.num_images)
    o, ms, rows = train.outcomes, train.network_ms, np.arange(n)
    images, correct = train.bandit.data.images[:n], train.outcomes.correct[:, :n]
    router = Router(ControllerConfig(widths=(8, 16, 32), input_size=14), shape[-1], train.k)
    train_router(router, images, correct, cfg.router_epochs, seed=seed)
    best = int(np.argmax(correct.mean(1)))
    first = predict_correct(router, images).argmax(1)
    top1 = o.confidence[first, rows].astype(np.float16).astype(np.float64)  # as the observations show it
    chosen, chosen_acc = 0.0, -1.0
    for tau in np.unique(np.quantile(top1, np.linspace(0, 1, 33))):
        escalate = (top1 < tau) & (first != best)
        accuracy = np.where(escalate, correct[best], correct[first, rows]).mean()
        if (ms[first] + escalate * ms[best]).mean() <= cfg.cascade_budget_ms and accuracy > chosen_acc:
            chosen, chosen_acc = float(tau), accuracy
    cost = module_latency_ms(_RouterArgmax(router).eval(), shape, "architecture", runtime, threads)
    return [], _routed_actor(router, best, chosen, train.k), time.perf_counter() - start, cost, train.family


class _RouterArgmax(nn.Module):
    """The router's first-stage choice as one graph (what its decision costs)."""

    def __init__(self, router: Router) -> None:
        super().__init__()
        self.router = router

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.router(images).argmax(1)


def _routed_actor(router: Router, best: int, threshold: float, k: int) -> CascadeActor:
    def act(obs: dict[str, np.ndarray]) -> np.ndarray:
        stage = np.asarray(obs["stage"])
        first = predict_correct(router, obs["image"]).argmax(1)
        low = np.asarray(obs["summary"])[:, 0, 0] < threshold
        escalate = (stage == 1) & low & (np.asarray(obs["arms"])[:, 0] != best)
        return np.where(stage == 0, first, np.where(escalate, best, k)).astype(np.int64)

    return act


class _SB3Decision(nn.Module):
    """One decision of an SB3 cascade policy as a graph of the image alone (the other entries as zeros)."""

    def __init__(self, policy: Any) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        extractor: CascadeExtractor = self.policy.features_extractor
        x = extractor.cnn(images.permute(0, 3, 1, 2).float() / 255.0)
        x = torch.nn.functional.pad(x, (0, extractor.features_dim - x.shape[1]))
        return self.policy.action_net(self.policy.mlp_extractor.forward_actor(x)).argmax(1)
