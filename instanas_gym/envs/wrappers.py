"""What Stable-Baselines3 needs: a flat action, a channel-first image, and a batched VecEnv.

* :class:`FlattenMaskAction`: ``MultiBinary(85)`` actions (cell by cell) for ``MultiBinary((17, 5))``.
* :class:`ChannelFirstObservation`: (C, H, W) images, the layout of SB3's and torch's CNNs.
* :func:`make_sb3_env`: ``gymnasium.make(id)`` with both wrappers (or the family view), for SB3's ``check_env`` and
one env.
* :class:`SB3VecEnv`: our native :class:`~instanas_gym.envs.vector.InstaNASVectorEnv` as an SB3 ``VecEnv``, so
  PPO/A2C evaluate all their environments in one batched supernet call; or its family view
  (:class:`~instanas_gym.envs.family.FamilyVectorAction`, or the lookup env
  :class:`~instanas_gym.envs.lookup.FamilyLookupVectorEnv`), with ``Discrete(K)`` actions.
* The cascade view (:mod:`instanas_gym.envs.cascade`) for SB3: :class:`CascadeForSB3` (one env) and
  :class:`SB3CascadeVecEnv` (the native cascade vector env): the observation's image channel-first,
  and STOP before any architecture ran (refused by the env) runs architecture 0 instead, since SB3's
  policies cannot mask actions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from instanas_gym.envs.family import FamilyAction, FamilyVectorAction, check_arms
from instanas_gym.space.masks import FLAT_BITS
from instanas_gym.space.search_space import MASK_SHAPE
from instanas_gym.utils.checks import check_array


def flat_actions(actions: Any, shape: tuple[int, ...], name: str = "action") -> np.ndarray:
    """Flat MultiBinary actions of ``shape`` as uint8: bool, integer, or float holding exactly 0.0 /
    1.0 (what Stable-Baselines3 samples for MultiBinary); anything else raises ValueError naming ``name``."""
    arr = check_array(name, actions, shape, "a 0/1 array")
    if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must have a bool, integer or float dtype, got {arr.dtype}")
    if arr.dtype != np.bool_ and arr.size and not np.isin(arr, (0, 1)).all():
        bad = np.unique(arr[~np.isin(arr, (0, 1))])[:5].tolist()
        raise ValueError(f"{name} values must be exactly 0 or 1, got {bad}")
    return arr.astype(np.uint8)


class FlattenMaskAction(gym.ActionWrapper):
    """Take actions as ``MultiBinary(85)`` (row-major: cell by cell) and pass them on as (17, 5)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        if env.action_space.shape != MASK_SHAPE:
            raise ValueError(f"expected an action space of shape {MASK_SHAPE}, got {env.action_space}")
        self.action_space = spaces.MultiBinary(FLAT_BITS)

    def action(self, action: np.ndarray) -> np.ndarray:
        return flat_actions(action, (FLAT_BITS,)).reshape(MASK_SHAPE)


class ChannelFirstObservation(gym.ObservationWrapper):
    """(H, W, C) uint8 images -> (C, H, W)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        h, w, c = env.observation_space.shape
        self.observation_space = spaces.Box(0, 255, (c, h, w), np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(observation.transpose(2, 0, 1))


def make_sb3_env(env_id: str = "InstaNAS-FashionMNIST-v0", family: Any = None, **kwargs: Any) -> gym.Env:
    """``gymnasium.make(env_id, **kwargs)`` wrapped for SB3: flat actions (with ``family``, an
    ``ArchitectureFamily`` or its file: ``Discrete(K)`` arms, :class:`~instanas_gym.envs.family.FamilyAction`),
    channel-first images; a cascade id (``...-Cascade-v0``, ``family`` passed on) through :class:`CascadeForSB3`."""
    if env_id.endswith("-Cascade-v0"):
        return CascadeForSB3(gym.make(env_id, family=family, **kwargs))
    env = gym.make(env_id, **kwargs)
    return ChannelFirstObservation(FlattenMaskAction(env) if family is None else FamilyAction(env, family))


class SB3VecEnv(VecEnv):
    """An SB3 ``VecEnv`` over the native batched env: flat actions, channel-first images.

    Over a family view (a vector env with ``Discrete(K)`` single actions) the actions are
    ``Discrete(K)`` arms instead, and each info holds its ``"arm"``.

    Every step ends every episode, so ``dones`` is all True and each info holds the SB3
    ``terminal_observation`` (the image that was acted on); the returned observations are the next
    images. ``seed(s)`` seeds sub-environment i with ``s + i`` at the next ``reset``.
    """

    def __init__(self, venv: gym.vector.VectorEnv) -> None:
        self.venv = venv
        h, w, c = venv.single_observation_space.shape
        single = venv.single_action_space
        self._arms = int(single.n) if isinstance(single, spaces.Discrete) else None
        actions = spaces.MultiBinary(FLAT_BITS) if self._arms is None else spaces.Discrete(self._arms)
        super().__init__(venv.num_envs, spaces.Box(0, 255, (c, h, w), np.uint8), actions)
        self._actions: np.ndarray | None = None

    @classmethod
    def make(
        cls, env_id: str = "InstaNAS-FashionMNIST-v0", num_envs: int = 16, family: Any = None, **kwargs: Any
    ) -> SB3VecEnv:
        """The native vector env of ``env_id``; with ``family`` (an ``ArchitectureFamily`` or its file)
        its family view, ``Discrete(K)`` actions."""
        venv = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs).unwrapped
        return cls(venv if family is None else FamilyVectorAction(venv, family))

    @staticmethod
    def _chw(obs: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(obs.transpose(0, 3, 1, 2))

    def reset(self) -> np.ndarray:
        seeds = self._seeds if any(s is not None for s in self._seeds) else None
        options = self._options[0] if self._options and self._options[0] else None
        obs, info = self.venv.reset(seed=seeds, options=options)
        self.reset_infos = [{"image_index": int(i)} for i in info["image_index"]]
        self._reset_seeds()
        self._reset_options()
        return self._chw(obs)

    def step_async(self, actions: np.ndarray) -> None:
        if self._arms is not None:
            self._actions = check_arms(actions, self._arms, (self.num_envs,), "actions")
            return
        actions = flat_actions(actions, (self.num_envs, FLAT_BITS), "actions")
        self._actions = actions.reshape(self.num_envs, *MASK_SHAPE)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_async() must come before step_wait()")
        obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
        self._actions = None
        final = info["final_info"]
        keys = [k for k in final if not k.startswith("_")]
        infos = []
        for i in range(self.num_envs):
            item = {k: final[k][i] for k in keys}
            item["terminal_observation"] = info["final_obs"][i].transpose(2, 0, 1)
            item["TimeLimit.truncated"] = bool(truncated[i])
            infos.append(item)
        return self._chw(obs), rewards.astype(np.float32), terminated | truncated, infos

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.venv.unwrapped, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv.unwrapped, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        result = getattr(self.venv.unwrapped, method_name)(*method_args, **method_kwargs)
        return [result] * len(self._get_indices(indices))

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False] * len(self._get_indices(indices))

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.venv.render()
        return list(frames) if frames is not None else [None] * self.num_envs


def stop_first_to_arm0(actions: np.ndarray, stage: np.ndarray, k: int) -> np.ndarray:
    """STOP (``k``) where no architecture ran yet -> architecture 0: SB3's policies cannot mask it."""
    actions = np.asarray(actions, dtype=np.int64).reshape(-1)
    return np.where((actions == k) & (np.asarray(stage).reshape(-1) == 0), 0, actions)


def channel_first_obs(obs: dict[str, np.ndarray], batched: bool) -> dict[str, np.ndarray]:
    image = obs["image"]
    axes = (0, 3, 1, 2) if batched else (2, 0, 1)
    return {**obs, "image": np.ascontiguousarray(image.transpose(axes))}


def channel_first_space(space: spaces.Dict) -> spaces.Dict:
    h, w, c = space["image"].shape
    return spaces.Dict({**space.spaces, "image": spaces.Box(0, 255, (c, h, w), np.uint8)})


class CascadeForSB3(gym.Wrapper):
    """The cascade env for SB3: channel-first image; STOP first runs architecture 0 instead."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = channel_first_space(env.observation_space)
        self._stage = 0

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._stage = int(obs["stage"])
        return channel_first_obs(obs, False), info

    def step(self, action: Any):
        action = int(stop_first_to_arm0(np.asarray([action]), np.asarray([self._stage]), self.action_space.n - 1)[0])
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._stage = int(obs["stage"])
        return channel_first_obs(obs, False), reward, terminated, truncated, info


class SB3CascadeVecEnv(VecEnv):
    """The native cascade vector env as an SB3 ``VecEnv`` (see :class:`CascadeForSB3`); each ended
    sub-environment's info holds its reward terms and the SB3 ``terminal_observation``."""

    def __init__(self, venv: gym.vector.VectorEnv) -> None:
        self.venv = venv
        super().__init__(venv.num_envs, channel_first_space(venv.single_observation_space), venv.single_action_space)
        self._actions: np.ndarray | None = None
        self._stage = np.zeros(venv.num_envs, dtype=np.int64)

    def reset(self) -> dict[str, np.ndarray]:
        seeds = self._seeds if any(s is not None for s in self._seeds) else None
        obs, info = self.venv.reset(seed=seeds)
        self.reset_infos = [{"image_index": int(i)} for i in info["image_index"]]
        self._reset_seeds()
        self._stage = obs["stage"].copy()
        return channel_first_obs(obs, True)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = stop_first_to_arm0(actions, self._stage, self.action_space.n - 1)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_async() must come before step_wait()")
        obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
        self._actions, self._stage = None, obs["stage"].copy()
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if "final_info" in info:
            final, keys = info["final_info"], [k for k in info["final_info"] if not k.startswith("_")]
            for i in np.flatnonzero(info["_final_info"]):
                infos[i] = {k: final[k][i] for k in keys}
                infos[i]["terminal_observation"] = channel_first_obs(info["final_obs"][i], False)
                infos[i]["TimeLimit.truncated"] = bool(truncated[i])
        return channel_first_obs(obs, True), rewards.astype(np.float32), terminated | truncated, infos

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.venv, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result] * len(self._get_indices(indices))

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False] * len(self._get_indices(indices))

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None] * self.num_envs
