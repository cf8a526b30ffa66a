"""The cascade view, natively batched: ``num_envs`` cascades stepped together, each architecture run
once per step on the images that chose it (lookup mode: looked up)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from instanas_gym.envs.bandit import ImageOrder
from instanas_gym.envs.cascade import CascadeBandit, _check_actions, _State, step_cascades
from instanas_gym.envs.instanas_env import check_common, check_options, check_seed
from instanas_gym.utils.checks import check_int

#: More sub-environments than this is a mistake (each keeps its stages' softmax outputs).
MAX_ENVS = 1 << 20


class CascadeVectorEnv(VectorEnv):
    """``num_envs`` copies of :class:`~instanas_gym.envs.cascade.CascadeEnv`, stepped in one call.

    Autoreset is ``AutoresetMode.SAME_STEP``: a sub-environment whose cascade ends returns the next
    image's first observation at once, with the ended one's observation in ``info["final_obs"]`` and
    its reward terms in ``info["final_info"]`` (masked by ``"_final_info"``). Every step's info holds
    each sub-environment's ``arm`` (-1 for STOP) and ``stage``. ``reset(options={"index": ...})`` sets
    every sub-environment's image (one index, or one each), e.g. the same image for several
    sub-environments to compare their cascades. Sub-environment i is seeded ``seed + i``. Keyword
    arguments are those of ``CascadeEnv``.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 1, order: ImageOrder = "random", **kwargs: Any) -> None:
        num_envs = check_int("num_envs", num_envs)
        if num_envs > MAX_ENVS:
            raise ValueError(f"num_envs must be at most {MAX_ENVS}, got {num_envs}")
        check_common(order, None, [])
        self.cascade = CascadeBandit(**kwargs)
        self.bandit = self.cascade.bandit
        self.num_envs, self.order = num_envs, order
        self.single_observation_space, self.single_action_space = self.cascade.spaces()
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._rngs = [seeding.np_random()[0] for _ in range(num_envs)]
        self._cursors = np.zeros(num_envs, dtype=np.int64)
        self._state = _State(num_envs, self.cascade.stages, self.cascade.k, self.cascade.classes)
        self._all = np.arange(num_envs)
        self._started = False

    def _draw(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty(len(rows), dtype=np.int64)
        for j, i in enumerate(rows):
            out[j], self._cursors[i] = self.bandit.draw(self._rngs[i], self.order, int(self._cursors[i]))
        return out

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        options = check_options(options)
        if seed is not None:
            seeds = [check_seed(s) for s in seed] if isinstance(seed, (list, tuple, np.ndarray)) else \
                [check_seed(seed) + i for i in range(self.num_envs)]
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed: got {len(seeds)} seeds for {self.num_envs} environments")
            for i, s in enumerate(seeds):
                if s is not None:
                    self._rngs[i], _ = seeding.np_random(s)
                    self._cursors[i] = 0
            self._np_random, self._np_random_seed = seeding.np_random(seeds[0])
        if "index" in options:
            values = np.broadcast_to(np.asarray(options["index"], dtype=object), (self.num_envs,))
            indices = np.array([self.bandit.check_index(v) for v in values], dtype=np.int64)
        else:
            indices = self._draw(self._all)
        self._state.clear(self._all, indices)
        self._started = True
        return self._state.observe(self.bandit.data.images, self._all), self._reset_info(self._all)

    def step(self, actions: Any):
        if not self._started:
            raise RuntimeError("call reset() before step()")
        st, n = self._state, self.num_envs
        actions = _check_actions(actions, self.cascade.k, n, st.stage)
        done, out = step_cascades(self.cascade, st, self._all, actions)
        rewards = np.zeros(n, dtype=np.float64)
        info: dict[str, Any] = {"arm": np.where(actions < self.cascade.k, actions, -1), "stage": st.stage.copy()}
        info |= {"_arm": np.ones(n, dtype=bool), "_stage": np.ones(n, dtype=bool)}
        ended = self._all[done]
        if len(ended):
            rewards[ended] = out.pop("reward")
            final_obs = np.empty(n, dtype=object)
            observed = st.observe(self.bandit.data.images, ended)
            for j, i in enumerate(ended):
                final_obs[i] = {k: v[j] for k, v in observed.items()}
            info |= {"final_obs": final_obs, "_final_obs": done.copy(),
                     "final_info": self._final_info(out, ended), "_final_info": done.copy()}
            st.clear(ended, self._draw(ended))
            info |= self._reset_info(ended)
        return st.observe(self.bandit.data.images, self._all), rewards, done, np.zeros(n, dtype=bool), info

    def _final_info(self, out: dict[str, Any], ended: np.ndarray) -> dict[str, Any]:
        """The ended cascades' infos as arrays of length num_envs, each with its '_key' mask."""
        n, mask = self.num_envs, np.zeros(self.num_envs, dtype=bool)
        mask[ended] = True
        info: dict[str, Any] = {}
        for key, value in out.items():
            if isinstance(value, (np.ndarray, list)):
                arr = np.zeros(n, dtype=object if isinstance(value, list) else np.asarray(value).dtype)
                arr[ended] = value if isinstance(value, np.ndarray) else _objects(value)
            else:
                arr = np.full(n, value, dtype=object if isinstance(value, str) else type(value))
            info[key], info[f"_{key}"] = arr, mask.copy()
        return info

    def _reset_info(self, rows: np.ndarray) -> dict[str, Any]:
        index, mask = np.zeros(self.num_envs, dtype=np.int64), np.zeros(self.num_envs, dtype=bool)
        index[rows], mask[rows] = self._state.index[rows], True
        return {"image_index": index, "_image_index": mask}


def _objects(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out
