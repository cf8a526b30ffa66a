"""An instance-aware agent that routes each image to one of a family of K fixed architectures.

A REINFORCE controller over the 85 bits of a mask tends to collapse onto one to three masks. The
router takes a different path: the architectures are fixed first (a family of K masks of the
supernet, :func:`select_family`), and a small network learns, by supervision, the probability that
each of them classifies a given image right (:class:`Router`, :func:`train_router`; the targets are
each architecture's correctness on the training images, so the router never sees a class label and
needs none at inference). Per image it then runs the architecture with the largest predicted
correctness minus a latency price (:func:`route`); the price is chosen so that the mean latency on
the search split meets a budget (:func:`price_for_budget`). :func:`fit_router` does all of it on the
search split; the test split is for judging (``instance_aware.instance_awareness``).

Units: latency in ms (the latency table's, whole network, batch 1), accuracies and probabilities as
fractions (0-1), prices in 1/ms (one unit of predicted correctness is worth ``1 / price`` ms).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from instanas_gym.agents.config import ControllerConfig
from instanas_gym.latency.onnx import module_latency_ms
from instanas_gym.space.data import DatasetSpec
from instanas_gym.space.data import augment as augment_batch
from instanas_gym.space.masks import validate_mask
from instanas_gym.utils.checks import check_int, check_number

if TYPE_CHECKING:
    from instanas_gym.agents.policy import Policy

ROUTER_FORMAT = "instanas-router-v1"


# ---- the router ----------------------------------------------------------------------------------
class Router(nn.Module):
    """Image -> logits (B, K) of P(architecture k of the family classifies this image right).

    The body is the controller's (:class:`~instanas_gym.agents.controller.Controller` built from
    ``config``, read through its :meth:`~instanas_gym.agents.controller.Controller.embed`; its
    85-way mask head is not used and is dropped), the head a linear layer to K outputs.

    Args:
        config: the body's shape (``ControllerConfig(widths=(8, 16, 32), input_size=14)`` is the
            demo controller's 0.65-MMAC size on 28 x 28 images).
        in_channels: image channels.
        k: family size (outputs).
    """

    def __init__(self, config: ControllerConfig, in_channels: int, k: int) -> None:
        super().__init__()
        self.k = check_int("k", k)
        self.in_channels = check_int("in_channels", in_channels)
        self.controller_config = config
        self.body = config.build(in_channels)
        self.body.head = nn.Identity()  # the mask head; only embed() is used
        self.head = nn.Linear(config.widths[-1], self.k)

    @property
    def config(self) -> dict[str, Any]:
        """Plain data that rebuilds this router (what :func:`save_router` stores)."""
        return {"widths": list(self.controller_config.widths), "input_size": self.controller_config.input_size,
                "in_channels": self.in_channels, "k": self.k}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` as the controller takes them: uint8 (B, H, W, C) or (B, C, H, W), or float in
        [0, 1]. Returns logits (B, K)."""
        return self.head(self.body.embed(images))


class _RoutingGraph(nn.Module):
    """The router plus the routing rule, as deployed: uint8 images -> chosen family index (B,) int64."""

    def __init__(self, router: Router, latency_ms: np.ndarray, price_per_ms: float) -> None:
        super().__init__()
        self.router = router
        self.register_buffer("cost", torch.as_tensor(price_per_ms * np.asarray(latency_ms, np.float64)).float())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.argmax(torch.sigmoid(self.router(images)) - self.cost, dim=1)


class RoutedController(nn.Module):
    """The router, its routing rule and its family as a controller: uint8 images -> mask logits
    (B, 17, 5), +1 where the routed member runs an op and -1 where it does not. What
    :func:`~instanas_gym.deploy.export.export_model` takes as a controller, so an
    :class:`~instanas_gym.deploy.engine.InstaNASModel` serves a router like any controller (its
    greedy mask, logit >= 0, is the routed member's)."""

    def __init__(self, router: Router, family_masks: np.ndarray, latency_ms: np.ndarray, price_per_ms: float) -> None:
        super().__init__()
        masks = validate_mask(family_masks, batched=True, name="family_masks").astype(np.float32)
        if len(masks) != router.k:
            raise ValueError(f"family_masks ({len(masks)}) and the router ({router.k}) disagree on K")
        self.routing = _RoutingGraph(router, latency_ms, price_per_ms)
        self.register_buffer("signs", torch.from_numpy(2.0 * masks - 1.0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.signs[self.routing(images)]


def router_latency_ms(
    router: Router,
    image_shape: tuple[int, int, int],
    runtime: str = "torch",
    threads: int = 1,
    repeats: int = 50,
    latency_ms: np.ndarray | None = None,
    price_per_ms: float = 0.0,
) -> float:
    """Median ms of the router and its routing rule on one image (batch 1) in ``runtime``: "torch"
    (eager) or "onnxruntime" (the exported graph, uint8 images in, the chosen index out), with
    ``threads`` threads; as ``evaluation.controller_latency_ms`` times a controller. The weights do
    not change the time, so an untrained router of the same shape times the same."""
    lat = np.zeros(router.k) if latency_ms is None else np.asarray(latency_ms, dtype=np.float64)
    graph = _RoutingGraph(router, lat, price_per_ms).eval()
    return module_latency_ms(graph, image_shape, "architecture", runtime, threads, repeats)


# ---- training ------------------------------------------------------------------------------------
def _nchw(images: np.ndarray) -> torch.Tensor:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


@torch.inference_mode()
def predict_correct(router: Router, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """The router's predicted P(right) (float64 (N, K), fractions) for uint8 images (N, H, W, C), in
    eval mode (the router's mode is restored after)."""
    was_training = router.training
    router.eval()
    x = _nchw(images)
    out = [torch.sigmoid(router(x[i : i + batch_size])).double().numpy() for i in range(0, len(x), batch_size)]
    router.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, router.k))


def train_router(
    router: Router,
    images: np.ndarray,
    correct: np.ndarray,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
    augment_spec: DatasetSpec | None = None,
    init_bias: bool = True,
    log: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``router`` (in place) to predict which architectures classify each image right.

    Binary cross-entropy of the K logits against ``correct``, averaged over images and
    architectures; Adam at ``lr``; each epoch one pass over the images in an order drawn from
    ``seed`` (the same router, data and seed give the same weights). Only the architectures'
    correctness is a target: class labels are never an input, and the router needs none to route.

    Args:
        router: a :class:`Router` with K outputs.
        images: uint8 (N, H, W, C).
        correct: bool (K, N), whether family member k classifies image n right.
        epochs: passes over the images (>= 1).
        lr: Adam's learning rate.
        batch_size: images per step.
        seed: of the order of images (and of the augmentation).
        augment_spec: augment every batch as training a supernet on that dataset does (random crop,
            flip, cutout of ``data.augment``); None (default): no augmentation. Correctness was
            measured on the plain image, so this is a regulariser, not free data.
        init_bias: set the head's bias to the log-odds of each member's share of right images first
            (the prediction starts at the base rates).
        log: called with each epoch's dict as it ends.

    Returns:
        one dict per epoch: ``epoch`` (1-based), ``loss`` (mean binary cross-entropy, nats),
        ``seconds``. The router is left in eval mode.
    """
    x = _nchw(images)
    correct = np.asarray(correct)
    if correct.shape != (router.k, len(x)):
        raise ValueError(f"correct must be (K, N) = ({router.k}, {len(x)}), got {correct.shape}")
    epochs, batch_size = check_int("epochs", epochs), check_int("batch_size", batch_size)
    lr = check_number("lr", lr, 0.0, low_open=True)
    y = torch.from_numpy(correct.T.astype(np.float32))
    if init_bias:
        share = y.mean(0).clamp(1e-3, 1 - 1e-3)
        with torch.no_grad():
            router.head.bias.copy_(torch.log(share / (1 - share)))
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(router.parameters(), lr=lr)
    history: list[dict[str, Any]] = []
    router.train()
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        loss = _epoch(router, optimizer, x, y, batch_size, augment_spec, gen)
        history.append({"epoch": epoch, "loss": loss, "seconds": time.perf_counter() - start})
        if log is not None:
            log(history[-1])
    router.eval()
    return history


def _epoch(router: Router, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, batch_size: int,
           augment_spec: DatasetSpec | None, gen: torch.Generator) -> float:
    """One pass over the images in an order drawn from ``gen``; the mean binary cross-entropy (nats)."""
    total = 0.0
    order = torch.randperm(len(x), generator=gen)
    for i in range(0, len(x), batch_size):
        idx = order[i : i + batch_size]
        batch = x[idx] if augment_spec is None else augment_batch(x[idx], augment_spec, gen)
        loss = F.binary_cross_entropy_with_logits(router(batch), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(idx)
    return total / len(x)


# ---- routing -------------------------------------------------------------------------------------
def _check_routing(probs: np.ndarray, latency_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs, lat = np.asarray(probs, dtype=np.float64), np.asarray(latency_ms, dtype=np.float64)
    if probs.ndim != 2 or lat.shape != probs.shape[1:] or not len(lat):
        raise ValueError(f"probs must be (B, K) and latency_ms (K,) with K >= 1, got {probs.shape}, {lat.shape}")
    if not np.isfinite(lat).all():
        raise ValueError("latency_ms must be finite")
    return probs, lat


def route(probs: np.ndarray, latency_ms: np.ndarray, price_per_ms: float) -> np.ndarray:
    """Per image the family index k (int64 (B,)) with the largest ``probs[:, k] - price_per_ms *
    latency_ms[k]``: predicted P(right) (fraction) minus the latency's price (1/ms x ms). Ties go to
    the lower index (:func:`fit_router` orders its family fastest first). Price 0 picks the most
    likely right; a high enough price the fastest member."""
    probs, lat = _check_routing(probs, latency_ms)
    price = check_number("price_per_ms", price_per_ms, 0.0)
    return np.argmax(probs - price * lat[None], axis=1).astype(np.int64)


def routed_latency_ms(probs: np.ndarray, latency_ms: np.ndarray, price_per_ms: float) -> float:
    """Mean latency (ms) of the members :func:`route` picks for these images; non-increasing in the price."""
    lat = np.asarray(latency_ms, dtype=np.float64)
    return float(lat[route(probs, lat, price_per_ms)].mean())


def price_for_budget(probs: np.ndarray, latency_ms: np.ndarray, budget_ms: float, tol: float = 1e-9) -> float:
    """The smallest price (1/ms) at which :func:`route` meets ``budget_ms`` on these images: mean
    routed latency <= budget.

    Bisection on [0, hi], hi = 2 / (smallest latency gap between the fastest member and a slower
    one): at any price above 1 / gap a difference of predicted P(right) (at most 1) can no longer
    pay for a slower member, so every image goes to the fastest. It stops when the bracket is
    narrower than ``tol`` x hi and returns its upper end, which meets the budget; the price
    ``tol`` x hi lower does not (mean routed latency is a non-increasing step function of the price).

    Args:
        probs: (N, K) predicted P(right) on the images the budget is met on (the search split).
        latency_ms: (K,) latency of each member (ms).
        budget_ms: the mean latency wanted (ms).

    Returns:
        0.0 when routing by probability alone meets the budget, else the price.

    Raises:
        ValueError: when ``budget_ms`` is below the fastest member's latency (no price meets it).
    """
    probs, lat = _check_routing(probs, latency_ms)
    budget = check_number("budget_ms", budget_ms)
    if not len(probs):
        raise ValueError("probs holds no images")
    if budget < lat.min():
        raise ValueError(f"budget_ms {budget:.4f} ms is below the fastest member's {lat.min():.4f} ms: no price meets it")
    if routed_latency_ms(probs, lat, 0.0) <= budget:
        return 0.0
    gaps = lat[lat > lat.min()] - lat.min()
    lo, hi = 0.0, 2.0 / float(gaps.min())
    width = tol * hi
    while hi - lo > width:
        mid = 0.5 * (lo + hi)
        if routed_latency_ms(probs, lat, mid) <= budget:
            hi = mid
        else:
            lo = mid
    return hi


def _members(router: Router, family_masks: np.ndarray, per_member: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The family's masks (uint8 (K, 17, 5)) and one value per member (float64 (K,), ``name`` in
    errors), checked to agree with the router's K outputs."""
    masks = validate_mask(family_masks, batched=True, name="family_masks").astype(np.uint8)
    values = np.asarray(per_member, dtype=np.float64)
    if values.shape != (len(masks),) or len(masks) != router.k:
        raise ValueError(f"family_masks ({len(masks)}), {name} {values.shape} and the router ({router.k}) disagree on K")
    return masks, values


def router_policy(router: Router, family_masks: np.ndarray, latency_ms: np.ndarray, price_per_ms: float) -> Policy:
    """The routing policy: uint8 images (B, H, W, C) -> the routed members' masks, uint8 (B, 17, 5)."""
    masks, lat = _members(router, family_masks, latency_ms, "latency_ms")
    route(np.zeros((1, len(lat))), lat, price_per_ms)  # checks the price

    def policy(images: np.ndarray) -> np.ndarray:
        return masks[route(predict_correct(router, images), lat, price_per_ms)]

    return policy


def expected_rewards(probs: np.ndarray, reward_arch: np.ndarray, correct_reward: float) -> np.ndarray:
    """The env reward each image expects from each member (B, K), given the predicted P(right)
    ``probs`` (B, K) and each member's R_A (K,) at the reward's bounds: the reward is c R_A when
    right and -c when wrong (c = ``correct_reward``), so E[R_k] = c (p_k (R_A_k + 1) - 1)."""
    probs, r_arch = np.asarray(probs, dtype=np.float64), np.asarray(reward_arch, dtype=np.float64)
    if probs.ndim != 2 or r_arch.shape != probs.shape[1:] or not len(r_arch) or not np.isfinite(r_arch).all():
        raise ValueError(f"probs must be (B, K) and reward_arch (K,) finite, K >= 1, got {probs.shape}, {r_arch.shape}")
    c = check_number("correct_reward", correct_reward, 0.0, low_open=True)
    return c * (probs * (r_arch[None] + 1.0) - 1.0)


def expected_reward_policy(
    router: Router, family_masks: np.ndarray, reward_arch: np.ndarray, correct_reward: float
) -> Policy:
    """Per image the member of highest :func:`expected_rewards` (ties: the lower index), as masks
    uint8 (B, 17, 5): what the env's reward at those bounds asks of a router."""
    masks, r_arch = _members(router, family_masks, reward_arch, "reward_arch")
    expected_rewards(np.zeros((1, len(r_arch))), r_arch, correct_reward)  # checks the arguments

    def policy(images: np.ndarray) -> np.ndarray:
        return masks[np.argmax(expected_rewards(predict_correct(router, images), r_arch, correct_reward), axis=1)]

    return policy
