"""The measurement of instance-awareness: the static frontier, the information measures, the oracle,
the random-mixture null on a trained supernet, and the benchmark end to end."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from instanas_gym.agents.config import ControllerConfig
from instanas_gym.agents.controller import Controller, save_controller
from instanas_gym.agents.policy import random_policy, save_policy
from instanas_gym.agents.router import Router
from instanas_gym.agents.router_file import save_router
from instanas_gym.judge.awareness import frontier_results, instance_awareness, random_mixture_policy
from instanas_gym.judge.frontier import frontier_accuracy, frontier_latency, gain_over_frontier, oracle, static_frontier
from instanas_gym.judge.information import (
    conditional_mutual_information_bits,
    difficulty_bins,
    mutual_information_bits,
    permutation_cmi_bits,
    permutation_mi_bits,
)
from instanas_gym.model import outcomes as outcomes_module
from instanas_gym.model.outcomes import OutcomeStore, correct_per_image, per_image_loss
from instanas_gym.space.family import probe_masks
from instanas_gym.space.masks import all_ops_mask, fastest_mask, mobilenetv2_mask

from .conftest import env_config, own_copy

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_instance_aware.py"

# (latency ms, accuracy): three vertices; (1.5, 0.59375) is Pareto-optimal but below the chord of
# (1, 0.5)-(2, 0.75) (0.625 there); (3, 0.78125) is below the chord (2, 0.75)-(4, 0.875) (0.8125
# there); (5, 0.8) is dominated by (4, 0.875); (2, 0.7) is as slow as (2, 0.75) and less accurate.
POINTS = [(4.0, 0.875), (1.5, 0.59375), (2.0, 0.7), (1.0, 0.5), (3.0, 0.78125), (5.0, 0.8), (2.0, 0.75)]


def frontier_of_points():
    lat, acc = zip(*POINTS)
    return static_frontier(np.array(lat), np.array(acc))


def test_frontier_is_the_upper_concave_envelope():
    lat, acc = frontier_of_points()
    assert lat.tolist() == [1.0, 2.0, 4.0] and acc.tolist() == [0.5, 0.75, 0.875]
    # the Pareto staircase would keep (1.5, 0.59375): a mixture of its neighbours beats it
    assert frontier_accuracy((lat, acc), 1.5) == 0.625
    assert frontier_accuracy((lat, acc), 3.0) == 0.8125
    assert frontier_accuracy((lat, acc), 2.0) == 0.75
    assert frontier_accuracy((lat, acc), 9.0) == 0.875  # beyond the slowest vertex: run it
    assert math.isnan(frontier_accuracy((lat, acc), 0.5))  # faster than any architecture
    np.testing.assert_array_equal(frontier_accuracy((lat, acc), np.array([1.0, 4.0])), [0.5, 0.875])
    single = static_frontier(np.array([3.0, 2.0]), np.array([0.4, 0.6]))  # the slower one is dominated
    assert single[0].tolist() == [2.0] and single[1].tolist() == [0.6]
    with pytest.raises(ValueError):
        static_frontier(np.array([1.0]), np.array([0.5, 0.6]))


def test_frontier_latency_and_gain_on_hand_made_numbers():
    front = frontier_of_points()
    assert frontier_latency(front, 0.8125) == 3.0
    assert frontier_latency(front, 0.625) == 1.5
    assert frontier_latency(front, 0.3) == 1.0  # below the fastest vertex's accuracy: the fastest
    assert math.isnan(frontier_latency(front, 0.9))
    gain = gain_over_frontier(front, 2.0, 0.8125)  # as accurate as the frontier at 3 ms, at 2 ms
    assert gain["points"] == pytest.approx(6.25, abs=1e-12)
    assert gain["latency_pct"] == pytest.approx(100 / 3, abs=1e-12)
    below = gain_over_frontier(front, 3.0, 0.75)  # the frontier reaches 0.75 at 2 ms
    assert below["points"] == pytest.approx(-6.25, abs=1e-12)
    assert below["latency_pct"] == pytest.approx(-50.0, abs=1e-12)
    on = gain_over_frontier(front, np.array([1.5, 3.0]), np.array([0.625, 0.8125]))
    np.testing.assert_allclose(on["points"], 0.0, atol=1e-12)
    np.testing.assert_allclose(on["latency_pct"], 0.0, atol=1e-12)
    assert math.isnan(gain_over_frontier(front, 0.5, 0.4)["points"])


def test_frontier_results_on_a_hand_made_report():
    lat, acc = zip(*POINTS)
    front = frontier_of_points()
    report = {
        "policy": "router", "accuracy": 0.8, "network_ms": 2.25, "e2e_ms": 2.5, "distinct_archs": 2,
        "archs_2pct": 2, "arch_share": np.array([0.6, 0.4]), "gain": gain_over_frontier(front, 2.5, 0.8),
        "mi_class_bits": 0.3, "mi_difficulty_bits": 0.1, "cmi_difficulty_class_bits": 0.05,
        "frontier": {"latency_ms": front[0], "accuracy": front[1]},
        "family_latency_ms": np.array(lat), "family_accuracy": np.array(acc),
        "family_names": ["a", "b", "c", "d", "mobilenetv2", "f", "g"],
        "oracle": {"accuracy": 0.95, "latency_ms": 1.2},
    }
    rows = frontier_results(report)
    assert list(rows) == ["router", "static frontier at that latency", "best single within it (g)",
                          "MobileNetV2 path", "oracle (reads the labels)"]
    assert rows["router"]["gain_points"] == pytest.approx(1.875) and rows["router"]["e2e_ms"] == 2.5
    assert rows["router"]["archs_2pct"] == 2
    # the frontier at 2.5 ms: a quarter of the way from (2, 0.75) to (4, 0.875)
    assert rows["static frontier at that latency"]["accuracy"] == pytest.approx(0.78125)
    # within 2.5 ms, (2, 0.75) is the most accurate architecture; (3, 0.78125) is too slow
    best = rows["best single within it (g)"]
    assert (best["network_latency_ms"], best["accuracy"]) == (2.0, 0.75)
    assert rows["MobileNetV2 path"] == {"accuracy": 0.78125, "network_latency_ms": 3.0, "e2e_ms": 3.0,
                                        "distinct_archs": 1, "archs_2pct": 1, "top_share": 1.0}
    assert rows["oracle (reads the labels)"] == {"accuracy": 0.95, "network_latency_ms": 1.2}


def test_mutual_information():
    i = np.arange(400)
    x, y = i % 2, (i // 2) % 4  # every (x, y) pair equally often: exactly independent
    assert mutual_information_bits(x, y) == pytest.approx(0.0, abs=1e-12)
    assert mutual_information_bits(y, y) == pytest.approx(2.0, abs=1e-12)  # H(y) of 4 equal classes
    skew = np.array([0, 0, 0, 1, 2, 2, 1, 0])
    p = np.bincount(skew) / len(skew)
    assert mutual_information_bits(skew, skew) == pytest.approx(-(p * np.log2(p)).sum(), abs=1e-12)
    z = y // 2 + 2 * (i % 3 == 0)  # y's high bit, then noise: dependent on y, a different alphabet
    assert mutual_information_bits(z, y) == pytest.approx(mutual_information_bits(y, z), abs=1e-12)
    assert 0.5 < mutual_information_bits(z, y) < 1.5  # about the one bit z keeps of y
    # an architecture per image "explains" the class fully: the shuffled null says so too
    per_image, labels = np.arange(60), np.arange(60) % 3
    assert mutual_information_bits(per_image, labels) == pytest.approx(math.log2(3))
    assert permutation_mi_bits(per_image, labels) == pytest.approx(math.log2(3))
    assert permutation_mi_bits(y, y) < 0.2
    with pytest.raises(ValueError):
        mutual_information_bits(x, y[:-1])


def test_conditional_mutual_information():
    """I(x; y | z): the information x holds about y beyond z. A choice that copies the class (z) says
    nothing more about y once z is known; one that copies y within every class says H(y | z)."""
    i = np.arange(800)
    z, y = i % 4, (i // 4) % 2  # every (z, y) pair equally often: y is independent of z, 1 bit
    assert conditional_mutual_information_bits(z, y, z) == pytest.approx(0.0, abs=1e-12)
    assert conditional_mutual_information_bits(y, y, z) == pytest.approx(1.0, abs=1e-12)
    assert conditional_mutual_information_bits(2 * y + z, y, z) == pytest.approx(1.0, abs=1e-12)
    # in one class only, x copies y: a quarter of the images, one bit each
    x = np.where(z == 0, y, 0)
    assert conditional_mutual_information_bits(x, y, z) == pytest.approx(0.25, abs=1e-12)
    assert mutual_information_bits(x, y) < 0.25  # unconditioned, the other classes dilute it
    assert permutation_cmi_bits(y, y, z) < 0.05 and permutation_cmi_bits(z, y, z) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        conditional_mutual_information_bits(x, y, z[:-1])


def test_difficulty_bins_are_quantiles():
    loss = np.random.default_rng(0).permutation(np.arange(100.0)) ** 2
    bins = difficulty_bins(loss, 5)
    assert np.bincount(bins).tolist() == [20] * 5
    np.testing.assert_array_equal(bins, (np.sqrt(loss) // 20).astype(int))  # rank // 20
    assert (np.diff(bins[np.argsort(loss)]) >= 0).all()
    assert difficulty_bins(loss, 1).max() == 0


def test_oracle_on_a_hand_made_matrix():
    correct = np.array([[0, 1, 0, 0, 1],    # 2 ms
                        [1, 1, 0, 0, 0],    # 1 ms
                        [1, 0, 1, 0, 1]],   # 5 ms
                       dtype=bool)
    out = oracle(correct, np.array([2.0, 1.0, 5.0]))
    assert out["choice"].tolist() == [1, 1, 2, 1, 0]  # image 3: nobody right, the cheapest
    assert out["accuracy"] == pytest.approx(0.8)
    assert out["latency_ms"] == pytest.approx((1 + 1 + 5 + 1 + 2) / 5)


def test_per_image_loss_restores_mode(trained_env):
    bandit = trained_env.bandit("test")
    model = bandit.model.train()
    loss = per_image_loss(model, bandit.data, all_ops_mask(), batch_size=100)
    assert model.training
    model.eval()
    right = correct_per_image(model, bandit.data, all_ops_mask())
    assert loss.shape == (bandit.num_images,) and (loss >= 0).all()
    assert loss[right].mean() < loss[~right].mean()  # misclassified images cost more


def test_random_two_mask_mixture_lands_on_the_frontier(trained_env):
    """The null: a 50/50 random per-image mixture of two architectures is on the chord between them.

    With z_i ~ Bernoulli(1/2) choosing A and d_i = right_A(i) - right_B(i), the gain at the realised
    latency is (1/N) sum_i (z_i - mean z) d_i: mean 0, standard deviation about sqrt(var(d) / (4 N)).
    The tolerance is 4 of those; the Pareto staircase (or any frontier without the chord) would put
    the mixture half the accuracy gap above it, which the test checks is far outside the tolerance."""
    bandit = trained_env.bandit("test")
    slow, fast = all_ops_mask(), fastest_mask(bandit.table.ops_ms, bandit.table.empty_ms)
    n = bandit.num_images  # 256 synthetic test images
    report = instance_awareness(random_mixture_policy(slow, fast, seed=0), bandit, np.stack([slow, fast]),
                                limit=n, batch_size=64)
    assert len(report["family_latency_ms"]) == 2 and report["distinct_archs"] == 2
    acc_slow, acc_fast = report["family_accuracy"]
    assert acc_slow > acc_fast + 0.15, report["family_accuracy"]  # two frontier vertices
    assert len(report["frontier"]["latency_ms"]) == 2
    right_slow, right_fast = (correct_per_image(bandit.model, bandit.data, m) for m in (slow, fast))
    d = right_slow.astype(float) - right_fast
    tolerance = 100 * 4 * math.sqrt(d.var() / (4 * n))  # points
    assert tolerance < 100 * (acc_slow - acc_fast) / 2
    assert abs(report["gain"]["points"]) < tolerance, (report["gain"], tolerance)
    # the policy as run agrees with each architecture run alone
    assert report["accuracy"] == pytest.approx(np.where(report["arch"] == 0, right_slow, right_fast).mean())
    assert 0.35 < report["arch_share"][1] <= report["arch_share"][0] < 0.65
    assert report["e2e_ms"] == report["network_ms"] == pytest.approx(
        np.dot([np.mean(report["arch"] == k) for k in (0, 1)], report["family_latency_ms"]))
    assert report["mi_class_bits"] < report["mi_class_null_bits"] + 0.1
    assert report["oracle"]["accuracy"] >= acc_slow


def test_benchmark_end_to_end(trained_assets, tmp_path):
    """An untrained controller keeps every op (p = 0.5 everywhere): a single architecture, which can
    never beat the frontier of a family that holds it. Controller, policy and router files alike."""
    torch.manual_seed(0)
    save_controller(Controller(in_channels=1, widths=(4, 8), strides=(1, 2)), tmp_path / "controller.pt")
    spec = importlib.util.spec_from_file_location("bench_instance_aware", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "ia"
    report = bench.main(["--controller", str(tmp_path / "controller.pt"), "--supernet", trained_assets["supernet"],
                         "--latency-table", trained_assets["latency_table"], "--data-root", trained_assets["data_root"],
                         "--limit", "96", "--out", str(out)])
    for name in ("instance_aware.json", "instance_aware.png", "hardest_easiest.png"):
        assert (out / name).stat().st_size > 0
    saved = json.loads((out / "instance_aware.json").read_text())
    assert saved["images"] == 96 and saved["distinct_archs"] == 1 and len(saved["arch"]) == 96
    assert saved["family_names"][saved["arch"][0]] == "all_ops"
    assert len(saved["family_names"]) == len(saved["family_latency_ms"]) <= 18
    assert saved["controller_ms"] > 0
    assert saved["e2e_ms"] == pytest.approx(saved["network_ms"] + saved["controller_ms"])
    assert report["gain"]["points"] <= 1e-9
    # a policy file (train-reinforce's, search's) holding that controller: the same judgement
    save_policy(tmp_path / "policy.pt", "masks", Controller(in_channels=1, widths=(4, 8), strides=(1, 2)))
    again = bench.main(["--controller", str(tmp_path / "policy.pt"), "--supernet", trained_assets["supernet"],
                        "--latency-table", trained_assets["latency_table"], "--data-root", trained_assets["data_root"],
                        "--limit", "96", "--out", str(tmp_path / "ia_policy")])
    assert again["distinct_archs"] == 1 and again["accuracy"] == report["accuracy"]
    # a router file (the bundled router's format) is judged the same way
    family = np.stack([all_ops_mask(), mobilenetv2_mask()])
    save_router(Router(ControllerConfig(widths=(4, 8)), 1, 2), tmp_path / "router.pt", family, np.array([2.0, 1.0]), 0.0)
    routed = bench.main(["--controller", str(tmp_path / "router.pt"), "--supernet", trained_assets["supernet"],
                         "--latency-table", trained_assets["latency_table"], "--data-root", trained_assets["data_root"],
                         "--limit", "96", "--own-limit", "1", "--out", str(tmp_path / "ia_router")])
    assert 1 <= routed["distinct_archs"] <= 2 and routed["archs_2pct"] <= routed["distinct_archs"]
    assert routed["controller_ms"] > 0 and routed["cmi_difficulty_class_bits"] >= 0


def test_a_shared_store_gives_the_same_report_and_spares_the_runs(trained_assets, tmp_path, monkeypatch):
    """Single architectures' answers (shared by every policy a comparison judges) change no figure; a
    second policy judged with the same store runs only the architectures it does not hold yet.
    ``own_limit`` scores the references and the most used own architectures only, leaving the rest
    out of the frontier."""
    bandit = env_config(own_copy(trained_assets, tmp_path)).bandit("test")
    probes = np.stack([m for _, m in probe_masks(bandit.table, seed=0)])
    runs = []
    answers = outcomes_module.answers
    monkeypatch.setattr(outcomes_module, "answers", lambda *a, **k: runs.append(1) or answers(*a, **k))
    memory = OutcomeStore(bandit.model, None, bandit.data, progress=False)  # kept in memory only
    plain = instance_awareness(random_policy(0), bandit, probes, limit=24, store=memory)
    assert len(runs) == 18 + 24 + 1  # every image its own random architecture, and the all-ops loss
    assert plain["distinct_archs"] == plain["archs_2pct"] == 24  # each serves 1/24 of the images
    again = instance_awareness(random_policy(0), bandit, probes, limit=24, store=memory)
    assert len(runs) == 18 + 24 + 1 and again.keys() == plain.keys()  # nothing ran again
    for key in plain:
        np.testing.assert_equal(again[key], plain[key], err_msg=key)
    fresh = instance_awareness(random_policy(0), bandit, probes, limit=24)  # the bandit's own store (a file)
    for key in plain:
        np.testing.assert_equal(fresh[key], plain[key], err_msg=key)
    del runs[:]
    limited = instance_awareness(random_policy(1), bandit, probes, limit=24, store=memory, own_limit=3)
    assert len(runs) == 3 and limited["distinct_archs"] == 24 and len(limited["family_masks"]) == 18 + 24
    assert np.isnan(limited["family_accuracy"]).sum() == 21 and np.isfinite(limited["family_accuracy"][:21]).all()
    full = instance_awareness(random_policy(1), bandit, probes, limit=24, store=memory)
    assert len(runs) == 3 + 21
    assert limited["mi_class_bits"] == full["mi_class_bits"] and limited["accuracy"] == full["accuracy"]
