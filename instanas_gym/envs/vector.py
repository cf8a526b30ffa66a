"""A natively batched vector environment: N images, N masks, one supernet call per step."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from instanas_gym.envs.bandit import ImageOrder, InstaNASBandit
from instanas_gym.envs.instanas_env import LatencyBounds, check_common, check_options, check_seed
from instanas_gym.envs.render import draw
from instanas_gym.space.masks import validate_mask
from instanas_gym.space.search_space import MASK_SHAPE
from instanas_gym.utils.checks import check_int

#: Most sub-environments a vector env takes: each step holds num_envs images, masks and infos in
#: memory and runs them as one batch; far more than any batch a CPU or GPU runs at once.
MAX_NUM_ENVS = 1 << 14


def check_num_envs(num_envs: Any) -> int:
    """``num_envs`` as an integer in [1, :data:`MAX_NUM_ENVS`]; ValueError / TypeError name it."""
    n = check_int("num_envs", num_envs)
    if n > MAX_NUM_ENVS:
        raise ValueError(f"num_envs must be at most {MAX_NUM_ENVS} (images per step, held in memory and run as one "
                         f"batch), got {n}")
    return n


class InstaNASVectorEnv(LatencyBounds, VectorEnv):
    """``num_envs`` copies of :class:`~instanas_gym.envs.instanas_env.InstaNASEnv` evaluated in one batched call.

    Every episode is one step, so every step ends every sub-environment: autoreset is
    ``AutoresetMode.SAME_STEP``. ``step`` returns the next images as observations; the images the
    actions were taken on are in ``info["final_obs"]`` and their step infos (rewards' terms,
    correctness, latency...) in ``info["final_info"]``; ``info["image_index"]`` holds the next
    images' indices. This is exactly how ``gymnasium.make_vec(...,
    vectorization_mode="sync", vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})`` lays
    them out, with the same images and rewards for the same seed (sub-environment i is seeded
    ``seed + i``). ``num_envs``: at most :data:`MAX_NUM_ENVS`. Keyword arguments are those of ``InstaNASEnv``.
    """

    metadata = {"render_modes": ["rgb_array"], "autoreset_mode": AutoresetMode.SAME_STEP}
    #: What builds ``self.bandit`` from the keyword arguments.
    bandit_class: type[InstaNASBandit] = InstaNASBandit

    def __init__(
        self, num_envs: int = 1, order: ImageOrder = "random", render_mode: str | None = None, **kwargs: Any
    ) -> None:
        num_envs = check_num_envs(num_envs)
        check_common(order, render_mode, self.metadata["render_modes"])
        self.bandit = self.bandit_class(**kwargs)
        self.num_envs = num_envs
        self.order: ImageOrder = order
        self.render_mode = render_mode
        self.single_observation_space = spaces.Box(0, 255, self.bandit.data.spec.image_shape, np.uint8)
        self.single_action_space = spaces.MultiBinary(MASK_SHAPE)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._rngs: list[np.random.Generator] = [seeding.np_random()[0] for _ in range(num_envs)]
        self._cursors = np.zeros(num_envs, dtype=np.int64)
        self._indices: np.ndarray | None = None
        self._last_masks: np.ndarray | None = None

    # ---- Gymnasium API --------------------------------------------------------------------------
    def _draw(self) -> np.ndarray:
        out = np.empty(self.num_envs, dtype=np.int64)
        for i, rng in enumerate(self._rngs):
            out[i], self._cursors[i] = self.bandit.draw(rng, self.order, int(self._cursors[i]))
        return out

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        options = check_options(options)
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, (list, tuple, np.ndarray)):
            seeds = [check_seed(s) for s in seed]
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed: got {len(seeds)} seeds for {self.num_envs} environments")
        else:
            first = check_seed(seed)
            seeds = [first + i for i in range(self.num_envs)]
        for i, s in enumerate(seeds):
            if s is not None:
                self._rngs[i], _ = seeding.np_random(s)
                self._cursors[i] = 0
        if seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(seeds[0])
        if "index" in options:
            indices = self._check_indices(options["index"])
        else:
            indices = self._draw()
        self._indices, self._last_masks = indices, None
        return self.bandit.data.images[indices], self._reset_info(indices)

    def _check_indices(self, index: Any) -> np.ndarray:
        """``options["index"]``: one image index for every sub-environment, or one each."""
        values = list(index) if isinstance(index, (list, tuple, np.ndarray)) else [index] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(f"options['index']: got {len(values)} indices for {self.num_envs} environments")
        return np.array([self.bandit.check_index(v) for v in values], dtype=np.int64)

    def step(self, actions):
        indices = self._awaiting()
        masks = validate_mask(actions, batched=True, name="actions")
        if masks.shape[0] != self.num_envs:
            raise ValueError(f"actions must have shape ({self.num_envs}, 17, 5), got {masks.shape}")
        return self._step_with(self.bandit.evaluate(indices, masks), masks)

    def _awaiting(self) -> np.ndarray:
        """The images awaiting actions."""
        if self._indices is None:
            raise RuntimeError("call reset() before step()")
        return self._indices

    def _step_with(self, out: dict[str, Any], masks: np.ndarray):
        """``step``'s return from the bandit's result ``out`` for the masks taken: next images, rewards,
        terminations and infos laid out as Gymnasium's vector envs lay them out."""
        rewards = out.pop("reward").astype(np.float64)
        step_info = self._batch(out)
        final_obs = np.empty(self.num_envs, dtype=object)
        final_obs[:] = list(self.bandit.data.images[self._indices])
        all_true = np.ones(self.num_envs, dtype=bool)
        new = self._draw()
        self._indices, self._last_masks = new, masks
        info = {"final_obs": final_obs, "_final_obs": all_true.copy(), "final_info": step_info, "_final_info": all_true.copy()}
        info.update(self._reset_info(new))
        terminated = np.ones(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        return self.bandit.data.images[new], rewards, terminated, truncated, info

    def evaluate_current(self, masks: np.ndarray) -> dict[str, Any]:
        """Reward terms and infos of ``masks`` (num_envs, 17, 5) on the images awaiting actions,
        without stepping: what a self-critical baseline needs (the same images under another mask)."""
        if self._indices is None:
            raise RuntimeError("call reset() before evaluate_current()")
        masks = validate_mask(masks, batched=True, name="masks")
        if masks.shape[0] != self.num_envs:
            raise ValueError(f"masks must have shape ({self.num_envs}, 17, 5), got {masks.shape}")
        return self.bandit.evaluate(self._indices, masks)

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode != "rgb_array":
            return None
        if self._indices is None:
            raise RuntimeError("call reset() before render()")
        space = self.bandit.model.space
        masks = [None] * self.num_envs if self._last_masks is None else list(self._last_masks)
        return tuple(
            draw(self.bandit.data.images[i], m, None if m is None else space.effective_mask(m))
            for i, m in zip(self._indices, masks)
        )

    # ---- info layout ----------------------------------------------------------------------------
    def _batch(self, out: dict[str, Any]) -> dict[str, Any]:
        """Arrays of length num_envs with a '_key' mask each, as Gymnasium's vector envs lay infos out."""
        info: dict[str, Any] = {}
        for key, value in out.items():
            if isinstance(value, np.ndarray):
                arr = value
            elif isinstance(value, str):
                arr = np.full(self.num_envs, value, dtype=object)
            else:
                arr = np.full(self.num_envs, value, dtype=type(value))
            info[key], info[f"_{key}"] = arr, np.ones(self.num_envs, dtype=bool)
        return info

    def _reset_info(self, indices: np.ndarray) -> dict[str, Any]:
        return {"image_index": indices.copy(), "_image_index": np.ones(self.num_envs, dtype=bool)}
