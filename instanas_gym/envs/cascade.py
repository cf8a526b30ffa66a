"""The cascade view: per image, run architectures of a family one after another, look at each answer,
and stop when it is good enough. A sequential decision, not a one-step bandit.

:class:`CascadeEnv` (one image) and :class:`CascadeVectorEnv` (``num_envs`` images, natively batched)
share :class:`CascadeBandit`, which answers "architecture k on image i" from the supernet's stored
outcomes (lookup mode, the default: :mod:`instanas_gym.model.outcomes`) or by running the supernet
(live), and rewards a finished cascade.

## Action Space
``Discrete(K + 1)``: ``k < K`` runs the family's architecture k next; ``K`` is STOP, allowed once one
has run (STOP first raises ValueError). An architecture may run again: it answers the same and its
latency counts again.

## Observation Space
``Dict``: ``image`` uint8 (H, W, C); ``stage`` (Discrete(T + 1)): architectures run so far;
``arms`` (MultiDiscrete([K + 1] * T)): the architecture run at each stage, K where none ran yet;
``probs`` float32 (T, C): the softmax output of each stage run (0 where none), rounded to float16 in
both modes so that lookup and live observations are equal; ``summary`` float32 (T, 3): per stage
run, its top-1 probability, the margin to the second and the entropy (nats); ``latency_ms`` float32
(1,): the table's latency of the networks run so far (ms). SB3's ``MultiInputPolicy`` takes it
(channel-first through :func:`~instanas_gym.envs.wrappers.make_sb3_env`).

## Rewards
Once, when the episode ends (every other step: 0). The prediction is the last architecture's
(``prediction="mean"``: the argmax of the mean of the softmax outputs of all that ran). With the
table's whole-network latency N_k of each architecture run, the cascade's latency is
``sum N_k + decisions x controller_ms`` (``network_latency_ms``), and the reward's L is that minus the network's
fixed cost (stem, head) once: for a cascade of one architecture exactly the single-network reward's
L (its 17 cells), so both views share the bounds. Then as in the single env:

    R = R_T * R_A(L) if right, else R_T        (R_T = +-c; R_A: the parabola, or "monotone")

## Episode End
Terminated on STOP, or after the T-th architecture ran. ``info`` at the end holds every reward
term, ``correct``, ``label``, ``prediction``, ``confidence``, ``latency_ms`` (L),
``network_latency_ms``, ``stages`` and ``arms`` (the architectures run, in order); every step's info
holds the step's ``arm`` (-1 for STOP) and ``stage``.

## Arguments
``family`` (an :class:`~instanas_gym.space.family.ArchitectureFamily` or its file; None: the bundled
cascade family for Fashion-MNIST, else the fastest uniform path, the MobileNetV2 path and all ops),
``stages`` (T, default 3), ``lookup`` (default True), ``prediction`` ("last" or "mean"),
``controller_ms`` (a policy's own cost per decision, counted at every step, STOP included), ``rebuild`` (recompute
stored
outcomes), ``order``, and those of :class:`~instanas_gym.envs.bandit.InstaNASBandit`.

## Version History
* v0: first release.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from instanas_gym.envs.bandit import ImageOrder, InstaNASBandit
from instanas_gym.envs.instanas_env import check_common, check_options, check_seed
from instanas_gym.model.outcomes import softmax_summary
from instanas_gym.space.family import ArchitectureFamily, as_family, default_cascade_family
from instanas_gym.utils.checks import check_int, check_number

Prediction = Literal["last", "mean"]
PREDICTIONS = ("last", "mean")


class CascadeBandit:
    """A family's answers on one split and the reward of a finished cascade.

    Args: ``family``, ``stages``, ``lookup``, ``prediction``, ``controller_ms``, ``rebuild``,
    ``progress`` (a bar while outcomes are computed) and those of
    :class:`~instanas_gym.envs.bandit.InstaNASBandit` (see the module docstring).
    """

    def __init__(
        self, family: ArchitectureFamily | str | os.PathLike | None = None, stages: int = 3, lookup: bool = True,
        prediction: Prediction = "last", controller_ms: float = 0.0, rebuild: bool = False, progress: bool = True,
        **bandit_kwargs: Any,
    ) -> None:
        self.stages = check_int("stages", stages)
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if not isinstance(lookup, bool):
            raise TypeError(f"lookup must be True or False, got {lookup!r}")
        self.prediction: Prediction = prediction
        self.controller_ms = float(check_number("controller_ms", controller_ms, low=0))
        self.bandit = InstaNASBandit(**bandit_kwargs)
        bandit = self.bandit
        self.family = default_cascade_family(bandit.dataset, bandit.model.space, bandit.table) if family is None \
            else as_family(family)
        if self.family.dataset is not None and self.family.dataset != bandit.dataset:
            raise ValueError(f"family: its architectures are of a {self.family.dataset} supernet, this one is {bandit.dataset}")
        self.k, self.classes = self.family.k, bandit.data.spec.num_classes
        self.outcomes = None
        if lookup:
            if bandit.supernet_path is None:
                raise ValueError("lookup mode keeps outcomes beside the supernet's checkpoint: pass supernet=PATH, "
                                 "or lookup=False")
            self.outcomes = bandit.outcome_store(progress=progress, rebuild=rebuild).get(self.family.masks)

    @property
    def network_ms(self) -> np.ndarray:
        """(K,) each architecture's whole-network latency by the bandit's current table (ms)."""
        return self.family.network_ms(self.bandit.table)

    def answers(self, indices: np.ndarray, arms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Architecture ``arms[b]`` on image ``indices[b]``: (prediction int64 (B,), confidence float64 (B,),
        softmax float32 (B, C) rounded to float16)."""
        if self.outcomes is not None:
            o = self.outcomes
            return o.prediction[arms, indices], o.confidence[arms, indices], o.probs[arms, indices].astype(np.float32)
        probs = self.bandit.softmax(indices, self.family.masks[arms])
        confidence, prediction = probs.max(1), probs.argmax(1)
        return prediction.astype(np.int64), confidence.astype(np.float64), probs.astype(np.float16).astype(np.float32)

    def finish(self, indices: np.ndarray, arms: np.ndarray, predictions: np.ndarray, confidences: np.ndarray,
               probs: np.ndarray, stages: np.ndarray, decisions: np.ndarray) -> dict[str, Any]:
        """The reward terms and infos of finished cascades: images ``indices`` (B,), the architectures run
        ``arms`` (B, T) (K where none), their ``predictions`` and ``confidences`` (B, T) and ``probs``
        (B, T, C), how many ran, ``stages`` (B,) >= 1, and how many actions were taken, ``decisions`` (B,)."""
        rows = np.arange(len(indices))
        last = stages - 1
        if self.prediction == "last":
            prediction, confidence = predictions[rows, last], confidences[rows, last]
        else:
            ran = np.arange(self.stages)[None] < stages[:, None]
            mean = (probs * ran[..., None]).sum(1) / stages[:, None]
            prediction, confidence = mean.argmax(1), mean.max(1).astype(np.float64)
        ran_ms = np.where(arms < self.k, np.append(self.network_ms, 0.0)[np.minimum(arms, self.k)], 0.0)
        network = ran_ms.sum(1) + self.controller_ms * decisions
        latency = network - self.bandit.table.fixed_ms
        labels = self.bandit.data.labels[indices]
        correct = prediction == labels
        out: dict[str, Any] = self.bandit.reward(correct, latency)
        out.update(correct=correct, label=labels, prediction=prediction, confidence=confidence, latency_ms=latency,
                   network_latency_ms=network, stages=stages.copy(), arms=[list(a[: s]) for a, s in zip(arms, stages)])
        out.update(self.bandit.reward.constants())
        return out

    def spaces(self) -> tuple[spaces.Dict, spaces.Discrete]:
        """(observation space, action space) of one cascade."""
        t, c = self.stages, self.classes
        obs = spaces.Dict({
            "image": spaces.Box(0, 255, self.bandit.data.spec.image_shape, np.uint8),
            "stage": spaces.Discrete(t + 1),
            "arms": spaces.MultiDiscrete([self.k + 1] * t),
            "probs": spaces.Box(0.0, 1.0, (t, c), np.float32),
            "summary": spaces.Box(0.0, np.float32(np.log(c)) + 1.0, (t, 3), np.float32),
            "latency_ms": spaces.Box(0.0, np.inf, (1,), np.float32),
        })
        return obs, spaces.Discrete(self.k + 1)


class _State:
    """What ``n`` cascades have seen so far."""

    def __init__(self, n: int, stages: int, k: int, classes: int) -> None:
        self.index = np.zeros(n, dtype=np.int64)
        self.stage = np.zeros(n, dtype=np.int64)
        self.arms = np.full((n, stages), k, dtype=np.int64)
        self.prediction = np.zeros((n, stages), dtype=np.int64)
        self.confidence = np.zeros((n, stages), dtype=np.float64)
        self.probs = np.zeros((n, stages, classes), dtype=np.float32)
        self.latency = np.zeros(n, dtype=np.float64)
        self.k = k

    def clear(self, rows: np.ndarray, indices: np.ndarray) -> None:
        self.index[rows], self.stage[rows], self.arms[rows] = indices, 0, self.k
        self.prediction[rows], self.confidence[rows], self.probs[rows], self.latency[rows] = 0, 0.0, 0.0, 0.0

    def observe(self, images: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {"image": images[self.index[rows]], "stage": self.stage[rows].copy(), "arms": self.arms[rows].copy(),
                "probs": self.probs[rows].copy(), "summary": softmax_summary(self.probs[rows]),  # 0 where none ran
                "latency_ms": self.latency[rows, None].astype(np.float32)}


def _check_actions(actions: Any, k: int, n: int, stage: np.ndarray) -> np.ndarray:
    """``actions`` as int64 (n,) in [0, K]; STOP (K) where no architecture ran is refused."""
    arr = np.asarray(actions)
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"actions must be {n} integers in [0, {k}] (architecture, or {k} = STOP), got {arr!r:.80}")
    if ((arr < 0) | (arr > k)).any():
        raise ValueError(f"actions must be in [0, {k}] (architecture, or {k} = STOP), got {np.unique(arr).tolist()}")
    early = np.flatnonzero((arr == k) & (stage == 0))
    if len(early):
        raise ValueError(f"STOP before any architecture ran (sub-environments {early[:8].tolist()}): run one first")
    return arr.astype(np.int64)


def step_cascades(cb: CascadeBandit, st: _State, rows: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, dict]:
    """Apply ``actions`` to the cascades ``rows``: run the chosen architectures, end those that stop or
    reach T. Returns (which rows ended, the finished cascades' reward terms and infos)."""
    run = rows[actions < cb.k]
    if len(run):
        arms = actions[actions < cb.k]
        pred, conf, probs = cb.answers(st.index[run], arms)
        pos = st.stage[run]
        st.arms[run, pos], st.prediction[run, pos], st.confidence[run, pos], st.probs[run, pos] = arms, pred, conf, probs
        st.latency[run] += cb.network_ms[arms]
        st.stage[run] += 1
    stopped = actions == cb.k
    done = stopped | (st.stage[rows] == cb.stages)
    ended = rows[done]
    out = cb.finish(st.index[ended], st.arms[ended], st.prediction[ended], st.confidence[ended], st.probs[ended],
                    st.stage[ended], st.stage[ended] + stopped[done]) if len(ended) else {}
    return done, out


class CascadeEnv(gym.Env):
    """One image per episode, up to ``stages`` architectures of a family (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, order: ImageOrder = "random", **kwargs: Any) -> None:
        check_common(order, None, [])
        self.cascade = CascadeBandit(**kwargs)
        self.bandit = self.cascade.bandit
        self.order = order
        self.observation_space, self.action_space = self.cascade.spaces()
        self._state = _State(1, self.cascade.stages, self.cascade.k, self.cascade.classes)
        self._cursor, self._live = 0, False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        seed, options = check_seed(seed), check_options(options)
        super().reset(seed=seed)
        if seed is not None:
            self._cursor = 0
        if "index" in options:
            index = self.bandit.check_index(options["index"])
        else:
            index, self._cursor = self.bandit.draw(self.np_random, self.order, self._cursor)
        self._state.clear(np.array([0]), np.array([index]))
        self._live = True
        return self._obs(), {"image_index": index}

    def _obs(self) -> dict[str, np.ndarray]:
        obs = self._state.observe(self.bandit.data.images, np.array([0]))
        return {k: (v[0] if k != "stage" else int(v[0])) for k, v in obs.items()}

    def step(self, action: Any):
        if not self._live:
            raise RuntimeError("call reset() before step(); an episode ends on STOP or after the last stage")
        action = _check_actions(np.asarray([action]).reshape(1), self.cascade.k, 1, self._state.stage)
        done, out = step_cascades(self.cascade, self._state, np.array([0]), action)
        arm = int(action[0]) if action[0] < self.cascade.k else -1
        info = {"arm": arm, "stage": int(self._state.stage[0])}
        if not done[0]:
            return self._obs(), 0.0, False, False, info
        self._live = False
        info.update({k: (v[0].item() if isinstance(v, np.ndarray) else v[0] if isinstance(v, list) else v)
                     for k, v in out.items() if k != "reward"})
        return self._obs(), float(out["reward"][0]), True, False, info
