"""Vowpal Wabbit's contextual-bandit baseline on the family view: features, the learner, a run."""

from __future__ import annotations

import numpy as np
import pytest

from instanas_gym.agents.vw import VWFamilyAgent, image_features, train_vw, vw_latency_ms, vw_policy
from instanas_gym.envs.family import FamilyVectorAction
from instanas_gym.space.family import ArchitectureFamily
from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask

from .conftest import env_config

pytest.importorskip("vowpalwabbit")

FAMILY = ArchitectureFamily(np.stack([mobilenetv2_mask(), all_ops_mask()]), ("mbv2", "all ops"))


def test_image_features_pool_each_channel_to_7x7_in_unit_range():
    images = np.zeros((3, 28, 28, 1), np.uint8)
    images[1] = 255
    images[2, :14] = 255  # top half white
    f = image_features(images)
    assert f.shape == (3, 49) and f.min() >= 0 and f.max() <= 1
    assert not f[0].any() and np.allclose(f[1], 1.0)
    assert np.allclose(f[2].reshape(7, 7)[:3], 1.0) and np.allclose(f[2].reshape(7, 7)[4:], 0.0)
    assert image_features(np.zeros((2, 32, 32, 3), np.uint8)).shape == (2, 147)


def test_vw_learns_which_arm_suits_which_image():
    agent = VWFamilyAgent(FAMILY, np.array([0.3, 1.6]), epsilon=0.1, seed=0)
    rng = np.random.default_rng(0)

    def batch(n: int) -> tuple[np.ndarray, np.ndarray]:
        bright = rng.random(n) < 0.5
        images = (rng.integers(0, 100, (n, 28, 28, 1)) + np.where(bright, 150, 0)[:, None, None, None]).astype(np.uint8)
        return image_features(images), bright

    for _ in range(100):
        features, bright = batch(32)
        arms, probs = agent.act(features)
        assert ((probs > 0) & (probs <= 1)).all()
        agent.learn(features, arms, probs, np.where(arms == bright, 10.0, -10.0))
    features, bright = batch(300)
    assert (agent.greedy(features) == bright).mean() > 0.9
    explore = agent.probabilities(features)
    assert np.allclose(explore.sum(1), 1.0) and explore.min() >= 0.05 - 1e-6  # epsilon / K
    with pytest.raises(ValueError, match="latency_ms"):
        VWFamilyAgent(FAMILY, np.array([1.0]))
    with pytest.raises(ValueError, match="epsilon"):
        VWFamilyAgent(FAMILY, np.array([1.0, 2.0]), epsilon=2.0)


def test_train_vw_on_the_family_env(tiny_assets, tmp_path):
    env = env_config(tiny_assets)
    venv = FamilyVectorAction(env.make_vec(16), FAMILY)
    agent, rows = train_vw(venv, FAMILY, total_steps=160, seed=0, out=tmp_path)
    assert rows and {"reward", "accuracy", "latency_ms", "upper_ms"} <= set(rows[-1])
    assert (tmp_path / "log.csv").is_file()
    images = env.bandit("test").data.images[:8]
    masks = vw_policy(agent, FAMILY)(images)
    assert masks.shape == (8, 17, 5) and all(any((m == a).all() for a in FAMILY.masks) for m in masks)
    ms = vw_latency_ms(agent, images.shape[1:], repeats=5)
    assert 0 < ms < np.inf  # on the clock: any positive ms
