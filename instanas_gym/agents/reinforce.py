"""The REINFORCE agent, top to bottom, for every action view: one training loop.

A policy learns on the training split of the native vector env. Per update: the reward's latency
bound is set for the update (``reward.anneal_step``: linear over the run where the reward anneals),
the policy samples actions for the batch's images, each is rewarded against a baseline on the same
image and the policy takes one step (:mod:`instanas_gym.agents.policy_gradient`), and the batch's
means are logged (``out/log.csv``, the progress bar). The action view decides what is sampled:

* ``"masks"``: the paper's controller, a mask of 85 bits per image (:class:`~.policy_gradient.MaskLearner`);
* ``"family"``: one of a family's K architectures per image (:class:`~.policy_gradient.ArmLearner`),
  stepped in lookup mode by default (``env.lookup``);
* ``"cascade"``: architectures of a family run one after another until the policy stops
  (:class:`~.policy_gradient.CascadeLearner`, :class:`~instanas_gym.agents.cascade.CascadePolicy`);
  each update runs ``pg.samples`` cascades on each of ``batch_size`` images drawn by the run's seed.

The result is a policy file (``out/policy.pt``, :func:`~instanas_gym.agents.policy.save_policy`);
judging it on the test split is :mod:`instanas_gym.judge`'s job (``instanas-gym train-reinforce``
does both). :func:`preset` holds the measured defaults of each view (``benchmarks/README.md``):

* masks: alpha 0.95, not 0.8: with every bit's probability in [0.2, 0.8] a sampled mask carries a
  fifth of all ops on top of the greedy ones, about the whole final upper bound, so R_A stays 0; UB
  anneals to 1.0 x (not 0.5 x) the MobileNetV2 path's cells; a controller of 8/16/32 channels on
  the image downscaled to 14 x 14 (0.65 MMACs), not the paper's 16/32/64 at full size (9.35 MMACs,
  more than this supernet's MobileNetV2 path); 96,000 images at lr 1e-3;
* family: the entropy bonus 2.0 (with 0.01 the policy settled on one arm within a few thousand
  images); UB fixed (not annealed) at 1.5 x the MobileNetV2 path's cells, so the policy learns
  under the bound it is judged by; 48,000 images, 4 arms sampled per image.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from instanas_gym.agents.cascade import CascadePolicy
from instanas_gym.agents.config import ReinforceConfig
from instanas_gym.agents.policy import save_policy
from instanas_gym.agents.policy_gradient import ArmLearner, CascadeLearner, MaskLearner
from instanas_gym.agents.router import Router, train_router
from instanas_gym.agents.router_file import resolve_family
from instanas_gym.space.family import ArchitectureFamily
from instanas_gym.utils.runlog import RunLogger, progress_bar


def _describe(row: dict[str, Any]) -> str:
    arms = (f" arms {row['distinct_arms']:.1f}" if "distinct_arms" in row else f" stages {row['stages']:.2f}"
            if "stages" in row else f" ops/cell {row['ops_per_cell']:.2f}")
    return (f"R {row['reward']:+.2f} acc {row['accuracy']:.3f} L {row['network_latency_ms']:.3f}ms "
            f"H {row['entropy']:.2f}{arms} UB {row['upper_ms']:.3f}ms")


def _networks(cfg: ReinforceConfig, in_channels: int, device: torch.device, family: ArchitectureFamily | None,
              venv: Any) -> MaskLearner | ArmLearner | CascadeLearner:
    """The view's network (built from the global generator, seeded here: whatever the env's set-up drew,
    a cached or a fresh outcomes file, the weights start the same) and update."""
    torch.manual_seed(cfg.run.seed)
    generator = torch.Generator().manual_seed(cfg.run.seed)
    if cfg.view == "masks":
        return MaskLearner(cfg.controller.build(in_channels).to(device), cfg.pg, generator)
    if cfg.view == "family":
        return ArmLearner(Router(cfg.controller, in_channels, family.k), family.k, cfg.pg, generator, family.masks)
    c = venv.cascade
    body = cfg.controller if cfg.cascade_image else None
    return CascadeLearner(CascadePolicy(c.k, c.stages, c.classes, body, in_channels), cfg.pg, generator)


def _setup(cfg: ReinforceConfig, console: Console) -> tuple[Any, Any, ArchitectureFamily | None, Callable[[], dict]]:
    """The view's training env, learner, family and one update's collection (the loop's only view-specific part)."""
    run, view = cfg.run, cfg.view
    if view == "cascade":
        family = None if cfg.env.family is None else resolve_family(cfg.env.family, cfg.env.dataset)[0]
        venv = cfg.env.make_cascade_vec(cfg.batch_size * cfg.pg.samples, family, run)
        learner = _networks(cfg, venv.bandit.data.spec.image_shape[2], venv.bandit.device, None, venv)
        images = np.random.default_rng([run.seed, 2])  # which images each update's cascades run on
        n = venv.bandit.num_images
        return venv, learner, venv.cascade.family, lambda: learner.learn_cascades(venv, images.integers(n, size=cfg.batch_size))
    family = None if view == "masks" else resolve_family(cfg.env.family, cfg.env.dataset)[0]
    venv = cfg.env.make_vec(cfg.batch_size, run) if family is None else cfg.env.make_family_vec(cfg.batch_size, family, run)
    env = venv.unwrapped
    obs = [venv.reset(seed=run.seed)[0]]
    learner = _networks(cfg, obs[0].shape[-1], env.bandit.device, family, venv)
    if family is not None and cfg.warm_start_images:
        console.print(f"warm start: each arm's correctness on {cfg.warm_start_images} training images")
        n = min(cfg.warm_start_images, env.bandit.num_images)
        correct = env.bandit.outcome_store(progress=False).get(family.masks, n).correct
        train_router(learner.network, env.bandit.data.images[:n], correct, cfg.warm_start_epochs, seed=run.seed)
    evaluate = env.evaluate_current if family is None else venv.evaluate_current_arms

    def step(actions: np.ndarray) -> dict[str, Any]:
        obs[0], rewards, _, _, info = venv.step(actions)
        return {**info["final_info"], "reward": rewards}

    return venv, learner, family, lambda: learner.learn(torch.from_numpy(obs[0]), evaluate, step)


def train_reinforce(cfg: ReinforceConfig, console: Console | None = None) -> tuple[torch.nn.Module, list[dict[str, Any]]]:
    """Train a policy with REINFORCE; returns its network (eval mode) and the logged rows (also in
    ``out/log.csv``); writes ``out/policy.pt``."""
    console, run = console or Console(), cfg.run
    torch.set_num_threads(run.threads)
    torch.manual_seed(run.seed)
    venv, learner, family, collect = _setup(cfg, console)
    reward = venv.unwrapped.bandit.reward
    learner.network.train()
    updates = max(1, cfg.total_steps // cfg.batch_size)
    start = time.perf_counter()
    progress = progress_bar(console)
    task = progress.add_task(f"REINFORCE ({cfg.view})", total=updates, stats="")
    log = RunLogger(run.out, "log", "env_steps", _describe, progress, task)
    with progress:
        for update in range(updates):
            reward.anneal_step(update, updates)
            log.add(collect())
            if (update + 1) % cfg.log_every == 0 or update == updates - 1:
                log.flush(env_steps=(update + 1) * cfg.batch_size, update=update + 1, upper_ms=reward.upper_ms,
                          lower_ms=reward.lower_ms, wall_s=time.perf_counter() - start)
            progress.update(task, advance=1)
    log.close()
    network = learner.network.eval()
    save_policy(Path(run.out) / "policy.pt", cfg.view, network, family, reinforce_config=asdict(cfg),
                bounds={"lower_ms": reward.lower_ms, "upper_ms": reward.upper_ms})
    return network, log.history


def with_run(cfg: ReinforceConfig, **run: Any) -> ReinforceConfig:
    """``cfg`` with some of its run settings replaced (``with_run(cfg, seed=1, out="runs/s1")``)."""
    return replace(cfg, run=replace(cfg.run, **run))
