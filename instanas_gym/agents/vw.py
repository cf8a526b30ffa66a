"""Vowpal Wabbit's contextual-bandit learner on the family view: a baseline for one-step decisions
from a well-kept library, beside the RL agents.

Each image is a context; each of the K arms of the family an action. VW's ``--cb_explore_adf``
learns a cost per (context, action) pair from the costs of the actions it took (cost = -reward,
since VW minimises cost; its default doubly-robust estimator corrects for the probability each
action had), and explores epsilon-greedily. Features, all in [0, 1]: the image average-pooled to
7 x 7 per channel (shared), the arm's one-hot index and its table latency relative to the family's
slowest arm (per action), crossed (``-q sa``) so that the cost of each arm may depend on the image.
The learning rate is constant (``--power_t 0 -l 0.1``, :data:`VW_ARGS`): with VW's default decaying
rate, a synthetic two-arm task on such dense, correlated pixel features was learned in 3,200
examples by one seed of three (69-94% of greedy choices right), with the constant rate by all three
(100%).

Its cost per decision, :func:`vw_latency_ms`, is timed on the clock as it runs here (pooling in
torch, VW's feature string and predictor): there is no ONNX graph of it, so the comparison counts
that time as its controller's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from instanas_gym.agents.policy import Policy
from instanas_gym.latency.measure import median_ms, torch_threads
from instanas_gym.space.family import ArchitectureFamily
from instanas_gym.utils.checks import check_int, check_number
from instanas_gym.utils.runlog import RunLogger

#: Side of the pooled image whose pixels are the shared features.
POOLED = 7
#: VW's learning settings beside the contextual-bandit ones (see the module docstring).
VW_ARGS = "--power_t 0 -l 0.1"


def image_features(images: np.ndarray) -> np.ndarray:
    """uint8 images (B, H, W, C) -> float (B, 7 * 7 * C) in [0, 1]: each channel average-pooled to 7 x 7."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    return F.adaptive_avg_pool2d(x, POOLED).flatten(1).numpy()


class VWFamilyAgent:
    """A VW contextual-bandit learner over the K arms of ``family``.

    Args:
        family: the arms.
        latency_ms: (K,) each arm's latency (ms) by the env's table, an action feature.
        epsilon: exploration rate (fraction of uniform choices).
        seed: of VW and of the draws from its probabilities.
        args: VW's learning arguments (default :data:`VW_ARGS`; e.g. ``"--cb_type ips -l 0.05"``).
    """

    def __init__(self, family: ArchitectureFamily, latency_ms: np.ndarray, epsilon: float = 0.1, seed: int = 0,
                 args: str = VW_ARGS) -> None:
        import vowpalwabbit  # an optional dependency: pip install vowpalwabbit

        self.k = family.k
        lat = np.asarray(latency_ms, dtype=np.float64)
        if lat.shape != (self.k,):
            raise ValueError(f"latency_ms must have shape ({self.k},), got {lat.shape}")
        self.epsilon = check_number("epsilon", epsilon, 0.0, 1.0)
        rel = lat / lat.max() if lat.max() > 0 else lat
        self._actions = [f"|a arm{k} lat:{rel[k]:.6f}" for k in range(self.k)]
        self.rng = np.random.default_rng(seed)
        self.vw = vowpalwabbit.Workspace(f"--cb_explore_adf --epsilon {epsilon} -q sa --quiet --random_seed {seed} {args}")

    def _shared(self, features: np.ndarray) -> str:
        return "shared |s " + " ".join(f"p{i}:{v:.4f}" for i, v in enumerate(features) if v > 0)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """VW's exploration distribution over the arms for each context (B, F): (B, K)."""
        return np.array([self.vw.predict([self._shared(f), *self._actions]) for f in features], dtype=np.float64)

    def act(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Arms drawn from VW's distribution, and the probability each had: (B,), (B,)."""
        probs = self.probabilities(features)
        probs /= probs.sum(1, keepdims=True)
        arms = np.array([self.rng.choice(self.k, p=p) for p in probs], dtype=np.int64)
        return arms, probs[np.arange(len(arms)), arms]

    def learn(self, features: np.ndarray, arms: np.ndarray, probs: np.ndarray, rewards: np.ndarray) -> None:
        """One update per context: the chosen arm's cost (-reward) and its probability."""
        for f, a, p, r in zip(features, arms, probs, rewards):
            actions = list(self._actions)
            actions[int(a)] = f"0:{-float(r):.6f}:{max(float(p), 1e-6):.6f} {actions[int(a)]}"
            self.vw.learn([self._shared(f), *actions])

    def greedy(self, features: np.ndarray) -> np.ndarray:
        """The arm of least predicted cost per context (the most probable under exploration)."""
        return self.probabilities(features).argmax(1)


def train_vw(
    venv: Any,
    family: ArchitectureFamily,
    total_steps: int,
    seed: int = 0,
    epsilon: float = 0.1,
    out: str | Path | None = None,
) -> tuple[VWFamilyAgent, list[dict[str, Any]]]:
    """Train VW on a family vector env (``Discrete(K)`` arms per sub-environment, e.g.
    :class:`~instanas_gym.envs.family.FamilyVectorAction`) for ``total_steps`` env steps, annealing
    the latency bound as the other agents do; returns the agent and the logged rows."""
    check_int("total_steps", total_steps)
    bandit = venv.unwrapped.bandit
    agent = VWFamilyAgent(family, family.network_ms(bandit.table), epsilon, seed)
    obs, _ = venv.reset(seed=seed)
    updates = max(1, total_steps // venv.num_envs)
    log, start = RunLogger(out, "log", "env_steps"), time.perf_counter()
    log_every = max(1, updates // 50)
    for update in range(updates):
        bandit.reward.anneal_step(update, updates)
        features = image_features(obs)
        arms, probs = agent.act(features)
        obs, rewards, _, _, info = venv.step(arms)
        agent.learn(features, arms, probs, rewards)
        final = info["final_info"]
        log.add({"reward": float(rewards.mean()), "accuracy": float(np.mean(final["correct"])),
                 "latency_ms": float(np.mean(final["latency_ms"]))})
        if (update + 1) % log_every == 0 or update == updates - 1:
            log.flush(env_steps=(update + 1) * venv.num_envs, upper_ms=bandit.reward.upper_ms,
                      wall_s=time.perf_counter() - start)
    log.close()
    return agent, log.history


def vw_policy(agent: VWFamilyAgent, family: ArchitectureFamily) -> Policy:
    """The agent's greedy arms as masks, for uint8 (B, H, W, C) images."""
    return lambda images: family.masks[agent.greedy(image_features(images))]


def vw_latency_ms(agent: VWFamilyAgent, image_shape: tuple[int, int, int], threads: int = 1, repeats: int = 50) -> float:
    """Median ms of one greedy decision at batch 1 as :func:`vw_policy` makes it: the pooled
    features of one uint8 image of ``image_shape`` (H, W, C), VW's feature string and its predictor
    over the K arms, with ``threads`` torch threads."""
    x = np.zeros((1, *image_shape), dtype=np.uint8)
    with torch_threads(threads):
        return median_ms(lambda: agent.greedy(image_features(x)), repeats)
