"""Stable-Baselines3 PPO and A2C on InstaNAS, plugged in through SB3's own extension points.

The policy sees channel-first images through :class:`SmallCNN` (``policy_kwargs``; NatureCNN's 8x8
stride-4 stem cannot take 28-32 px images) and acts in ``MultiBinary(85)``, or over a family of K
architectures in ``Discrete(K)`` (its family view, live or in lookup mode), or in the cascade view
(``MultiInputPolicy``, :class:`CascadeExtractor`: the image through :class:`SmallCNN`, the answers so
far flattened beside it; undiscounted returns); the environments are our native batched vector envs
behind :class:`~instanas_gym.envs.wrappers.SB3VecEnv` / :class:`~instanas_gym.envs.wrappers.SB3CascadeVecEnv`.
:class:`InstaNASCallback` anneals the latency upper bound on the same schedule as REINFORCE and logs
the same fields.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import get_flattened_obs_dim, preprocess_obs
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from instanas_gym.agents.policy import Policy
from instanas_gym.envs.config import EnvConfig
from instanas_gym.envs.wrappers import SB3CascadeVecEnv, SB3VecEnv, channel_first_obs, stop_first_to_arm0
from instanas_gym.latency.onnx import module_latency_ms
from instanas_gym.space.family import ArchitectureFamily, as_family
from instanas_gym.space.search_space import MASK_SHAPE
from instanas_gym.utils.runlog import RunLogger

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C}
#: Rollout sizes for a batched bandit: short rollouts over many environments.
DEFAULT_KWARGS: dict[str, dict[str, Any]] = {
    "ppo": {"n_steps": 8, "batch_size": 64, "n_epochs": 4, "learning_rate": 3e-4, "ent_coef": 0.0, "gamma": 0.0},
    "a2c": {"n_steps": 1, "learning_rate": 7e-4, "ent_coef": 0.0, "gamma": 0.0},
}
#: The cascade view: episodes of up to T steps with the reward at the end, so undiscounted.
CASCADE_KWARGS: dict[str, dict[str, Any]] = {
    "ppo": {"n_steps": 8, "batch_size": 64, "n_epochs": 4, "learning_rate": 3e-4, "ent_coef": 0.01, "gamma": 1.0},
    "a2c": {"n_steps": 4, "learning_rate": 7e-4, "ent_coef": 0.01, "gamma": 1.0},
}


class SmallCNN(BaseFeaturesExtractor):
    """3 conv layers (16/32/64 channels, 3x3, strides 1/2/2), global pooling, a linear layer."""

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 128) -> None:
        super().__init__(observation_space, features_dim)
        c = observation_space.shape[0]
        self.cnn = nn.Sequential(
            nn.Conv2d(c, 16, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.linear = nn.Sequential(nn.Linear(64, features_dim), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.linear(self.cnn(observations))


class CascadeExtractor(BaseFeaturesExtractor):
    """The cascade view's observation: the image through :class:`SmallCNN`, every other entry
    (stages, architectures run as one-hot, softmax summaries, latency) flattened beside it."""

    def __init__(self, observation_space: gym.spaces.Dict, features_dim: int = 128) -> None:
        rest = [k for k in observation_space.spaces if k != "image"]
        size = sum(get_flattened_obs_dim(observation_space[k]) for k in rest)
        super().__init__(observation_space, features_dim + size)
        self.cnn, self.rest = SmallCNN(observation_space["image"], features_dim), rest

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([self.cnn(observations["image"]), *[observations[k].flatten(1) for k in self.rest]], 1)


class InstaNASCallback(BaseCallback):
    """Anneals UB over ``total_steps`` and logs, every ``log_every`` env steps, the window means of
    reward, accuracy (fraction), LUT latency (ms), R_A, ops per cell and the share of empty cells
    (rows in ``self.log.history``; also ``out/<name>.csv`` when ``out`` is given)."""

    def __init__(
        self, venv: SB3VecEnv, total_steps: int, log_every: int = 320,
        out: str | Path | None = None, name: str = "log",
    ) -> None:
        super().__init__()
        self.reward = venv.venv.unwrapped.bandit.reward
        self.cascade = isinstance(venv, SB3CascadeVecEnv)
        self.episodes = 0
        family = getattr(venv.venv, "family", None)
        self.arm_masks = None if family is None else family.masks
        """The family's masks (K, 17, 5) when the actions are arms, else None."""
        self.total_steps, self.log_every = total_steps, log_every
        self.log = RunLogger(out, name, "env_steps")
        self._next_log = log_every
        self._start = time.perf_counter()

    def _on_step(self) -> bool:
        if self.cascade:
            return self._on_cascade_step()
        self.reward.anneal_step(self.num_timesteps, self.total_steps)
        infos = self.locals["infos"]
        actions = np.asarray(self.locals["actions"])
        masks = actions.reshape(-1, *MASK_SHAPE) if self.arm_masks is None else self.arm_masks[actions.reshape(-1)]
        self.log.add({
            "reward": float(np.mean(self.locals["rewards"])),
            "accuracy": float(np.mean([i["correct"] for i in infos])),
            "latency_ms": float(np.mean([i["latency_ms"] for i in infos])),
            "reward_arch": float(np.mean([i["reward_arch"] for i in infos])),
            "ops_per_cell": float(masks.sum(-1).mean()),
            "empty_cell_share": float((masks.sum(-1) == 0).mean()),
        })
        if self.num_timesteps >= self._next_log:
            self.log.flush(env_steps=self.num_timesteps, upper_ms=self.reward.upper_ms,
                           wall_s=time.perf_counter() - self._start)
            self._next_log += self.log_every
        return True

    def _on_cascade_step(self) -> bool:
        """Cascades: the budget counts images (ended episodes), and only ended ones are logged."""
        self.reward.anneal_step(self.episodes, self.total_steps)
        ended = [i for i, info in enumerate(self.locals["infos"]) if "correct" in info]
        if ended:
            infos = [self.locals["infos"][i] for i in ended]
            self.episodes += len(ended)
            self.log.add({"reward": float(np.mean(self.locals["rewards"][ended])),
                          "accuracy": float(np.mean([i["correct"] for i in infos])),
                          "network_latency_ms": float(np.mean([i["network_latency_ms"] for i in infos])),
                          "stages": float(np.mean([i["stages"] for i in infos]))})
        if self.episodes >= self._next_log:
            self.log.flush(env_steps=self.episodes, upper_ms=self.reward.upper_ms, wall_s=time.perf_counter() - self._start)
            self._next_log += self.log_every
        return self.episodes < self.total_steps

    def _on_training_end(self) -> None:
        self.log.close()


def train_sb3(
    algo: str,
    env: EnvConfig | None = None,
    total_steps: int = 32_000,
    num_envs: int = 32,
    seed: int = 0,
    algo_kwargs: dict[str, Any] | None = None,
    out: str | Path | None = None,
    family: ArchitectureFamily | str | os.PathLike | None = None,
    cascade: bool = False,
) -> tuple[BaseAlgorithm, list[dict[str, Any]]]:
    """Train PPO or A2C (``algo``) for ``total_steps`` env steps; returns the model and the logged rows.

    With ``family`` (an :class:`~instanas_gym.space.family.ArchitectureFamily` or its file) it acts on the
    family view, one of K arms per image (:meth:`~instanas_gym.envs.config.EnvConfig.make_family_vec`):
    live, or from the stored outcomes (``env.lookup``). With ``cascade`` it acts on the cascade view of
    ``family`` (None: the default cascade family) until ``total_steps`` images' cascades have ended."""
    if algo not in ALGORITHMS:
        raise ValueError(f"algo must be one of {sorted(ALGORITHMS)}, got {algo!r}")
    env = env or EnvConfig()
    if cascade:
        venv: Any = SB3CascadeVecEnv(env.make_cascade_vec(num_envs, None if family is None else as_family(family)))
        policy, extractor, defaults = "MultiInputPolicy", CascadeExtractor, CASCADE_KWARGS[algo]
    else:
        venv = SB3VecEnv.make(env.env_id, num_envs=num_envs, **env.kwargs()) if family is None \
            else SB3VecEnv(env.make_family_vec(num_envs, as_family(family)))
        policy, extractor, defaults = "CnnPolicy", SmallCNN, DEFAULT_KWARGS[algo]
    model = ALGORITHMS[algo](
        policy, venv, seed=seed, device="cpu", verbose=0,
        policy_kwargs={"features_extractor_class": extractor, "features_extractor_kwargs": {"features_dim": 128}},
        **{**defaults, **(algo_kwargs or {})},
    )
    callback = InstaNASCallback(venv, total_steps, log_every=max(num_envs, total_steps // 50), out=out)
    model.learn(total_timesteps=total_steps * (env.stages if cascade else 1), callback=callback)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        model.save(Path(out) / f"{algo}.zip")
    return model, callback.log.history


def sb3_cascade_actor(model: BaseAlgorithm, k: int) -> Any:
    """Deterministic SB3 actions on cascade observations (the vector env's dict of arrays), STOP first
    mapped to architecture 0 as in training."""

    def act(obs: dict[str, np.ndarray]) -> np.ndarray:
        actions, _ = model.predict(channel_first_obs(obs, True), deterministic=True)
        return stop_first_to_arm0(actions, obs["stage"], k)

    return act


def sb3_policy(model: BaseAlgorithm, family: ArchitectureFamily | None = None) -> Policy:
    """Deterministic SB3 actions as masks, for uint8 (B, H, W, C) images; with ``family`` the
    actions are arms, and the masks the family's."""

    def policy(images: np.ndarray) -> np.ndarray:
        actions, _ = model.predict(np.ascontiguousarray(images.transpose(0, 3, 1, 2)), deterministic=True)
        if family is not None:
            return family.masks[np.asarray(actions, dtype=np.int64).reshape(-1)]
        return np.asarray(actions, dtype=np.uint8).reshape(-1, *MASK_SHAPE)

    return policy


class SB3Actor(nn.Module):
    """The deterministic action of an SB3 actor-critic policy as one graph: uint8 images (B, H, W, C)
    -> the arm (B,) int64 for ``Discrete`` actions, the 85 bits (B, 85) for ``MultiBinary``."""

    def __init__(self, policy: ActorCriticPolicy) -> None:
        super().__init__()
        self.policy = policy
        self.discrete = isinstance(policy.action_space, gym.spaces.Discrete)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        obs = preprocess_obs(images.permute(0, 3, 1, 2), self.policy.observation_space, self.policy.normalize_images)
        features = self.policy.pi_features_extractor(obs)
        logits = self.policy.action_net(self.policy.mlp_extractor.forward_actor(features))
        return logits.argmax(1) if self.discrete else (logits > 0).to(torch.uint8)


def sb3_latency_ms(
    model: BaseAlgorithm, image_shape: tuple[int, int, int], runtime: str = "torch", threads: int = 1, repeats: int = 50
) -> float:
    """Median ms of the model's deterministic action on one image (batch 1) in ``runtime``: "torch"
    (eager) or "onnxruntime" (its exported graph), with ``threads`` threads; the actor only (feature
    extractor, actor layers, action head), as ``evaluation.controller_latency_ms`` times a controller."""
    return module_latency_ms(SB3Actor(model.policy).eval(), image_shape, "action", runtime, threads, repeats)
