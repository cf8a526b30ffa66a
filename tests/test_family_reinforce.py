"""REINFORCE over a family of architectures: the categorical update learns the right arm per image
class, its baselines, its checks, and a whole run on a tiny supernet saved as a router file."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from instanas_gym.agents.family_reinforce import (
    FamilyPGConfig,
    FamilyReinforce,
    FamilyReinforceConfig,
    train_family_reinforce,
)

from instanas_gym.agents.config import ControllerConfig
from instanas_gym.agents.router import Router
from instanas_gym.agents.router_file import load_router, resolve_family, save_router
from instanas_gym.envs.bandit import InstaNASBandit
from instanas_gym.envs.config import EnvConfig
from instanas_gym.judge.awareness import frontier_results, judge_family_policy
from instanas_gym.space.family import ArchitectureFamily, save_family
from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask, single_op_mask
from instanas_gym.utils.paths import BUNDLED_ROUTER

from .conftest import train_tiny_assets


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


@pytest.mark.parametrize("samples", [1, 4])
def test_family_reinforce_learns_the_right_arm_per_class(samples):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    policy = Router(ControllerConfig(widths=(4, 8), input_size=None), 1, 2)
    pg = FamilyReinforce(policy, 2, FamilyPGConfig(lr=1e-2, samples=samples), torch.Generator().manual_seed(0))
    for _ in range(120):
        images, labels = class_images(rng, 32)
        s = pg.sample(torch.from_numpy(images))
        assert s.arms.shape == (32, samples) and s.probs.shape == (32, 2)
        assert float(s.probs.detach().min()) >= 0.1 / 2 - 1e-6  # the uniform share: mix / K
        rewards = rewards_for(s.arms.numpy(), labels)
        baseline = rewards_for(s.greedy[:, None], labels)[:, 0] if samples == 1 else None
        stats = pg.update(s, rewards, baseline)
    assert {"entropy", "loss", "grad_norm", "greedy_prob"} <= set(stats)
    images, labels = class_images(rng, 400)  # images it never saw
    with torch.no_grad():
        greedy = policy(torch.from_numpy(images)).argmax(1).numpy()
    for c in range(4):
        assert (greedy[labels == c] == int(c >= 2)).mean() > 0.9, c


def test_leave_one_out_baseline_and_checks():
    policy = Router(ControllerConfig(widths=(4, 8), input_size=None), 1, 3)
    with torch.no_grad():
        policy.head.weight.zero_()
        policy.head.bias.zero_()
    pg = FamilyReinforce(policy, 3, FamilyPGConfig(lr=1e-2, samples=2, entropy_coef=0.0, mix=0.0),
                         torch.Generator().manual_seed(0))
    images = np.zeros((4, 16, 16, 1), np.uint8)
    s = pg.sample(torch.from_numpy(images))
    same = pg.update(s, np.full((4, 2), 5.0))  # equal rewards: every advantage is 0, so no gradient
    assert same["grad_norm"] == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="shape"):
        pg.update(pg.sample(torch.from_numpy(images)), np.zeros((4, 3)))
    one = FamilyReinforce(policy, 3, FamilyPGConfig(samples=1), torch.Generator())
    with pytest.raises(ValueError, match="baseline"):
        one.update(one.sample(torch.from_numpy(images)), np.zeros((4, 1)))
    for bad in ({"mix": 1.5}, {"samples": 0}, {"lr": 0.0}):
        with pytest.raises(ValueError):
            FamilyPGConfig(**bad)


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


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory, fmnist_root) -> EnvConfig:
    out = tmp_path_factory.mktemp("trained_family")
    supernet, table = train_tiny_assets(out, fmnist_root, epochs=2, train_subset=256, eval_subset=64, passes=60, warmup=5)
    return EnvConfig(data_root=str(fmnist_root), supernet=supernet, latency_table=table, split="train")


def test_a_whole_run_saves_a_router_file_and_is_judged(tiny_env, tmp_path):
    family = ArchitectureFamily(np.stack([mobilenetv2_mask(), all_ops_mask(), single_op_mask(4)]),
                                ("mbv2", "all ops", "basic"), dataset="fashion_mnist")
    save_family(tmp_path / "family.json", family)
    cfg = FamilyReinforceConfig(env=tiny_env, family=str(tmp_path / "family.json"), total_steps=320,
                                batch_size=32, warm_start_images=128, warm_start_epochs=1, threads=1, judge_limit=64,
                                out=str(tmp_path / "run"), log_every=5)
    router, fam, history = train_family_reinforce(cfg)
    assert fam.names == family.names and len(history) == 2
    assert (tmp_path / "family_outcomes_train.npz").is_file()  # lookup mode, the default
    with open(tmp_path / "run" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {"reward", "accuracy", "entropy", "distinct_arms", "upper_ms"} <= set(rows[0])
    saved = load_router(tmp_path / "run" / "controller.pt")
    assert saved.price_per_ms == 0.0 and np.array_equal(saved.family_masks, family.masks)
    assert saved.meta["family_names"] == list(family.names)
    images = tiny_env.bandit("test").data.images[:16]
    with torch.no_grad():
        greedy = router(torch.from_numpy(images)).argmax(1).numpy()
    assert np.array_equal(saved.policy()(images), family.masks[greedy])
    report = judge_family_policy(router, fam, cfg)
    assert report["images"] == 64 and 1 <= report["distinct_archs"] <= 3
    assert (tmp_path / "run" / "instance_aware.json").is_file()
    rows = frontier_results(report)
    assert list(rows)[:2] == ["REINFORCE (family)", "static frontier at that latency"]
    assert rows["REINFORCE (family)"]["e2e_ms"] == pytest.approx(report["network_ms"] + report["controller_ms"])


def test_the_command_ends_with_the_frontier_table(tiny_env, tmp_path):
    from rich.console import Console

    from instanas_gym.cli import run_train_family

    family = ArchitectureFamily(np.stack([mobilenetv2_mask(), single_op_mask(4)]), ("mbv2", "basic"),
                                dataset="fashion_mnist")
    save_family(tmp_path / "family.json", family)
    cfg = FamilyReinforceConfig(env=tiny_env, family=str(tmp_path / "family.json"), total_steps=64, batch_size=16,
                                threads=1, judge_limit=32, out=str(tmp_path / "run"))
    console = Console(record=True, width=80)
    run_train_family(cfg, console)
    text = console.export_text()
    for line in ("static frontier at", "best single within", "MobileNetV2 path", "oracle (reads the", "architectures used:"):
        assert line in text, line
    assert (tmp_path / "run" / "controller.pt").is_file()


def test_lookup_and_live_runs_learn_the_same_policy(tiny_env, tmp_path):
    family = ArchitectureFamily(np.stack([mobilenetv2_mask(), all_ops_mask()]), dataset="fashion_mnist")
    save_family(tmp_path / "family.json", family)
    routers = []
    for lookup in (True, False):
        cfg = FamilyReinforceConfig(env=tiny_env, family=str(tmp_path / "family.json"), lookup=lookup, total_steps=128,
                                    batch_size=16, threads=1, out=str(tmp_path / f"run_{lookup}"))
        routers.append(train_family_reinforce(cfg)[0])
    for (name, a), b in zip(routers[0].state_dict().items(), routers[1].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_on_a_tiny_env_it_learns_which_arm_is_right_for_which_class(tiny_env, tmp_path):
    """A lookup env whose outcomes are made by hand: arm 0 is right on classes 0-4, arm 1 on 5-9."""
    from instanas_gym.envs.reward import RewardConfig
    from instanas_gym.model.outcomes import outcomes_key, save_outcomes

    family = ArchitectureFamily(np.stack([single_op_mask(0), single_op_mask(2)]), ("a", "b"), dataset="fashion_mnist")
    save_family(tmp_path / "family.json", family)
    kwargs = {"dataset": "fashion_mnist", "split": "train", "data_root": tiny_env.data_root,
              "supernet": tiny_env.supernet, "latency_table": tiny_env.latency_table}
    for split in ("train", "test"):
        probe = InstaNASBandit(**{**kwargs, "split": split})  # the live bandit, for the outcomes' key
        labels = probe.data.labels
        right = np.stack([labels < 5, labels >= 5])
        prediction = np.where(right, labels[None], (labels[None] + 1) % 10)
        save_outcomes(tmp_path / f"family_outcomes_{split}.npz",
                      {"prediction": prediction, "confidence": np.full(right.shape, 0.9), "correct": right},
                      outcomes_key(probe, family))
    lat = max(probe.table.cells_ms(m) for m in family.masks)
    env = EnvConfig(data_root=tiny_env.data_root, supernet=tiny_env.supernet, latency_table=tiny_env.latency_table,
                    split="train", reward=RewardConfig(lower_ms=0.0, upper_ms=2.0 * lat))  # both arms pay when right
    cfg = FamilyReinforceConfig(env=env, family=str(tmp_path / "family.json"), pg=FamilyPGConfig(lr=1e-2),
                                total_steps=6400, anneal_upper=False, threads=1, out=str(tmp_path / "run"), log_every=50)
    router, _, history = train_family_reinforce(cfg)
    assert history[-1]["accuracy"] > history[0]["accuracy"]
    test = env.bandit("test").data
    with torch.no_grad():
        greedy = router(torch.from_numpy(test.images)).argmax(1).numpy()
    assert (greedy == (test.labels >= 5)).mean() > 0.9
