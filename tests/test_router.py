"""The router agent: the family's selection rule, routing by price, the price for a budget, training
on per-architecture correctness, the policy, its files, and the whole fit on the search split."""

import numpy as np
import pytest
import torch

from instanas_gym.agents.config import ControllerConfig
from instanas_gym.agents.controller import save_controller
from instanas_gym.agents.router import (
    Router,
    expected_reward_policy,
    expected_rewards,
    predict_correct,
    price_for_budget,
    route,
    routed_latency_ms,
    router_latency_ms,
    router_policy,
    train_router,
)
from instanas_gym.agents.router_file import load_router, save_router
from instanas_gym.envs.bandit import InstaNASBandit
from instanas_gym.judge.routing import family_prices, fit_router, oracle_utility, select_family
from instanas_gym.model import outcomes as outcomes_module
from instanas_gym.space.family import probe_masks
from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask, single_op_mask
from instanas_gym.utils.files import FileFormatError, atomic_save

from .conftest import own_copy

TINY = ControllerConfig(widths=(4, 8))


def nested(accuracies: list[float], n: int = 100) -> np.ndarray:
    """(C, n) correctness where candidate c is right on the first ``accuracies[c] x n`` images (the
    images ordered from easy to hard: every faster, less accurate candidate's right images nested)."""
    return np.array([np.arange(n) < round(a * n) for a in accuracies])


# ---- the family ----------------------------------------------------------------------------------
def test_select_family_prefers_complementary_errors_to_a_duplicate():
    a = np.arange(10) < 8                       # 0.8, wrong on images 8 and 9
    c = np.isin(np.arange(10), [0, 1, 6, 7, 8, 9])  # 0.6, right exactly where a is wrong
    f = np.arange(10) < 3                       # 0.3, the fastest
    correct = np.array([a, a, c, f])            # candidate 1 duplicates candidate 0
    lat = np.array([2.0, 2.0, 2.0, 1.0])
    family = select_family(correct, lat, 3)
    assert family.tolist() == [0, 3, 2]         # the best, the fastest, then the complementary one
    assert family.dtype == np.int64
    # the duplicate raises the score at no price: the greedy step stops before it
    assert select_family(correct, lat, 4).tolist() == [0, 3, 2]
    prices = family_prices(lat)
    assert oracle_utility(correct[[0, 3, 1]], lat[[0, 3, 1]], prices) == oracle_utility(correct[[0, 3]], lat[[0, 3]],
                                                                                        prices)
    assert oracle_utility(correct[:1], lat[:1], np.zeros(1)) == pytest.approx(0.8)  # price 0: accuracy
    assert select_family(correct, lat, 1).tolist() == [0]


def test_select_family_can_start_from_the_static_frontier():
    n = 100
    correct = nested([0.9, 0.8, 0.85, 0.5, 0.7], n)
    lat = np.array([4.0, 1.0, 3.5, 0.5, 2.0])  # frontier: 0.5 ms (0.5), 1 ms (0.8), 4 ms (0.9); 0.85 @ 3.5 under its chord
    assert select_family(correct, lat, 3, anchors="frontier").tolist() == [0, 1, 3]  # most accurate first
    assert select_family(correct, lat, 2, anchors="frontier").tolist() == [0, 1]
    with pytest.raises(ValueError, match="anchors"):
        select_family(correct, lat, 2, anchors="best")  # type: ignore[arg-type]


def test_select_family_spreads_latency():
    """A ladder of nested candidates: after the forced members (the best at 4 ms, the cheap anchor at
    2 ms, the fastest at 0.5 ms) the greedy step fills the latency gaps, and never takes the
    near-duplicate of the best (3.9 ms, 2 points less accurate)."""
    lat = np.array([1.0, 2.0, 3.0, 3.9, 4.0, 0.5])
    correct = nested([0.5, 0.7, 0.8, 0.88, 0.9, 0.1])
    assert select_family(correct, lat, 3).tolist() == [4, 1, 5]
    # at price p, member 0 saves 1 ms on 40 images (0.4 p), member 2 1 ms on 10 (0.1 p), member 3
    # 0.1 ms on 18 (0.018 p)
    assert select_family(correct, lat, 5).tolist() == [4, 1, 5, 0, 2]
    assert 3 in select_family(correct, lat, 6).tolist()  # only once the gaps are filled
    # the cheap anchor follows the margin: 0.5 reaches the 1 ms candidate, 0 only the best itself
    assert select_family(correct, lat, 3, margin=0.5).tolist() == [4, 0, 5]
    assert select_family(correct, lat, 2, margin=0.0).tolist() == [4, 5]


def test_select_family_is_deterministic_and_checks_its_input():
    rng = np.random.default_rng(0)
    correct = rng.random((12, 300)) < rng.uniform(0.2, 0.9, (12, 1))
    lat = rng.uniform(0.1, 2.0, 12)
    first = select_family(correct, lat, 6)
    assert len(first) == len(set(first.tolist())) == 6
    for _ in range(3):
        np.testing.assert_array_equal(select_family(correct.copy(), lat.copy(), 6), first)
    assert first[0] == np.argmax(correct.mean(1))
    assert lat.argmin() in first
    with pytest.raises(ValueError):
        select_family(correct, lat[:-1], 3)
    with pytest.raises(ValueError):
        select_family(correct, lat, 0)


# ---- routing and the price -----------------------------------------------------------------------
def test_route_by_probability_minus_price():
    probs = np.array([[0.9, 0.5, 0.2], [0.3, 0.35, 0.2]])
    lat = np.array([3.0, 2.0, 1.0])
    assert route(probs, lat, 0.0).tolist() == [0, 1]
    assert route(probs, lat, 0.1).tolist() == [0, 1]   # (0.6, 0.3, 0.1) and (0.0, 0.15, 0.1)
    assert route(probs, lat, 0.2).tolist() == [0, 2]   # (0.3, 0.1, 0.0) and (-0.3, -0.05, 0.0)
    assert route(probs, lat, 10.0).tolist() == [2, 2]  # a high price: the fastest
    assert route(np.array([[0.5, 0.5]]), np.array([1.0, 1.0]), 0.0).tolist() == [0]  # ties: the lower index
    with pytest.raises(ValueError):
        route(probs, lat, -1.0)


def test_routed_latency_is_monotone_in_the_price():
    rng = np.random.default_rng(1)
    probs, lat = rng.random((500, 5)), np.array([0.5, 1.0, 1.5, 3.0, 4.0])
    prices = np.linspace(0, 3, 61)
    per_image = np.array([lat[route(probs, lat, p)] for p in prices])  # (prices, images)
    assert (np.diff(per_image, axis=0) <= 0).all()  # every image's latency only falls as the price rises
    means = per_image.mean(1)
    assert means[0] > 2.0 and means[-1] == 0.5
    assert routed_latency_ms(probs, lat, 0.7) == pytest.approx(means[14])


def test_price_for_budget_meets_the_budget_exactly_enough():
    rng = np.random.default_rng(2)
    probs, lat = rng.random((1000, 4)), np.array([1.0, 2.0, 3.0, 5.0])
    top = routed_latency_ms(probs, lat, 0.0)
    hi = 2.0 / 1.0  # 2 / the smallest gap to the fastest
    prices = []
    for budget in np.linspace(1.0, top - 1e-3, 9)[::-1]:
        price = price_for_budget(probs, lat, budget)
        prices.append(price)
        assert routed_latency_ms(probs, lat, price) <= budget
        assert routed_latency_ms(probs, lat, price - 1e-9 * hi) > budget  # a hair cheaper misses it
    assert (np.diff(prices) >= 0).all()  # a tighter budget, a higher price
    assert price_for_budget(probs, lat, top) == 0.0
    assert price_for_budget(probs, lat, 10.0) == 0.0
    with pytest.raises(ValueError, match="below the fastest"):
        price_for_budget(probs, lat, 0.99)
    single = price_for_budget(probs[:, :1], lat[:1], 1.0)  # one member: any budget it meets costs nothing
    assert single == 0.0


# ---- training ------------------------------------------------------------------------------------
def brightness_set(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise images (n, 16, 16, 1), half bright and half dark; member 0 is right on the bright ones,
    member 1 on the dark ones."""
    bright = rng.random(n) < 0.5
    low = np.where(bright, 90, 0)[:, None, None, None]
    images = (low + rng.integers(0, 166, (n, 16, 16, 1))).astype(np.uint8)
    return images, np.stack([bright, ~bright])


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Share of (right, wrong) pairs the scores rank the right way (ties count half)."""
    pos, neg = scores[positive][:, None], scores[~positive][None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def trained_router(seed: int, images: np.ndarray, correct: np.ndarray) -> tuple[Router, list]:
    torch.manual_seed(0)
    router = Router(TINY, 1, 2)
    return router, train_router(router, images, correct, epochs=4, lr=3e-3, batch_size=32, seed=seed)


def test_train_router_learns_a_separable_rule_and_is_reproducible():
    rng = np.random.default_rng(0)
    images, correct = brightness_set(rng, 384)
    router, history = trained_router(1, images, correct)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert not router.training
    fresh, fresh_correct = brightness_set(rng, 200)  # images it never saw
    probs = predict_correct(router, fresh)
    assert probs.shape == (200, 2) and ((probs >= 0) & (probs <= 1)).all()
    for k in range(2):
        assert auc(probs[:, k], fresh_correct[k]) > 0.9, k
    again, history_again = trained_router(1, images, correct)
    assert [h["loss"] for h in history_again] == [h["loss"] for h in history]
    for (name, a), b in zip(router.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    other, _ = trained_router(2, images, correct)  # another order of images
    assert not torch.equal(other.head.weight, router.head.weight)
    with pytest.raises(ValueError):
        train_router(router, images, correct[:, :-1], epochs=1)


# ---- the policy and its files --------------------------------------------------------------------
def fixed_router(bias: list[float]) -> Router:
    """A router whose prediction is the same for every image: sigmoid(bias)."""
    router = Router(TINY, 1, len(bias))
    with torch.no_grad():
        router.head.weight.zero_()
        router.head.bias.copy_(torch.tensor(bias))
    return router.eval()


FAMILY = np.stack([mobilenetv2_mask(), all_ops_mask(), single_op_mask(4)])
FAMILY_MS = np.array([2.0, 8.0, 1.0])


def test_router_policy_returns_the_family_masks():
    router = fixed_router([0.0, 3.0, -3.0])  # P(right) 0.5, 0.95, 0.05
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28, 1)).astype(np.uint8)
    masks = router_policy(router, FAMILY, FAMILY_MS, 0.0)(images)
    assert masks.dtype == np.uint8 and masks.shape == (7, 17, 5)
    assert (masks == FAMILY[1]).all()  # the most likely right
    assert (router_policy(router, FAMILY, FAMILY_MS, 1.0)(images) == FAMILY[2]).all()  # 0.05 - 1 beats 0.5 - 2
    with pytest.raises(ValueError):
        router_policy(router, FAMILY[:2], FAMILY_MS[:2], 0.0)


def test_expected_reward_rule_by_hand():
    """R = c R_A if right, -c if wrong, so E[R_k] = c (p_k (R_A_k + 1) - 1). With c = 10: a sure-right
    arm of R_A 0 expects 0; an arm right with p = 0.8 at R_A = 0.5 expects 10 (0.8 x 1.5 - 1) = 2, so
    it wins; at p = 0.6, 10 (0.9 - 1) = -1, and the sure-right one wins."""
    probs = np.array([[1.0, 0.8], [1.0, 0.6]])
    expected = expected_rewards(probs, np.array([0.0, 0.5]), 10.0)
    np.testing.assert_allclose(expected, [[0.0, 2.0], [0.0, -1.0]])
    np.testing.assert_allclose(expected_rewards(np.array([[0.0]]), np.array([1.0]), 10.0), [[-10.0]])
    router = fixed_router([0.0, 3.0, -3.0])  # P(right) 0.5, 0.95, 0.05
    images = np.zeros((4, 28, 28, 1), np.uint8)
    # R_A (1, 0.1, 1): member 0 expects 10 (0.5 x 2 - 1) = 0, member 1 10 (0.95 x 1.1 - 1) = 0.45, member 2
    # -9: member 1; with its R_A 0 it expects -0.5, and member 0 wins
    assert (expected_reward_policy(router, FAMILY, np.array([1.0, 0.1, 1.0]), 10.0)(images) == FAMILY[1]).all()
    assert (expected_reward_policy(router, FAMILY, np.array([1.0, 0.0, 1.0]), 10.0)(images) == FAMILY[0]).all()
    with pytest.raises(ValueError, match="reward_arch"):
        expected_rewards(probs, np.array([0.0]), 10.0)
    with pytest.raises(ValueError, match="correct_reward"):
        expected_rewards(probs, np.array([0.0, 0.5]), 0.0)


def test_save_load_round_trip_and_damaged_files(tmp_path):
    torch.manual_seed(3)
    router = Router(ControllerConfig(widths=(4, 8), input_size=14), 1, 3).eval()
    path = tmp_path / "router.pt"
    save_router(router, path, FAMILY, FAMILY_MS, 0.25, budget_ms=1.5, note="x")
    saved = load_router(path)
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1)).astype(np.uint8)
    np.testing.assert_array_equal(predict_correct(saved.router, images), predict_correct(router, images))
    np.testing.assert_array_equal(saved.family_masks, FAMILY)
    np.testing.assert_array_equal(saved.latency_ms, FAMILY_MS)
    assert saved.price_per_ms == 0.25 and saved.meta == {"budget_ms": 1.5, "note": "x"}
    assert saved.router.config == router.config and not saved.router.training
    np.testing.assert_array_equal(saved.policy()(images), router_policy(router, FAMILY, FAMILY_MS, 0.25)(images))
    family = saved.family(dataset="fashion_mnist")
    assert family.k == 3 and family.names == ("arm 0", "arm 1", "arm 2") and family.dataset == "fashion_mnist"
    np.testing.assert_array_equal(family.latency_ms, FAMILY_MS)

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(FileFormatError, match=str(truncated)):
        load_router(truncated)
    controller = tmp_path / "controller.pt"
    save_controller(TINY.build(1), controller)
    with pytest.raises(FileFormatError, match="instanas-router-v1"):
        load_router(controller)
    obj = torch.load(path, weights_only=True)
    obj["latency_ms"] = [1.0, 2.0]  # two latencies for three members
    atomic_save(obj, tmp_path / "inconsistent.pt")
    with pytest.raises(FileFormatError, match="inconsistent.pt"):
        load_router(tmp_path / "inconsistent.pt")
    with pytest.raises(FileNotFoundError):
        load_router(tmp_path / "missing.pt")


def test_router_latency_in_both_runtimes():
    router = Router(ControllerConfig(widths=(4, 8), input_size=14), 1, 3)
    for runtime in ("torch", "onnxruntime"):
        assert 0 < router_latency_ms(router, (28, 28, 1), runtime, repeats=5, latency_ms=FAMILY_MS,
                                     price_per_ms=0.1) < np.inf  # on the clock: any positive ms


# ---- the whole fit -------------------------------------------------------------------------------
def test_fit_router_end_to_end_on_the_search_split_only(trained_assets, tmp_path, monkeypatch):
    assets = own_copy(trained_assets, tmp_path)
    bandit = InstaNASBandit(**assets)  # the synthetic set's training split: the images to learn on
    _, masks = zip(*probe_masks(bandit.table, seed=0))
    candidates = np.stack([*masks[:8], masks[0]])  # the last one repeats the first
    seen = []

    def spy(model, data, mask, batch_size=256, n=None):
        seen.append((data.split, n))
        return answers(model, data, mask, batch_size, n)

    answers = outcomes_module.answers
    monkeypatch.setattr(outcomes_module, "answers", spy)
    fastest_ms = float(bandit.table.network_ms(masks[3]))
    budget = fastest_ms + 0.3 * (float(bandit.table.network_ms(all_ops_mask())) - fastest_ms)
    router, family, lat, price, figures = fit_router(bandit, candidates, 4, budget, TINY, epochs=1, batch_size=32,
                                                     limit=200, seed=0)
    assert seen == [("train", 200)] * 9  # each distinct candidate once and the all-ops loss, on the first 200 images
    assert figures["split"] == "train" and figures["images"] == 200 and figures["train_images"] == 160
    assert len(figures["candidate_index"]) == 8  # the repeated mask is scored once
    assert family.shape == (router.k, 17, 5) and family.dtype == np.uint8 and 2 <= router.k <= 4
    np.testing.assert_allclose(lat, bandit.table.network_ms(family))
    assert (np.diff(lat) >= 0).all() and lat[0] == pytest.approx(fastest_ms)  # fastest first, the fastest in it
    # the price meets the budget on the held-out search images, recomputed from the returned router
    hold = figures["holdout_index"]
    probs = predict_correct(router, bandit.data.images[hold])
    np.testing.assert_allclose(probs, figures["holdout_probs"])
    assert price >= 0 and routed_latency_ms(probs, lat, price) <= budget
    if price > 0:  # a hair cheaper misses it (the bisection's tolerance, 1e-9 x 2 / the smallest gap)
        assert routed_latency_ms(probs, lat, price - 2e-9 / (lat[lat > lat[0]] - lat[0]).min()) > budget
    assert figures["routed"]["latency_ms"] <= budget
    assert 0 <= figures["routed"]["accuracy"] <= figures["oracle"]["accuracy"] <= 1
    assert len(figures["history"]) == 1 and len(figures["auc"]) == router.k
    again = fit_router(bandit, candidates, 4, budget, TINY, epochs=1, batch_size=32, limit=200, seed=0)
    np.testing.assert_array_equal(again[1], family)  # the same seed, the same fit
    assert again[3] == price and torch.equal(again[0].head.weight, router.head.weight)
    assert seen == [("train", 200)] * 9  # the second fit read every answer from the outcomes file
    test_bandit = InstaNASBandit(**(assets | {"split": "test"}))
    with pytest.raises(ValueError, match="test split"):
        fit_router(test_bandit, candidates, 4, budget, TINY, epochs=1)
