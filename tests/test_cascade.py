"""The cascade view: rewards and stopping worked out by hand on hand-made answers, refused actions,
lookup against live, learning to stop early on easy images, and the deployed cascade."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from instanas_gym.agents.cascade import (
    CascadePolicy,
    ThresholdPolicy,
    fit_threshold_policy,
    greedy_actor,
    run_policy,
    threshold_frontier,
)
from instanas_gym.agents.config import PolicyGradientConfig
from instanas_gym.agents.policy import load_policy, save_policy
from instanas_gym.agents.policy_gradient import CascadeLearner
from instanas_gym.envs.cascade import CascadeEnv
from instanas_gym.envs.cascade_vector import CascadeVectorEnv
from instanas_gym.model.outcomes import Outcomes
from instanas_gym.space.family import ArchitectureFamily
from instanas_gym.space.masks import all_ops_mask, single_op_mask

from .conftest import env_config, own_copy

FAMILY = ArchitectureFamily(np.stack([single_op_mask(1), all_ops_mask()]), ("cheap", "big"), dataset="fashion_mnist")


def hand_made(n: int, classes: int, labels: np.ndarray) -> Outcomes:
    """Two architectures on ``n`` images: the cheap one right and sure (0.95) on the even images, wrong
    and unsure (0.4) on the odd ones; the big one right everywhere (0.9)."""
    prediction = np.stack([np.where(np.arange(n) % 2 == 0, labels, (labels + 1) % classes), labels])
    confidence = np.stack([np.where(np.arange(n) % 2 == 0, 0.95, 0.4), np.full(n, 0.9)])
    probs = np.zeros((2, n, classes), np.float16)
    for k in range(2):
        probs[k, np.arange(n), prediction[k]] = confidence[k]
        rest = (1 - confidence[k]) / (classes - 1)
        probs[k] += np.where(probs[k] == 0, rest[:, None], 0).astype(np.float16)
    return Outcomes(np.stack(FAMILY.masks), prediction.astype(np.int64), confidence, probs, labels)


@pytest.fixture
def cascade_env(tiny_assets):
    def make(n_envs: int = 1, **kw):
        venv = CascadeVectorEnv(n_envs, family=FAMILY, progress=False, **{**tiny_assets, **kw})
        b = venv.bandit
        venv.cascade.outcomes = hand_made(b.num_images, b.data.spec.num_classes, b.data.labels)
        return venv
    return make


def test_rewards_and_stopping_by_hand(cascade_env):
    venv = cascade_env(2, reward={"shape": "monotone", "lower_ms": 0.0, "upper_ms": 40.0})  # both paths under UB
    c, table = venv.cascade, venv.bandit.table
    ms = c.network_ms
    obs, _ = venv.reset(options={"index": [0, 1]})  # image 0 easy, image 1 hard
    obs, r, done, _, info = venv.step(np.array([0, 0]))  # both run the cheap one
    assert not done.any() and (r == 0).all() and (obs["stage"] == 1).all()
    assert obs["summary"][0, 0, 0] == pytest.approx(0.95, abs=1e-3) and obs["summary"][1, 0, 0] == pytest.approx(0.4, abs=1e-3)
    obs, r, done, _, info = venv.step(np.array([c.k, 1]))  # the easy one stops, the hard one runs the big one
    assert done[0] and not done[1]
    l_easy = ms[0] - table.fixed_ms
    assert r[0] == pytest.approx(10 * ((40 - l_easy) / 40) ** 2) and info["final_info"]["correct"][0]
    assert info["final_info"]["stages"][0] == 1 and list(info["final_info"]["arms"][0]) == [0]
    obs, r, done, _, info = venv.step(np.array([0, c.k]))  # sub-env 0 started a new image; 1 stops now
    l_hard = ms[0] + ms[1] - table.fixed_ms
    assert done[1] and r[1] == pytest.approx(10 * ((40 - l_hard) / 40) ** 2)
    assert info["final_info"]["network_latency_ms"][1] == pytest.approx(ms[0] + ms[1])


def test_the_last_stage_ends_the_episode_and_stop_first_is_refused(cascade_env):
    venv = cascade_env(1, stages=2, reward={"shape": "monotone", "lower_ms": 0.0, "upper_ms": 40.0})
    venv.reset(options={"index": 1})
    with pytest.raises(ValueError, match="STOP before any architecture ran"):
        venv.step(np.array([venv.cascade.k]))
    venv.step(np.array([0]))
    _, r, done, _, info = venv.step(np.array([1]))
    assert done[0] and info["final_info"]["stages"][0] == 2 and r[0] != 0
    with pytest.raises(ValueError, match="actions must be"):
        venv.step(np.array([7]))


def test_lookup_and_live_agree(tiny_assets):
    kw = {**tiny_assets, "family": FAMILY, "progress": False}
    lookup, live = CascadeVectorEnv(8, **kw), CascadeVectorEnv(8, lookup=False, **kw)
    rng = np.random.default_rng(0)
    a, _ = lookup.reset(seed=3)
    b, _ = live.reset(seed=3)
    for _ in range(6):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_allclose(a["probs"], b["probs"], atol=2e-3)
        actions = np.where(a["stage"] == 0, rng.integers(0, 2, 8), rng.integers(0, 3, 8))
        a, ra, da, _, ia = lookup.step(actions)
        b, rb, db, _, ib = live.step(actions)
        np.testing.assert_array_equal(da, db)
        np.testing.assert_allclose(ra, rb)


def test_single_env_passes_gymnasium_check(tiny_assets):
    from gymnasium.utils.env_checker import check_env

    env = CascadeEnv(family=FAMILY, progress=False, **tiny_assets)
    # the checker steps with sampled actions; STOP first is refused by design, so its sampler is seeded to
    # draw an architecture first (seed 1 draws 1 of Discrete(3); the determinism check seeds 123: 0)
    env.action_space.seed(1)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match="STOP"):
        env.step(env.action_space.n - 1)


def test_a_threshold_cascade_stops_early_on_the_easy_half(cascade_env):
    venv = cascade_env(64)
    c = venv.cascade
    policy, frontier = fit_threshold_policy(c.outcomes, c.network_ms, c.stages, budget_ms=1e9)
    assert policy.rule.order[0] == 0 and frontier[-1]["accuracy"] == 1.0
    res = run_policy(greedy_actor(policy), venv, np.arange(64))
    easy = np.arange(64) % 2 == 0
    assert (res["stages"][easy] == 1).all() and (res["stages"][~easy] == 2).all() and res["correct"].all()


def test_reinforce_learns_to_stop_early_on_the_easy_half(cascade_env):
    torch.manual_seed(0)
    venv = cascade_env(32 * 4, reward={"shape": "monotone", "upper_end_frac": 3.0, "anneal": False})
    c = venv.cascade
    learner = CascadeLearner(CascadePolicy(c.k, c.stages, c.classes), PolicyGradientConfig(lr=1e-2, samples=4),
                             torch.Generator().manual_seed(0))
    images = np.random.default_rng(0).integers(0, venv.bandit.num_images, size=(150, 32))
    for idx in images:
        learner.learn_cascades(venv, idx)
    test = cascade_env(64)
    res = run_policy(greedy_actor(learner.network), test, np.arange(64))
    easy = np.arange(64) % 2 == 0
    assert (res["stages"][easy] == 1).mean() >= 0.9 and (res["stages"][~easy] >= 2).mean() >= 0.9


def test_threshold_frontier_is_a_pareto_set():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 200)
    pred = np.stack([np.where(rng.random(200) < p, labels, (labels + 1) % 10) for p in (0.6, 0.8, 0.95)])
    conf = rng.random((3, 200))
    points = threshold_frontier(pred, conf, np.array([1.0, 2.0, 4.0]), labels, stages=3, grid=6)
    lat, acc = [p["latency_ms"] for p in points], [p["accuracy"] for p in points]
    assert lat == sorted(lat) and acc == sorted(acc) and len(set(acc)) == len(acc)


def test_threshold_policy_acts_as_its_rule_and_survives_its_file(tmp_path):
    rule = ThresholdPolicy(3, 3, (2, 0), (0.7,))
    family = ArchitectureFamily(np.stack([single_op_mask(0), single_op_mask(1), all_ops_mask()]), ("a", "b", "c"))
    save_policy(tmp_path / "policy.pt", "cascade", rule, family)
    loaded = load_policy(tmp_path / "policy.pt").network  # its stored weights are all finite
    obs = {"stage": torch.tensor([0, 1, 1, 2]), "summary": torch.tensor([[[0, 0, 0]] * 3, [[0.8, 0, 0]] * 3,
                                                                         [[0.5, 0, 0]] * 3, [[0.5, 0, 0]] * 3]).float(),
           "arms": torch.full((4, 3), 3), "latency_ms": torch.zeros(4, 1), "image": torch.zeros(4, 28, 28, 1)}
    assert rule(obs).argmax(1).tolist() == [2, 3, 0, 3]
    assert loaded(obs).argmax(1).tolist() == [2, 3, 0, 3]


def test_the_pool_frontier_is_kept_in_a_small_file_keyed_by_content(tiny_assets, tmp_path, monkeypatch):
    from instanas_gym.judge import pool as pool_module
    from instanas_gym.utils.files import FileFormatError

    kw = own_copy(tiny_assets, tmp_path / "net")
    search = env_config(kw).bandit("train")
    names, masks = pool_module.pool_frontier(search, size=30, images=16)
    path = tmp_path / "net" / "last_pool_frontier_train.json"
    assert path.is_file() and len(names) == len(masks) >= 1
    monkeypatch.setattr(pool_module.OutcomeStore, "get", lambda *a, **k: pytest.fail("the pool was scored again"))
    again = pool_module.pool_frontier(search, size=30, images=16)
    assert again[0] == names and np.array_equal(again[1], masks)
    monkeypatch.undo()
    other = pool_module.pool_frontier(search, size=31, images=16)  # another key: scored again, replaced
    assert json.loads(path.read_text())["key"]["pool"] == 31 and len(other[0]) >= 1
    path.write_text("{not json")
    with pytest.raises(FileFormatError, match="last_pool_frontier_train.json is not a readable pool frontier file"):
        pool_module.pool_frontier(search, size=31, images=16)


def test_the_sb3_wrapper_passes_sb3s_checker(tiny_assets):
    """SB3's own checker on ``make_sb3_env`` of a cascade id: a Dict observation with a channel-first
    image; an action STOP before any architecture ran runs architecture 0 instead, so any sample is valid."""
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    from instanas_gym.envs.wrappers import make_sb3_env

    env = make_sb3_env("InstaNAS-FashionMNIST-Cascade-v0", family=FAMILY, progress=False, **tiny_assets)
    sb3_check_env(env, warn=False)
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (1, 28, 28)
    obs, _, done, _, _ = env.step(env.action_space.n - 1)  # STOP first: architecture 0 runs
    assert not done and int(obs["stage"]) == 1 and int(obs["arms"][0]) == 0
