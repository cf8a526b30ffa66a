"""REINFORCE over a family of architectures: the categorical update learns the right arm per image
class, its baselines, its checks, and whole runs of the one REINFORCE loop on a tiny supernet, saved
as a policy file and judged; and that a run is a function of its settings alone."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import torch

from instanas_gym.agents.config import ControllerConfig, PolicyGradientConfig, ReinforceConfig
from instanas_gym.agents.policy import load_policy
from instanas_gym.agents.policy_gradient import ArmLearner
from instanas_gym.agents.reinforce import train_reinforce
from instanas_gym.agents.router import Router
from instanas_gym.agents.router_file import load_router, resolve_family, save_router
from instanas_gym.envs.config import JudgeConfig
from instanas_gym.envs.reward import RewardConfig
from instanas_gym.judge.awareness import frontier_results, judge_policy
from instanas_gym.model.outcomes import outcomes_key, outcomes_path, write_outcomes
from instanas_gym.space.family import ArchitectureFamily, save_family
from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask, single_op_mask
from instanas_gym.utils.paths import BUNDLED_ROUTER
from instanas_gym.utils.run import RunConfig

from .conftest import env_config, own_copy

TINY = ControllerConfig(widths=(4, 8), input_size=14)


def class_images(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 16, 16, 1) of 4 classes, each class one lit quadrant over noise."""
    labels = rng.integers(0, 4, n)
    images = rng.integers(0, 40, (n, 16, 16, 1))
    for i, c in enumerate(labels):
        r, q = divmod(int(c), 2)
        images[i, 8 * r : 8 * r + 8, 8 * q : 8 * q + 8] += 200
    return images.astype(np.uint8), labels


def rewards_for(arms: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """+10 where the arm is the right one for the class (arm 0 for classes 0, 1; arm 1 for 2, 3), else -10."""
    return np.where(arms == (labels[:, None] >= 2), 10.0, -10.0)


def learner(k: int, cfg: PolicyGradientConfig, seed: int = 0) -> ArmLearner:
    policy = Router(ControllerConfig(widths=(4, 8), input_size=None), 1, k)
    return ArmLearner(policy, k, cfg, torch.Generator().manual_seed(seed), np.zeros((k, 17, 5), np.uint8))


@pytest.mark.parametrize("samples", [1, 4])
def test_family_reinforce_learns_the_right_arm_per_class(samples):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    pg = learner(2, PolicyGradientConfig(lr=1e-2, samples=samples))
    for _ in range(120):
        images, labels = class_images(rng, 32)
        s = pg.sample(torch.from_numpy(images))
        assert s.arms.shape == (32, samples) and s.probs.shape == (32, 2)
        assert float(s.probs.detach().min()) >= 0.1 / 2 - 1e-6  # the uniform share: mix / K
        rewards = rewards_for(s.arms.numpy(), labels)
        baseline = rewards_for(s.greedy[:, None], labels)[:, 0] if samples == 1 else None
        stats = pg.update(s, rewards, baseline)
    assert {"entropy", "loss", "grad_norm", "greedy_prob"} <= set(stats)
    assert pg.entropy_coef == 2.0  # the arms' default entropy bonus
    images, labels = class_images(rng, 400)  # images it never saw
    with torch.no_grad():
        greedy = pg.network(torch.from_numpy(images)).argmax(1).numpy()
    for c in range(4):
        assert (greedy[labels == c] == int(c >= 2)).mean() > 0.9, c


def test_leave_one_out_baseline_and_checks():
    pg = learner(3, PolicyGradientConfig(lr=1e-2, samples=2, entropy_coef=0.0, mix=0.0))
    with torch.no_grad():
        pg.network.head.weight.zero_()
        pg.network.head.bias.zero_()
    images = np.zeros((4, 16, 16, 1), np.uint8)
    s = pg.sample(torch.from_numpy(images))
    same = pg.update(s, np.full((4, 2), 5.0))  # equal rewards: every advantage is 0, so no gradient
    assert same["grad_norm"] == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="shape"):
        pg.update(pg.sample(torch.from_numpy(images)), np.zeros((4, 3)))
    one = learner(3, PolicyGradientConfig(samples=1))
    with pytest.raises(ValueError, match="baseline"):
        one.update(one.sample(torch.from_numpy(images)), np.zeros((4, 1)))
    for bad in ({"mix": 1.5}, {"samples": 0}, {"lr": 0.0}, {"entropy_coef": -1.0}):
        with pytest.raises(ValueError, match=f"pg.{next(iter(bad))}"):
            PolicyGradientConfig(**bad)


def test_resolve_family_from_a_family_file_a_router_file_or_the_bundled_family(tmp_path):
    family = ArchitectureFamily(np.stack([mobilenetv2_mask(), all_ops_mask()]), ("mbv2", "all"))
    save_family(tmp_path / "f.json", family)
    fam, source = resolve_family(str(tmp_path / "f.json"), "fashion_mnist")
    assert fam.names == ("mbv2", "all") and source == tmp_path / "f.json"
    router = Router(ControllerConfig(widths=(4, 8)), 1, 2)
    save_router(router, tmp_path / "r.pt", family.masks, np.array([1.0, 2.0]), 0.0)
    assert np.array_equal(resolve_family(str(tmp_path / "r.pt"), "fashion_mnist")[0].masks, family.masks)
    bundled, path = resolve_family(None, "fashion_mnist")
    assert bundled.k == 6 and bundled.dataset == "fashion_mnist" and path.name == "family_fashion_mnist.json"
    assert np.array_equal(bundled.masks, load_router(BUNDLED_ROUTER).family_masks)  # the demo's router's family
    with pytest.raises(ValueError, match="no family ships"):
        resolve_family(None, "cifar10")


FAMILY3 = ArchitectureFamily(np.stack([mobilenetv2_mask(), all_ops_mask(), single_op_mask(4)]),
                             ("mbv2", "all ops", "basic"), dataset="fashion_mnist")


def test_a_whole_run_saves_a_policy_file_and_is_judged(trained_assets, tmp_path):
    save_family(tmp_path / "family.json", FAMILY3)
    env = env_config(own_copy(trained_assets, tmp_path / "net"), family=str(tmp_path / "family.json"))
    run = RunConfig(threads=1, out=str(tmp_path / "run"))
    cfg = ReinforceConfig(view="family", env=env, run=run, controller=TINY, total_steps=320, batch_size=32,
                          warm_start_images=128, warm_start_epochs=1, judge=JudgeConfig(limit=64), log_every=5)
    network, history = train_reinforce(cfg)
    assert len(history) == 2
    assert (tmp_path / "net" / "last_outcomes_train.npz").is_file()  # lookup mode, the default
    with open(tmp_path / "run" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {"reward", "accuracy", "entropy", "distinct_arms", "upper_ms"} <= set(rows[0])
    saved = load_policy(tmp_path / "run" / "policy.pt")
    assert saved.view == "family" and saved.family.names == FAMILY3.names
    assert np.array_equal(saved.family.masks, FAMILY3.masks)
    assert saved.meta["reinforce_config"]["total_steps"] == 320 and saved.meta["bounds"]["upper_ms"] > 0
    images = env.bandit("test").data.images[:16]
    with torch.no_grad():
        greedy = network(torch.from_numpy(images)).argmax(1).numpy()
    assert np.array_equal(saved.policy()(images), FAMILY3.masks[greedy])
    controller = saved.controller()  # the greedy arm as mask logits (>= 0 where the arm's mask has the op)
    with torch.no_grad():
        assert np.array_equal((controller(torch.from_numpy(images)) >= 0).numpy(), FAMILY3.masks[greedy].astype(bool))
    report = judge_policy(saved, env, tmp_path / "run", run, JudgeConfig(limit=64, measure=8))
    assert report["images"] == 64 and 1 <= report["distinct_archs"] <= 3
    clock = report["clock"]  # the networks of the first 8 images on the clock, beside the table
    arch = np.asarray(report["arch"][:8])
    assert clock["images"] == 8 and clock["clock_ms"] > 0
    assert clock["table_ms"] == pytest.approx(np.mean(np.asarray(report["family_latency_ms"])[arch]))
    assert (tmp_path / "run" / "instance_aware.json").is_file()
    rows = frontier_results(report)
    assert list(rows)[:2] == ["REINFORCE (family)", "static frontier at that latency"]
    assert rows["REINFORCE (family)"]["e2e_ms"] == pytest.approx(report["network_ms"] + report["controller_ms"])


def test_the_command_ends_with_the_frontier_table(trained_assets, tmp_path, capsys, monkeypatch):
    from instanas_gym.cli import main

    family = ArchitectureFamily(np.stack([mobilenetv2_mask(), single_op_mask(4)]), ("mbv2", "basic"),
                                dataset="fashion_mnist")
    save_family(tmp_path / "family.json", family)
    monkeypatch.setenv("COLUMNS", "160")
    main(["train-reinforce", "family", "--env.data.root", trained_assets["data_root"], "--env.supernet",
          trained_assets["supernet"], "--env.latency-table", trained_assets["latency_table"], "--env.split", "train",
          "--env.family", str(tmp_path / "family.json"), "--run.threads", "1", "--run.out", str(tmp_path / "run"),
          "--controller.widths", "4", "8", "--total-steps", "64", "--batch-size", "16", "--judge.limit", "32"])
    text = capsys.readouterr().out
    for line in ("static frontier at", "best single within", "MobileNetV2 path", "oracle (reads the", "architectures used:"):
        assert line in text, line
    assert load_policy(tmp_path / "run" / "policy.pt").view == "family"


def test_lookup_and_live_runs_learn_the_same_policy(trained_env, tmp_path):
    family = ArchitectureFamily(np.stack([mobilenetv2_mask(), all_ops_mask()]), dataset="fashion_mnist")
    save_family(tmp_path / "family.json", family)
    networks = []
    for lookup in (True, False):
        env = dataclasses.replace(trained_env, family=str(tmp_path / "family.json"), lookup=lookup)
        cfg = ReinforceConfig(view="family", env=env, controller=TINY, total_steps=128, batch_size=16,
                              run=RunConfig(threads=1, out=str(tmp_path / f"run_{lookup}")))
        networks.append(train_reinforce(cfg)[0])
    for (name, a), b in zip(networks[0].state_dict().items(), networks[1].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("view", ["masks", "family"])
def test_two_runs_with_the_same_seed_give_identical_weights(trained_env, tmp_path, view):
    """Nothing but the settings decides a run: no clock, no machine load (the latency table is a
    file), the same seed. A third run with another seed differs."""
    save_family(tmp_path / "family.json", FAMILY3)
    env = dataclasses.replace(trained_env, family=str(tmp_path / "family.json"))
    weights = []
    for i, seed in enumerate((0, 0, 1)):
        cfg = ReinforceConfig(view=view, env=env, controller=TINY, total_steps=64, batch_size=16,
                              run=RunConfig(threads=1, seed=seed, out=str(tmp_path / f"run{i}")))
        weights.append(train_reinforce(cfg)[0].state_dict())
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name
    assert any(not torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_on_a_tiny_env_it_learns_which_arm_is_right_for_which_class(trained_assets, tmp_path):
    """A lookup env whose outcomes are made by hand: arm 0 is right on classes 0-4, arm 1 on 5-9;
    both arms pay when right (UB fixed above both), so only the class decides the reward."""
    family = ArchitectureFamily(np.stack([single_op_mask(0), single_op_mask(2)]), ("a", "b"), dataset="fashion_mnist")
    save_family(tmp_path / "family.json", family)
    kwargs = own_copy(trained_assets, tmp_path / "net")
    probe = env_config(kwargs).bandit("train")  # the live bandit, for the outcomes' key
    labels = probe.data.labels
    right = np.stack([labels < 5, labels >= 5])
    prediction = np.where(right, labels[None], (labels[None] + 1) % 10)
    probs = np.eye(10, dtype=np.float16)[prediction]
    key = outcomes_key(kwargs["supernet"], probe.data) | {"scored_images": len(labels)}
    masks = probe.model.space.effective_mask(family.masks).astype(np.uint8)
    write_outcomes(outcomes_path(kwargs["supernet"], "train"), key, masks, prediction, np.full(right.shape, 0.9),
                   probs, np.zeros(len(labels)))
    lat = max(probe.table.cells_ms(m) for m in family.masks)
    env = env_config(kwargs, family=str(tmp_path / "family.json"),
                     reward=RewardConfig(lower_ms=0.0, upper_ms=2.0 * lat, anneal=False))
    cfg = ReinforceConfig(view="family", env=env, pg=PolicyGradientConfig(lr=1e-2), total_steps=6400, log_every=50,
                          run=RunConfig(threads=1, out=str(tmp_path / "run")))
    network, history = train_reinforce(cfg)
    assert history[-1]["upper_ms"] == pytest.approx(2.0 * lat)  # the bound set by hand held throughout
    assert history[-1]["accuracy"] > history[0]["accuracy"]
    test = env.bandit("test").data
    with torch.no_grad():
        greedy = network(torch.from_numpy(test.images)).argmax(1).numpy()
    assert (greedy == (test.labels >= 5)).mean() > 0.9
