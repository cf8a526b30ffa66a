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

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from instanas_gym.bandit import InstaNASBandit
from instanas_gym.checks import check_int, check_number
from instanas_gym.data import DatasetSpec, ImageSet
from instanas_gym.data import augment as augment_batch
from instanas_gym.family import ArchitectureFamily
from instanas_gym.files import FileFormatError, atomic_save, load_torch
from instanas_gym.masks import validate_mask

from instanas_gym.agents.controller import ControllerConfig
from instanas_gym.agents.evaluation import Policy, module_latency_ms
from instanas_gym.agents.instance_aware import gain_over_frontier, oracle, score_architectures, static_frontier

ROUTER_FORMAT = "instanas-router-v1"

#: Default accuracy margin (fraction) of :func:`select_family`'s cheap anchor below the best candidate.
ANCHOR_MARGIN = 0.2
#: Default number of price steps (above zero) of :func:`select_family`'s score.
FAMILY_PRICES = 8


# ---- the family ----------------------------------------------------------------------------------
def _check_scores(correct: np.ndarray, latency_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    correct, lat = np.asarray(correct), np.asarray(latency_ms, dtype=np.float64)
    if correct.ndim != 2 or lat.shape != correct.shape[:1] or not len(lat) or not correct.shape[1]:
        raise ValueError(f"correct must be (C, N) and latency_ms (C,) with C, N >= 1, got {correct.shape}, {lat.shape}")
    if not np.isfinite(lat).all() or (lat < 0).any():
        raise ValueError("latency_ms must be finite and >= 0")
    return correct.astype(bool), lat


def family_prices(latency_ms: np.ndarray, steps: int = FAMILY_PRICES) -> np.ndarray:
    """The ladder of prices (1/ms) :func:`select_family` averages over: ``steps + 1`` evenly spaced
    from 0 to ``1 / (max - min latency)``, the price at which one right image is worth exactly the
    whole latency range. All zeros when every latency is the same."""
    lat = np.asarray(latency_ms, dtype=np.float64)
    span = float(lat.max() - lat.min())
    top = 1.0 / span if span > 0 else 0.0
    return np.linspace(0.0, top, check_int("steps", steps) + 1)


def oracle_utility(correct: np.ndarray, latency_ms: np.ndarray, prices: np.ndarray) -> float:
    """Mean over ``prices`` (1/ms) of the label-reading oracle's utility over the architectures of
    ``correct`` (K, N) bool at ``latency_ms`` (K,): per image the best of ``right - price x ms``,
    averaged over the images. At price 0 it is the oracle's accuracy (fraction); higher prices
    reward right answers from cheaper architectures. Adding an architecture never lowers it."""
    w = correct[None].astype(np.float64) - np.asarray(prices, dtype=np.float64)[:, None, None] * latency_ms[None, :, None]
    return float(w.max(1).mean())


def select_family(
    correct: np.ndarray, latency_ms: np.ndarray, k: int, margin: float = ANCHOR_MARGIN, prices: int = FAMILY_PRICES,
    anchors: Literal["accuracy", "frontier"] = "accuracy",
) -> np.ndarray:
    """Choose at most ``k`` of C candidate architectures for a router, greedily and deterministically.

    With ``anchors="frontier"``, the family starts from the vertices of the candidates' static
    frontier (:func:`~instanas_gym.agents.instance_aware.static_frontier` of their accuracy and
    latency on these images: the architectures a random mixture would use, most accurate first, at
    most ``k``), and step 4 below fills the rest. With ``anchors="accuracy"`` (the default), the
    rule, in order (each member counted once):

    1. the most accurate candidate (ties: the faster, then the lower index), so the family reaches
       the best accuracy on offer;
    2. the *cheap anchor*: the fastest candidate whose accuracy is at most ``margin`` (fraction)
       below the best one's (ties: the more accurate, then the lower index), a cheap architecture
       that is still good, for the easy images;
    3. the fastest candidate of all (same ties), so any latency budget down to its ms can be met;
    4. then, one at a time, the candidate that most raises :func:`oracle_utility` of the family: the
       label-reading oracle's accuracy minus a price times its latency, averaged over the price
       ladder :func:`family_prices` (``prices + 1`` prices from 0 to 1 / latency range). Price 0
       rewards complementary errors (images no member gets right yet); the higher prices reward
       getting images right at lower latency, which favours members that fill latency gaps over
       near-duplicates of members. Ties go to the lower index; the greedy step stops early when no
       candidate raises the score (a redundant duplicate adds nothing), so fewer than ``k`` members
       may come back.

    Args:
        correct: bool (C, N), whether candidate c classifies image n right (images the router will
            not be trained on, so that the choice does not flatter it).
        latency_ms: (C,) latency of each candidate (ms).
        k: the most members wanted (>= 1).
        margin: the cheap anchor's accuracy margin below the best candidate (fraction, 0-1).
        prices: steps of the price ladder above 0.

    Returns:
        int64 indices into the C candidates, in the order chosen (1-3 first, then the greedy ones).
    """
    correct, lat = _check_scores(correct, latency_ms)
    k = check_int("k", k)
    margin = check_number("margin", margin, 0.0, 1.0)
    if anchors not in ("accuracy", "frontier"):
        raise ValueError(f"anchors must be 'accuracy' or 'frontier', got {anchors!r}")
    acc, index = correct.mean(1), np.arange(len(lat))
    if anchors == "frontier":
        front_ms, front_acc = static_frontier(lat, acc)
        vertices = [int(np.flatnonzero((lat == m) & (acc == a))[0]) for m, a in zip(front_ms, front_acc)]
        firsts = vertices[::-1]  # the most accurate first
    else:
        best = int(np.lexsort((index, lat, -acc))[0])
        near = np.flatnonzero(acc >= acc[best] - margin)
        anchor = int(near[np.lexsort((near, -acc[near], lat[near]))[0]])
        fastest = int(np.lexsort((index, -acc, lat))[0])
        firsts = [best, anchor, fastest]
    chosen: list[int] = []
    for c in firsts:
        if c not in chosen and len(chosen) < k:
            chosen.append(c)
    ladder = family_prices(lat, prices)
    score = oracle_utility(correct[chosen], lat[chosen], ladder)
    while len(chosen) < k:
        rest = [c for c in range(len(lat)) if c not in chosen]
        if not rest:
            break
        scores = [oracle_utility(correct[chosen + [c]], lat[chosen + [c]], ladder) for c in rest]
        i = int(np.argmax(scores))  # the first (lowest index) of equal scores
        if scores[i] <= score + 1e-12:
            break  # nothing left raises the score
        chosen.append(rest[i])
        score = scores[i]
    return np.asarray(chosen, dtype=np.int64)


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
        start, total = time.perf_counter(), 0.0
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            batch = x[idx] if augment_spec is None else augment_batch(x[idx], augment_spec, gen)
            loss = F.binary_cross_entropy_with_logits(router(batch), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        history.append({"epoch": epoch, "loss": total / len(x), "seconds": time.perf_counter() - start})
        if log is not None:
            log(history[-1])
    router.eval()
    return history


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


# ---- files ---------------------------------------------------------------------------------------
class SavedRouter(NamedTuple):
    """What :func:`load_router` returns."""

    router: Router
    family_masks: np.ndarray
    """uint8 (K, 17, 5)."""
    latency_ms: np.ndarray
    """(K,) ms."""
    price_per_ms: float
    meta: dict[str, Any]

    def family(self, **fields: Any) -> ArchitectureFamily:
        """The routed family as an :class:`~instanas_gym.family.ArchitectureFamily` (names from
        ``meta["family_names"]`` when it holds K of them); ``fields``: its other fields (``dataset``,
        ``supernet``, ``meta``), for :func:`~instanas_gym.family.save_family`."""
        names = self.meta.get("family_names")
        names = tuple(names) if isinstance(names, (list, tuple)) and len(names) == len(self.family_masks) else None
        return ArchitectureFamily(self.family_masks, names, self.latency_ms, **fields)

    def policy(self) -> Policy:
        """:func:`router_policy` of the stored router, family and price."""
        return router_policy(self.router, self.family_masks, self.latency_ms, self.price_per_ms)

    def controller(self) -> RoutedController:
        """The stored router, family and price as a controller (:class:`RoutedController`), e.g. to export."""
        return RoutedController(self.router, self.family_masks, self.latency_ms, self.price_per_ms).eval()


def save_router(
    router: Router, path: str | os.PathLike, family_masks: np.ndarray, latency_ms: np.ndarray, price_per_ms: float,
    **meta: Any,
) -> None:
    """Write the router's config and weights, its family's masks (K, 17, 5), their latency (ms) and
    the price (1/ms) atomically; ``meta``: plain data (numbers, strings, lists, dicts) kept beside."""
    family = ArchitectureFamily(family_masks, latency_ms=latency_ms)  # K >= 1 distinct masks, one latency each
    if family.k != router.k:
        raise ValueError(f"family_masks ({family.k}) and the router ({router.k}) disagree on K")
    atomic_save({"format": ROUTER_FORMAT, "config": router.config, "state_dict": router.state_dict(),
                 "family_masks": torch.from_numpy(family.masks.copy()), "latency_ms": family.latency_ms.tolist(),
                 "price_per_ms": float(price_per_ms), "meta": meta}, path)


def load_router(path: str | os.PathLike) -> SavedRouter:
    """The router stored at ``path`` (eval mode), its family, latencies, price and meta; loads no code."""
    hint = "fit one with `python benchmarks/bench_router.py` or `instanas_gym.agents.router.fit_router`"
    ckpt = load_torch(path, "instanas-gym router", ROUTER_FORMAT,
                      ("config", "state_dict", "family_masks", "latency_ms", "price_per_ms"), hint)
    try:
        cfg = dict(ckpt["config"])
        router = Router(ControllerConfig(tuple(cfg["widths"]), cfg["input_size"]), cfg["in_channels"], cfg["k"])
        router.load_state_dict(ckpt["state_dict"])
        family = ArchitectureFamily(ckpt["family_masks"].numpy(), latency_ms=ckpt["latency_ms"])
        price = float(ckpt["price_per_ms"])
        if family.k != router.k:
            raise ValueError(f"{router.k} outputs and {family.k} masks")
        if not (np.isfinite(price) and price >= 0):
            raise ValueError("the price must be finite and >= 0")
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:  # a damaged file's contents
        raise FileFormatError(f"{Path(path)} holds a router that cannot be built ({err}); {hint}") from None
    return SavedRouter(router.eval(), family.masks.copy(), family.latency_ms, price, dict(ckpt.get("meta") or {}))


# ---- the whole fit -------------------------------------------------------------------------------
def _subset(data: ImageSet, index: np.ndarray) -> ImageSet:
    return ImageSet(data.images[index], data.labels[index], data.spec, data.split, data.source)


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (fraction; ties count half); nan when one class is absent."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # mean rank of each tie group, 1-based
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def routing_figures(probs: np.ndarray, correct: np.ndarray, latency_ms: np.ndarray, price_per_ms: float) -> dict[str, Any]:
    """How routing at ``price_per_ms`` does on images whose members' correctness (K, N) is known:
    ``accuracy`` (fraction), ``latency_ms`` (mean, network only), ``arch_share`` (K,) and ``gain``
    (:func:`~instanas_gym.agents.instance_aware.gain_over_frontier` against the static frontier of the
    K members on these images, router time left out)."""
    lat = np.asarray(latency_ms, dtype=np.float64)
    choice = route(probs, lat, price_per_ms)
    acc, ms = float(correct[choice, np.arange(len(choice))].mean()), float(lat[choice].mean())
    frontier = static_frontier(lat, correct.mean(1))
    return {"accuracy": acc, "latency_ms": ms, "arch_share": (np.bincount(choice, minlength=len(lat)) / len(choice)).tolist(),
            "gain": gain_over_frontier(frontier, ms, acc)}


def fit_router(
    bandit: InstaNASBandit,
    candidates: np.ndarray,
    k: int,
    budget_ms: float,
    controller_config: ControllerConfig,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 128,
    holdout: float = 0.2,
    seed: int = 0,
    margin: float = ANCHOR_MARGIN,
    augment: bool = False,
    limit: int | None = None,
    eval_batch_size: int = 256,
    log: Callable[[str], None] | None = None,
    anchors: Literal["accuracy", "frontier"] = "accuracy",
) -> tuple[Router, np.ndarray, np.ndarray, float, dict[str, Any]]:
    """Fit a router to the bandit's split (the search split; a ``"test"`` bandit is refused).

    Steps: drop candidates with the same effective mask as an earlier one; draw (``seed``) a share
    ``holdout`` of the images (the first ``limit`` when given) and score every candidate on it
    (``instance_aware.score_architectures``); choose the family on it (:func:`select_family`, at
    most ``k`` members, ordered fastest first); score the family on the other images and train the
    router on them (:func:`train_router`, the body built from ``controller_config``, seeded by
    ``seed``); then pick the price at which routing meets ``budget_ms`` on the held-out images
    (:func:`price_for_budget`: the router's probabilities on images it was not trained on, as test
    images will be). The family and the router do not depend on the budget: another budget needs
    only ``price_for_budget(figures["holdout_probs"], latency_ms, other_budget_ms)``.

    ``budget_ms`` is the network's mean latency (ms, the table's, batch 1), the router's own time
    not included: subtract :func:`router_latency_ms` for an end-to-end budget.

    Returns:
        ``(router, family_masks uint8 (K, 17, 5), latency_ms (K,), price_per_ms, figures)``. The
        figures, all on the bandit's split: ``split``, ``images``, ``train_images``,
        ``holdout_index``; per distinct candidate ``candidate_index`` (into ``candidates``),
        ``candidate_latency_ms``, ``candidate_accuracy`` (held out); ``family`` (indices into
        ``candidates``), ``family_accuracy`` (held out), ``family_train_accuracy``; ``history`` (per
        epoch); ``budget_ms``, ``price_per_ms``; on the held-out images ``holdout_probs`` (N_h, K),
        ``holdout_correct`` (K, N_h) bool, ``auc`` (per member: how well the router ranks the images
        the member gets right above those it gets wrong), ``routed`` (:func:`routing_figures`) and
        ``oracle`` (``accuracy``, ``latency_ms``); ``routed_ms_search``, the mean routed latency over
        all the images.
    """
    say = log or (lambda _msg: None)
    if bandit.split == "test":
        raise ValueError("fit_router learns on the search split; the test split is only for judging the router")
    k, epochs = check_int("k", k), check_int("epochs", epochs)
    holdout = check_number("holdout", holdout, 0.0, 1.0, low_open=True, high_open=True)
    budget_ms = check_number("budget_ms", budget_ms, 0.0, low_open=True)
    cands = validate_mask(candidates, batched=True, name="candidates").astype(np.uint8)
    eff = bandit.model.space.effective_mask(cands).astype(np.uint8)
    distinct = np.sort(np.unique(eff.reshape(len(eff), -1), axis=0, return_index=True)[1])
    n = bandit.num_images if limit is None else min(check_int("limit", limit), bandit.num_images)
    n_hold = round(holdout * n)
    if n_hold < 1 or n - n_hold < 1:
        raise ValueError(f"{n} images cannot be split into a held-out share {holdout} and the rest")
    perm = np.random.default_rng(seed).permutation(n)
    hold_idx, train_idx = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
    data = bandit.data

    say(f"scoring {len(distinct)} distinct candidates on {n_hold} held-out {bandit.split} images")
    cand_correct, cand_lat = score_architectures(bandit.model, _subset(data, hold_idx), bandit.table, cands[distinct],
                                                 eval_batch_size)
    picked = select_family(cand_correct, cand_lat, k, margin, anchors=anchors)
    picked = picked[np.argsort(cand_lat[picked], kind="stable")]  # fastest first: ties in route() go to the faster
    family_idx, family_masks, family_lat = distinct[picked], cands[distinct[picked]], cand_lat[picked]
    hold_correct = cand_correct[picked]
    say(f"family of {len(picked)}: " + ", ".join(f"{ms:.3f} ms {100 * a:.1f}%"
                                                 for ms, a in zip(family_lat, hold_correct.mean(1))))

    say(f"scoring the family on {len(train_idx)} training images")
    train_correct, _ = score_architectures(bandit.model, _subset(data, train_idx), bandit.table, family_masks,
                                           eval_batch_size)
    with torch.random.fork_rng():  # the router's initial weights from ``seed``, the global generator untouched
        torch.manual_seed(seed)
        router = Router(controller_config, data.spec.image_shape[2], len(picked))
    history = train_router(router, data.images[train_idx], train_correct, epochs, lr, batch_size, seed,
                           data.spec if augment else None,
                           log=lambda h: say(f"epoch {h['epoch']}: loss {h['loss']:.4f} ({h['seconds']:.1f} s)"))

    hold_probs = predict_correct(router, data.images[hold_idx])
    price = price_for_budget(hold_probs, family_lat, budget_ms)
    all_probs = np.zeros((n, len(picked)))
    all_probs[hold_idx] = hold_probs
    all_probs[train_idx] = predict_correct(router, data.images[train_idx])
    figures: dict[str, Any] = {
        "split": bandit.split, "images": n, "train_images": len(train_idx), "holdout_index": hold_idx,
        "candidate_index": distinct, "candidate_latency_ms": cand_lat, "candidate_accuracy": cand_correct.mean(1),
        "family": family_idx, "family_latency_ms": family_lat, "family_accuracy": hold_correct.mean(1),
        "family_train_accuracy": train_correct.mean(1), "history": history,
        "budget_ms": budget_ms, "price_per_ms": price, "holdout_probs": hold_probs, "holdout_correct": hold_correct,
        "auc": [_auc(hold_probs[:, j], hold_correct[j]) for j in range(len(picked))],
        "routed": routing_figures(hold_probs, hold_correct, family_lat, price),
        "oracle": {key: v for key, v in oracle(hold_correct, family_lat).items() if key != "choice"},
        "routed_ms_search": routed_latency_ms(all_probs, family_lat, price),
    }
    return router, family_masks, family_lat, price, figures

