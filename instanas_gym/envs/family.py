"""The family view: choose one of K architectures (``Discrete(K)``) instead of a 17 x 5 mask.

* :class:`FamilyAction`: a ``gymnasium.ActionWrapper`` over :class:`~instanas_gym.envs.instanas_env.InstaNASEnv`
  (or anything with a ``MultiBinary((17, 5))`` action): arm k -> the family's mask k, ``info["arm"]``.
* :class:`FamilyVectorAction`: the same over the native vector env
  (:class:`~instanas_gym.envs.vector.InstaNASVectorEnv`): ``MultiDiscrete([K] * num_envs)`` actions,
  ``info["final_info"]["arm"]``. ``instanas_gym.envs.wrappers.SB3VecEnv`` takes it as it is.

A family is an :class:`~instanas_gym.space.family.ArchitectureFamily` or the path of its file.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorActionWrapper, VectorEnv
from gymnasium.vector.utils import batch_space

from instanas_gym.space.family import ArchitectureFamily, as_family, check_family_dataset
from instanas_gym.space.search_space import MASK_SHAPE
from instanas_gym.utils.checks import check_array


def check_arms(arms: Any, k: int, shape: tuple[int, ...] = (), name: str = "action") -> np.ndarray:
    """``arms`` as int64 of ``shape`` (``()``: one arm), every value an integer in [0, k); a Python or
    numpy integer, or an integer array. Anything else raises ValueError naming ``name``."""
    arr = check_array(name, arms, shape, f"arm indices in [0, {k})")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be integer arm indices in [0, {k}), got dtype {arr.dtype}")
    if arr.size and ((arr < 0) | (arr >= k)).any():
        bad = np.unique(arr[(arr < 0) | (arr >= k)])[:5].tolist()
        raise ValueError(f"{name} must be arm indices in [0, {k}), got {bad}")
    return arr.astype(np.int64)


def family_for(env: gym.Env | VectorEnv, family: ArchitectureFamily | str | os.PathLike) -> ArchitectureFamily:
    """``family`` checked against ``env``: a mask action, and the family's dataset (when it names one)
    the env's."""
    fam = as_family(family)
    action_space = env.single_action_space if isinstance(env, VectorEnv) else env.action_space
    if not isinstance(action_space, spaces.MultiBinary) or action_space.shape != MASK_SHAPE:
        raise ValueError(f"the family view wraps an env with MultiBinary({MASK_SHAPE}) actions, got {action_space}")
    bandit = getattr(env.unwrapped, "bandit", None)
    if bandit is not None:
        check_family_dataset(fam, bandit.dataset, family)
    return fam


class FamilyAction(gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """Take arm k in ``Discrete(K)`` and pass the family's mask k on; ``info["arm"]`` is k and
    ``info["bn_statistics"]`` "shared": the live supernet runs every arm with its shared BatchNorm
    statistics (arms with their own run in lookup mode, :mod:`instanas_gym.envs.lookup`).

    Args:
        env: an env with ``MultiBinary((17, 5))`` actions (``gymnasium.make("InstaNAS-FashionMNIST-v0")``).
        family: an :class:`~instanas_gym.space.family.ArchitectureFamily` or the path of its file.
    """

    def __init__(self, env: gym.Env, family: ArchitectureFamily | str | os.PathLike) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, family=family)  # the env's spec can rebuild it
        gym.ActionWrapper.__init__(self, env)
        self.family = family_for(env, family)
        self.action_space = spaces.Discrete(self.family.k)

    def action(self, action: Any) -> np.ndarray:
        return self.family.masks[check_arms(action, self.family.k)]

    def step(self, action: Any):
        arm = int(check_arms(action, self.family.k))
        obs, reward, terminated, truncated, info = self.env.step(self.family.masks[arm])
        return obs, reward, terminated, truncated, {**info, "arm": arm, "bn_statistics": "shared"}


class FamilyVectorAction(VectorActionWrapper):
    """The vector counterpart of :class:`FamilyAction`: ``MultiDiscrete([K] * num_envs)`` actions;
    each step's arms are in ``info["final_info"]["arm"]`` (with ``"_arm"``), beside the step's other infos
    and ``"bn_statistics"`` ("shared", as for :class:`FamilyAction`).

    Args:
        env: :class:`~instanas_gym.envs.vector.InstaNASVectorEnv` (``gymnasium.make_vec(id, num_envs,
            vectorization_mode="vector_entry_point")``).
        family: an :class:`~instanas_gym.space.family.ArchitectureFamily` or the path of its file.
    """

    def __init__(self, env: VectorEnv, family: ArchitectureFamily | str | os.PathLike) -> None:
        super().__init__(env)
        self.family = family_for(env, family)
        self.single_action_space = spaces.Discrete(self.family.k)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def actions(self, actions: Any) -> np.ndarray:
        return self.family.masks[check_arms(actions, self.family.k, (self.num_envs,), "actions")]

    def step(self, actions: Any):
        arms = check_arms(actions, self.family.k, (self.num_envs,), "actions")
        obs, rewards, terminated, truncated, info = self.env.step(self.family.masks[arms])
        every = np.ones(self.num_envs, dtype=bool)
        info["final_info"].update(arm=arms, _arm=every, bn_statistics=np.full(self.num_envs, "shared", dtype=object),
                                  _bn_statistics=every.copy())
        return obs, rewards, terminated, truncated, info

    def evaluate_current_arms(self, arms: Any) -> dict[str, Any]:
        """Reward terms and infos of ``arms`` (num_envs,) on the images awaiting actions, without
        stepping (the wrapped env's ``evaluate_current`` of their masks)."""
        arms = check_arms(arms, self.family.k, (self.num_envs,), "arms")
        return self.env.unwrapped.evaluate_current(self.family.masks[arms])
