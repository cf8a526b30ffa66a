"""Policies of the cascade view (:mod:`instanas_gym.envs.cascade`): which architecture to run next, or STOP.

* :class:`ThresholdCascade`: no learning, the confidence rule of "Wisdom of Committees" (Wang et al.,
  ICLR 2022): architectures in a fixed order; after each, stop when its top-1 probability reaches
  that stage's threshold. :func:`fit_threshold_cascade` chooses the order and thresholds on the
  search split from stored outcomes, for a latency budget.
* :class:`CascadePolicy`: a network for REINFORCE: what the agent has seen so far (the stages run,
  each one's softmax summary, the latency spent) and, optionally, the image (the controller's body)
  -> logits over the K architectures and STOP; STOP before any architecture ran and an architecture
  that already ran are masked out (they can never help).

A cascade *policy function* maps a batch of cascade observations (the vector env's dict of arrays)
to actions (B,); :func:`run_policy` steps a :class:`~instanas_gym.envs.cascade_vector.CascadeVectorEnv`
with one through given images and returns each image's finished cascade.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from instanas_gym.agents.config import ControllerConfig
from instanas_gym.utils.checks import check_int

CascadeActor = Callable[[dict[str, np.ndarray]], np.ndarray]
"""A batch of cascade observations -> actions (B,) int64 in [0, K]."""


# ---- the threshold rule -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ThresholdCascade:
    """Run ``order[0]``, then ``order[s]`` while stage s - 1's top-1 probability is below ``thresholds[s - 1]``."""

    order: tuple[int, ...]
    """Family indices in stage order (1 to T of them, distinct)."""
    thresholds: tuple[float, ...]
    """One per stage but the last, in [0, 1]."""
    k: int
    """The family's size (K = the STOP action)."""

    def __post_init__(self) -> None:
        if not self.order or len(set(self.order)) != len(self.order) or not all(0 <= a < self.k for a in self.order):
            raise ValueError(f"order must be distinct indices in [0, {self.k}), got {self.order}")
        if len(self.thresholds) != len(self.order) - 1 or not all(0 <= t <= 1 for t in self.thresholds):
            raise ValueError(f"thresholds: {len(self.order) - 1} values in [0, 1] expected, got {self.thresholds}")

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Actions for a batch of observations."""
        stage = np.asarray(obs["stage"])
        top1 = np.asarray(obs["summary"])[np.arange(len(stage)), np.maximum(stage - 1, 0), 0]
        order = np.append(np.asarray(self.order), self.k)  # after the last stage: STOP
        limits = np.append(np.asarray(self.thresholds, dtype=np.float64), -np.inf)
        stop = (stage > 0) & (top1 >= limits[np.maximum(stage - 1, 0)])
        return np.where(stop, self.k, order[np.minimum(stage, len(self.order))]).astype(np.int64)

    def simulate(self, prediction: np.ndarray, confidence: np.ndarray, network_ms: np.ndarray,
                 labels: np.ndarray) -> dict[str, np.ndarray]:
        """Each image's cascade from stored answers (K, N): ``correct`` (N,), ``network_ms`` (N,), ``stages`` (N,)."""
        return simulate(self.order, self.thresholds, prediction, confidence, network_ms, labels)


def simulate(order: tuple[int, ...], thresholds: tuple[float, ...] | np.ndarray, prediction: np.ndarray,
             confidence: np.ndarray, network_ms: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """A threshold cascade on N images from each architecture's stored answers, vectorised
    (see :class:`ThresholdCascade`); ``network_ms`` (K,) whole-network latencies."""
    n = prediction.shape[1]
    stages = np.full(n, len(order), dtype=np.int64)
    for s in range(len(order) - 1, 0, -1):  # the first stage whose confidence reaches its threshold
        stages = np.where(confidence[order[s - 1]] >= thresholds[s - 1], s, stages)
    final = np.asarray(order)[stages - 1]
    cost = np.cumsum(np.asarray(network_ms)[list(order)])
    return {"correct": prediction[final, np.arange(n)] == labels, "network_ms": cost[stages - 1], "stages": stages}


def threshold_frontier(prediction: np.ndarray, confidence: np.ndarray, network_ms: np.ndarray, labels: np.ndarray,
                       stages: int = 3, grid: int = 16) -> list[dict[str, Any]]:
    """Every threshold cascade of at most ``stages`` distinct architectures (every order) with
    thresholds on a grid of ``grid`` confidence quantiles per stage, on the images of the stored
    answers (K, N) (pass the confidence as the cascade's observation shows it, rounded to float16,
    for the rule to act on the test split as fitted); returns the Pareto set in (mean latency, accuracy): dicts of
    ``order``,
    ``thresholds``, ``accuracy`` (fraction), ``latency_ms`` (mean, ms), fastest first."""
    k = prediction.shape[0]
    points = []
    for length in range(1, min(stages, k) + 1):
        for order in itertools.permutations(range(k), length):
            grids = [np.unique(np.quantile(confidence[a], np.linspace(0.0, 1.0, grid))) for a in order[:-1]]
            for thresholds in itertools.product(*grids):
                out = simulate(order, thresholds, prediction, confidence, network_ms, labels)
                points.append({"order": order, "thresholds": tuple(float(t) for t in thresholds),
                               "accuracy": float(out["correct"].mean()), "latency_ms": float(out["network_ms"].mean())})
    points.sort(key=lambda p: (p["latency_ms"], -p["accuracy"]))
    pareto, best = [], -1.0
    for p in points:
        if p["accuracy"] > best:
            pareto.append(p)
            best = p["accuracy"]
    return pareto


def fit_threshold_cascade(frontier: list[dict[str, Any]], k: int, budget_ms: float) -> ThresholdCascade:
    """The most accurate cascade of a :func:`threshold_frontier` whose mean latency is within ``budget_ms``
    (the fastest one when none is)."""
    within = [p for p in frontier if p["latency_ms"] <= budget_ms] or frontier[:1]
    best = max(within, key=lambda p: p["accuracy"])
    return ThresholdCascade(tuple(best["order"]), tuple(best["thresholds"]), k)


class ThresholdPolicy(nn.Module):
    """A :class:`ThresholdCascade` as a network of the policy file's kind: cascade observations ->
    logits (B, K + 1), 0 for the rule's action and -inf elsewhere."""

    def __init__(self, k: int, stages: int, order: tuple[int, ...], thresholds: tuple[float, ...]) -> None:
        super().__init__()
        self.rule = ThresholdCascade(tuple(int(a) for a in order), tuple(float(t) for t in thresholds), k)
        self.k, self.stages = k, check_int("stages", stages)
        if len(order) > stages:
            raise ValueError(f"order: at most {stages} stages, got {len(order)}")
        self.register_buffer("order", torch.tensor([*order, k], dtype=torch.long))
        # the last stage always stops: a bound no top-1 probability is under, finite as stored weights must be
        self.register_buffer("limits", torch.tensor([*thresholds, -1.0], dtype=torch.float32))

    @property
    def config(self) -> dict[str, Any]:
        return {"kind": "thresholds", "k": self.k, "stages": self.stages, "order": list(self.rule.order),
                "thresholds": list(self.rule.thresholds)}

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        stage = obs["stage"].long().reshape(-1)
        prev = (stage - 1).clamp(min=0)
        top1 = obs["summary"].float()[torch.arange(len(stage)), prev, 0]
        stop = (stage > 0) & (top1 >= self.limits[prev])
        action = torch.where(stop, torch.full_like(stage, self.k), self.order[stage.clamp(max=len(self.order) - 1)])
        logits = torch.full((len(stage), self.k + 1), float("-inf"))
        return logits.scatter(1, action.reshape(-1, 1), 0.0)


# ---- the learned policy ------------------------------------------------------------------------------
class CascadePolicy(nn.Module):
    """Cascade observations -> logits (B, K + 1) over the next architecture and STOP (see the module docstring).

    Args:
        k, stages, classes: the family's size, T and the classes (the observation's shapes).
        config: the image body's shape (:class:`~instanas_gym.agents.config.ControllerConfig`);
            None: the policy does not look at the image, only at the answers (it then costs next to nothing).
        in_channels: image channels.
        hidden: width of the hidden layer.
    """

    def __init__(self, k: int, stages: int, classes: int, config: ControllerConfig | None = None,
                 in_channels: int = 1, hidden: int = 64) -> None:
        super().__init__()
        self.k, self.stages, self.classes = check_int("k", k), check_int("stages", stages), check_int("classes", classes)
        self.hidden, self.in_channels, self.controller_config = check_int("hidden", hidden), in_channels, config
        self.body = None
        if config is not None:
            self.body = config.build(in_channels)
            self.body.head = nn.Identity()  # only embed() is used
        features = (stages + 1) + stages * (k + 1) + stages * 3 + 1 + (0 if config is None else config.widths[-1])
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, k + 1))

    @property
    def config(self) -> dict[str, Any]:
        """Plain data that rebuilds this network."""
        cfg = self.controller_config
        return {"kind": "network", "k": self.k, "stages": self.stages, "classes": self.classes, "hidden": self.hidden,
                "in_channels": self.in_channels,
                "body": None if cfg is None else {"widths": list(cfg.widths), "input_size": cfg.input_size}}

    def features(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The observation as one float vector per image."""
        stage = obs["stage"].long().reshape(-1)
        parts = [nn.functional.one_hot(stage, self.stages + 1).float(),
                 nn.functional.one_hot(obs["arms"].long(), self.k + 1).flatten(1).float(),
                 obs["summary"].float().flatten(1), obs["latency_ms"].float().reshape(-1, 1)]
        if self.body is not None:
            parts.append(self.body.embed(obs["image"]))
        return torch.cat(parts, 1)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits (B, K + 1), -inf where an action cannot help (STOP first, an architecture run before)."""
        logits = self.net(self.features(obs))
        ran = nn.functional.one_hot(obs["arms"].long(), self.k + 1)[..., : self.k].amax(1).bool()
        invalid = torch.cat([ran, (obs["stage"].reshape(-1, 1) == 0)], 1)
        return logits.masked_fill(invalid, float("-inf"))


def as_tensors(obs: dict[str, np.ndarray], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """A batch of cascade observations as tensors on ``device``."""
    return {k: torch.as_tensor(np.asarray(v)).to(device) for k, v in obs.items()}


def greedy_actor(network: CascadePolicy) -> CascadeActor:
    """The network's most likely action per observation."""

    @torch.inference_mode()
    def act(obs: dict[str, np.ndarray]) -> np.ndarray:
        was_training = network.training
        network.eval()
        device = next(iter([*network.parameters(), *network.buffers()])).device
        out = network(as_tensors(obs, device)).argmax(1).cpu().numpy()
        network.train(was_training)
        return out

    return act


class _Decision(nn.Module):
    """One decision of a :class:`CascadePolicy` as a graph of the image alone (the other features fixed):
    what :func:`decision_ms` times."""

    def __init__(self, policy: CascadePolicy) -> None:
        super().__init__()
        self.policy = policy
        n = policy.net[0].in_features - (0 if policy.body is None else policy.controller_config.widths[-1])
        self.register_buffer("features", torch.zeros(1, n))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.features.expand(len(images), -1)
        if self.policy.body is None:
            x = x + images.float().mean() * 0  # the graph's input must reach its output
        else:
            x = torch.cat([x, self.policy.body.embed(images)], 1)
        return self.policy.net(x)


def decision_ms(network: nn.Module, image_shape: tuple[int, int, int], runtime: str = "onnxruntime",
                threads: int = 1) -> float:
    """A cascade policy's cost per decision at batch 1 (ms) in ``runtime``: 0 for a threshold rule (a
    comparison), else its network timed as :func:`~instanas_gym.latency.onnx.module_latency_ms` times
    any policy (the image's embedding included in every decision, as it runs here)."""
    if isinstance(network, ThresholdPolicy):
        return 0.0
    from instanas_gym.latency.onnx import module_latency_ms

    return module_latency_ms(_Decision(network).eval(), image_shape, "logits", runtime, threads)


def run_policy(actor: CascadeActor, venv: Any, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Every image of ``indices`` through one cascade of ``actor`` on ``venv`` (a
    :class:`~instanas_gym.envs.cascade_vector.CascadeVectorEnv` with ``len(indices)`` sub-environments):
    ``correct``, ``network_ms``, ``latency_ms``, ``stages``, ``reward`` (N,) and ``arms`` (N lists)."""
    obs, _ = venv.reset(options={"index": indices})
    n, done = len(indices), np.zeros(len(indices), dtype=bool)
    out: dict[str, Any] = {key: np.zeros(n) for key in ("correct", "network_ms", "latency_ms", "stages", "reward")}
    out["arms"] = [None] * n
    while not done.all():
        actions = actor(obs)
        actions = np.where(done, np.where(obs["stage"] == 0, 0, venv.cascade.k), actions)  # ended: any valid action
        obs, rewards, ended, _, info = venv.step(actions)
        new = ended & ~done
        if new.any():
            final = info["final_info"]
            for key, name in (("correct", "correct"), ("network_ms", "network_latency_ms"),
                              ("latency_ms", "latency_ms"), ("stages", "stages")):
                out[key][new] = final[name][new]
            out["reward"][new] = rewards[new]
            for i in np.flatnonzero(new):
                out["arms"][i] = list(final["arms"][i])
        done |= ended
    out["correct"], out["stages"] = out["correct"].astype(bool), out["stages"].astype(np.int64)
    return out


def fit_threshold_policy(outcomes: Any, network_ms: np.ndarray, stages: int, budget_ms: float,
                         grid: int = 16) -> tuple[ThresholdPolicy, list[dict[str, Any]]]:
    """The most accurate threshold cascade within ``budget_ms`` (mean whole-network latency, ms) on the
    images of ``outcomes`` (a family's stored answers on the search split,
    :class:`~instanas_gym.model.outcomes.Outcomes`), and the Pareto set it was chosen from
    (:func:`threshold_frontier`)."""
    confidence = outcomes.confidence.astype(np.float16).astype(np.float64)  # as the observations show it
    frontier = threshold_frontier(outcomes.prediction, confidence, network_ms, outcomes.labels, stages, grid)
    rule = fit_threshold_cascade(frontier, len(network_ms), budget_ms)
    return ThresholdPolicy(rule.k, stages, rule.order, rule.thresholds), frontier
