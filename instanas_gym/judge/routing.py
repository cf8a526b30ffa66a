"""TODO."""



from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

from instanas_gym.agents.config import ControllerConfig
from instanas_gym.agents.router import Router, predict_correct, price_for_budget, route, routed_latency_ms, train_router
from instanas_gym.envs.bandit import InstaNASBandit
from instanas_gym.judge.frontier import gain_over_frontier, oracle, static_frontier
from instanas_gym.space.data import ImageSet
from instanas_gym.space.masks import validate_mask
from instanas_gym.utils.checks import check_int, check_number

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
    frontier (:func:`~instanas_gym.judge.frontier.static_frontier` of their accuracy and
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
    chosen: list[int] = []
    for c in _anchors(correct.mean(1), lat, margin, anchors):
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


def _anchors(acc: np.ndarray, lat: np.ndarray, margin: float, anchors: str) -> list[int]:
    """:func:`select_family`'s first members: the frontier's vertices (most accurate first), or the
    most accurate, the cheap anchor and the fastest."""
    if anchors == "frontier":
        front_ms, front_acc = static_frontier(lat, acc)
        return [int(np.flatnonzero((lat == m) & (acc == a))[0]) for m, a in zip(front_ms, front_acc)][::-1]
    index = np.arange(len(lat))
    best = int(np.lexsort((index, lat, -acc))[0])
    near = np.flatnonzero(acc >= acc[best] - margin)
    anchor = int(near[np.lexsort((near, -acc[near], lat[near]))[0]])
    fastest = int(np.lexsort((index, -acc, lat))[0])
    return [best, anchor, fastest]


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
    (:func:`~instanas_gym.judge.frontier.gain_over_frontier` against the static frontier of the
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

    Steps: drop candidates with the same effective mask as an earlier one; score every candidate on
    the images (the first ``limit`` when given; from the supernet's outcomes file,
    :meth:`~instanas_gym.envs.bandit.InstaNASBandit.outcome_store`); draw (``seed``) a share
    ``holdout`` of them and choose the family on it (:func:`select_family`, at
    most ``k`` members, ordered fastest first); train the router on the other images (:func:`train_router`, the body
    built from ``controller_config``, seeded by
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
    check_number("budget_ms", budget_ms, 0.0, low_open=True)
    n = bandit.num_images if limit is None else min(check_int("limit", limit), bandit.num_images)
    hold_idx, train_idx = _holdout(n, holdout, seed)
    cands, distinct, correct, cand_lat = _score_candidates(bandit, candidates, n, eval_batch_size, say)
    picked = select_family(correct[:, hold_idx], cand_lat, k, margin, anchors=anchors)
    picked = picked[np.argsort(cand_lat[picked], kind="stable")]  # fastest first: ties in route() go to the faster
    say(f"family of {len(picked)}: " + ", ".join(f"{ms:.3f} ms {100 * a:.1f}%"
                                                 for ms, a in zip(cand_lat[picked], correct[picked][:, hold_idx].mean(1))))
    with torch.random.fork_rng():  # the router's initial weights from ``seed``, the global generator untouched
        torch.manual_seed(seed)
        router = Router(controller_config, bandit.data.spec.image_shape[2], len(picked))
    history = train_router(router, bandit.data.images[train_idx], correct[picked][:, train_idx], epochs, lr, batch_size,
                           seed, bandit.data.spec if augment else None,
                           log=lambda h: say(f"epoch {h['epoch']}: loss {h['loss']:.4f} ({h['seconds']:.1f} s)"))
    hold_probs = predict_correct(router, bandit.data.images[hold_idx])
    price = price_for_budget(hold_probs, cand_lat[picked], budget_ms)
    figures = {"split": bandit.split, "images": n, "train_images": len(train_idx), "holdout_index": hold_idx,
               "candidate_index": distinct, "candidate_latency_ms": cand_lat,
               "candidate_accuracy": correct[:, hold_idx].mean(1), "family": distinct[picked], "history": history,
               "budget_ms": budget_ms, "price_per_ms": price, "holdout_probs": hold_probs,
               "routed_ms_search": routed_latency_ms(predict_correct(router, bandit.data.images[:n]),
                                                     cand_lat[picked], price)}
    figures |= _family_figures(hold_probs, correct[picked], hold_idx, train_idx, cand_lat[picked], price)
    return router, cands[distinct[picked]], cand_lat[picked], price, figures


def _score_candidates(bandit: InstaNASBandit, candidates: np.ndarray, n: int, batch_size: int,
                      say: Callable[[str], None]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The candidates (uint8), the indices of the distinct ones (by effective mask), which of the first
    ``n`` images each distinct one gets right (bool (D, n)) and their latency (ms, (D,))."""
    cands = validate_mask(candidates, batched=True, name="candidates").astype(np.uint8)
    eff = bandit.model.space.effective_mask(cands).astype(np.uint8)
    distinct = np.sort(np.unique(eff.reshape(len(eff), -1), axis=0, return_index=True)[1])
    say(f"scoring {len(distinct)} distinct candidates on the first {n} {bandit.split} images")
    correct = bandit.outcome_store(batch_size=batch_size, progress=False).get(cands[distinct], n).correct
    cand_lat = np.asarray(bandit.table.network_ms(cands[distinct]), dtype=np.float64).reshape(len(distinct))
    return cands, distinct, correct, cand_lat


def _family_figures(hold_probs: np.ndarray, correct: np.ndarray, hold_idx: np.ndarray, train_idx: np.ndarray,
                    latency_ms: np.ndarray, price: float) -> dict[str, Any]:
    """:func:`fit_router`'s figures of the family: accuracies, AUCs, routing and oracle on the held-out images."""
    hold = correct[:, hold_idx]
    return {"family_latency_ms": latency_ms, "family_accuracy": hold.mean(1),
            "family_train_accuracy": correct[:, train_idx].mean(1), "holdout_correct": hold,
            "auc": [_auc(hold_probs[:, j], hold[j]) for j in range(len(latency_ms))],
            "routed": routing_figures(hold_probs, hold, latency_ms, price),
            "oracle": {key: v for key, v in oracle(hold, latency_ms).items() if key != "choice"}}


def _holdout(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of the first ``n`` image indices: (held-out share ``holdout``, the rest), each sorted."""
    holdout = check_number("holdout", holdout, 0.0, 1.0, low_open=True, high_open=True)
    n_hold = round(holdout * n)
    if n_hold < 1 or n - n_hold < 1:
        raise ValueError(f"{n} images cannot be split into a held-out share {holdout} and the rest")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:n_hold]), np.sort(perm[n_hold:])


def choose_cascade_family(prediction: np.ndarray, confidence: np.ndarray, network_ms: np.ndarray, labels: np.ndarray,
                          k: int = 4, stages: int = 3, budgets: int = 8, grid: int = 8,
                          useful_points: float = 5.0) -> np.ndarray:
    """Choose at most ``k`` of C candidate architectures for a cascade, greedily: start from the most
    accurate, then add the candidate that most raises the mean, over ``budgets`` latency budgets
    evenly spread from the latency of the fastest candidate within ``useful_points`` of the most
    accurate one to the most accurate one's, of the accuracy of the best threshold cascade within each
    budget (:func:`~instanas_gym.agents.cascade.threshold_frontier`, ``grid`` thresholds per stage) on
    the given images. Budgets start there because below it no cascade competes with a useful single
    architecture: a near-empty network (10% right) would otherwise be chosen for the budgets only it
    fits. Returns candidate indices, fastest first.

    Args: the candidates' stored answers (C, N) ``prediction`` and ``confidence`` (rounded as the
    cascade's observations show it), their whole-network ``network_ms`` (C,), the images' ``labels`` (N,).
    """
    from instanas_gym.agents.cascade import threshold_frontier

    k = check_int("k", k)
    accuracy = (prediction == labels[None]).mean(1)
    best = int(np.argmax(accuracy))
    useful = accuracy >= accuracy[best] - useful_points / 100
    span = np.linspace(float(network_ms[useful].min()), float(network_ms[best]), budgets)

    def score(chosen: list[int]) -> float:
        idx = np.asarray(chosen)
        points = threshold_frontier(prediction[idx], confidence[idx], network_ms[idx], labels, stages, grid)
        return float(np.mean([max([p["accuracy"] for p in points if p["latency_ms"] <= b] or [0.0]) for b in span]))

    chosen = [best]
    while len(chosen) < min(k, len(network_ms)):
        gains = {c: score(chosen + [c]) for c in range(len(network_ms)) if c not in chosen}
        pick = max(gains, key=gains.get)
        if gains[pick] <= score(chosen):
            break
        chosen.append(pick)
    return np.asarray(sorted(chosen, key=lambda c: network_ms[c]), dtype=np.int64)
