import csv
import dataclasses
import math

import numpy as np
import onnxruntime as ort
import pytest
import torch

from instanas_gym.agents.config import ControllerConfig, PolicyGradientConfig, ReinforceConfig
from instanas_gym.agents.controller import Controller, bounded_probs, greedy_masks
from instanas_gym.agents.policy import fixed_policy, load_policy, random_policy
from instanas_gym.agents.policy_gradient import MaskLearner, entropy, log_prob
from instanas_gym.agents.reinforce import train_reinforce
from instanas_gym.agents.sb3 import SB3Actor, sb3_latency_ms, sb3_policy, train_sb3
from instanas_gym.envs.config import JudgeConfig
from instanas_gym.envs.reward import LatencyReward, RewardConfig
from instanas_gym.judge import compare as compare_module
from instanas_gym.judge.cascade_agents import CASCADE_AGENTS
from instanas_gym.judge.compare import AWARE_KEYS, best_single_arm, compare_agents
from instanas_gym.judge.config import AGENTS, FAMILY_AGENTS, CompareConfig
from instanas_gym.judge.evaluation import evaluate_policy
from instanas_gym.latency.table import LatencyTable
from instanas_gym.model.subnetwork import onnx_bytes
from instanas_gym.space.family import ArchitectureFamily, save_family
from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask, single_op_mask
from instanas_gym.utils.run import RunConfig

from .conftest import env_config, own_copy

#: Every agent over the 85 bits and over a family's arms: the cascade agents are left out (judging one
#: scores a pool of 300 static architectures, minutes on the tiny supernet).
MASK_AND_FAMILY_AGENTS = tuple(a for a in AGENTS if a not in CASCADE_AGENTS)


def test_controller_shape_and_macs():
    c = Controller(in_channels=1)
    images = torch.randint(0, 256, (4, 28, 28, 1), dtype=torch.uint8)
    assert c(images).shape == (4, 17, 5)
    assert c(images.permute(0, 3, 1, 2)).shape == (4, 17, 5)
    assert 0 < c.macs((28, 28, 1)) < 20e6
    assert Controller(in_channels=3, input_size=16)(torch.zeros(2, 32, 32, 3, dtype=torch.uint8)).shape == (2, 17, 5)


@pytest.mark.parametrize("alpha", [0.8, 0.95])
def test_alpha_bound(alpha):
    logits = torch.linspace(-50, 50, 85).view(1, 17, 5)
    p = bounded_probs(logits, alpha)
    assert p.min().item() == pytest.approx(1 - alpha, abs=1e-6)
    assert p.max().item() == pytest.approx(alpha, abs=1e-6)
    assert ((p >= 1 - alpha - 1e-7) & (p <= alpha + 1e-7)).all()


def test_log_prob_and_gradient_by_hand():
    logit = torch.tensor([0.3, -1.2], requires_grad=True)
    alpha = 0.8
    p = bounded_probs(logit.view(1, 1, 2), alpha)
    a = torch.tensor([[[1.0, 0.0]]])
    lp = log_prob(p, a)
    s = torch.sigmoid(logit.detach())
    q = alpha * s + (1 - alpha) * (1 - s)
    assert lp.item() == pytest.approx(math.log(q[0]) + math.log(1 - q[1]), rel=1e-5)
    lp.sum().backward()
    # d/dlogit log q = (2 alpha - 1) s (1 - s) / q ; d/dlogit log(1 - q) = -(2 alpha - 1) s (1 - s) / (1 - q)
    ds = s * (1 - s) * (2 * alpha - 1)
    expected = torch.stack([ds[0] / q[0], -ds[1] / (1 - q[1])])
    torch.testing.assert_close(logit.grad, expected, rtol=1e-4, atol=1e-6)
    assert entropy(torch.full((1, 17, 5), 0.5)).item() == pytest.approx(math.log(2), rel=1e-5)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_self_critical_advantage_sign(sign):
    """A positive advantage (sample beat the greedy mask) makes the sampled mask more likely; negative, less."""
    torch.manual_seed(0)
    controller = Controller(in_channels=1, widths=(4, 8), strides=(1, 2))
    learner = MaskLearner(controller, PolicyGradientConfig(lr=1e-2, entropy_coef=0.0), torch.Generator().manual_seed(0))
    images = torch.randint(0, 256, (1, 28, 28, 1), dtype=torch.uint8)
    s = learner.sample(images)
    before = log_prob(s.probs, s.actions).item()
    learner.update(s, np.array([sign]), np.zeros(1))
    with torch.no_grad():
        after = log_prob(bounded_probs(controller(images), 0.8), s.actions).item()
    assert (after - before) * sign > 0


def test_greedy_masks_threshold():
    m = greedy_masks(torch.tensor([[[0.49, 0.5, 0.51, 0.2, 0.8]] * 17]))
    assert m.dtype == np.uint8 and m[0, 0].tolist() == [0, 1, 1, 0, 1]


def test_reinforce_beats_random(trained_env, tmp_path):
    env = dataclasses.replace(trained_env, reward=RewardConfig(upper_end_frac=1.5, anneal=False))
    cfg = ReinforceConfig(view="masks", env=env, pg=PolicyGradientConfig(lr=1e-2), total_steps=1280, batch_size=32,
                          run=RunConfig(threads=1, seed=0, out=str(tmp_path / "rl")), log_every=5)
    controller, history = train_reinforce(cfg)
    assert {"reward", "accuracy", "latency_ms", "reward_arch", "entropy", "ops_per_cell", "empty_cell_share"} <= set(history[0])
    with open(tmp_path / "rl" / "log.csv") as f:
        assert len(list(csv.DictReader(f))) == len(history)
    saved = load_policy(tmp_path / "rl" / "policy.pt")
    assert saved.view == "masks" and saved.family is None and saved.meta["reinforce_config"]["pg"]["lr"] == 1e-2
    bandit = env.bandit("test")
    learned = evaluate_policy(saved.policy(), bandit)
    rand = evaluate_policy(random_policy(0), bandit)
    assert learned["reward"] > rand["reward"] + 1.0, (learned, rand)


@pytest.mark.parametrize("algo", ["ppo", "a2c"])
def test_sb3_end_to_end(trained_env, algo):
    model, history = train_sb3(algo, trained_env, total_steps=256, num_envs=16, seed=0)
    assert history and {"reward", "accuracy", "latency_ms", "ops_per_cell"} <= set(history[-1])
    masks = sb3_policy(model)(np.zeros((3, 28, 28, 1), np.uint8))
    assert masks.shape == (3, 17, 5) and set(np.unique(masks)) <= {0, 1}


def test_compare_writes_everything_and_reproduces(trained_env, tmp_path, monkeypatch):
    cfg = CompareConfig(env=trained_env, agents=("REINFORCE", "PPO", "A2C", "random", "MobileNetV2"), seeds=(0, 1),
                        total_steps=64, num_envs=16, judge=JudgeConfig(limit=32, measure=2),
                        controller=ControllerConfig(widths=(4, 8)),
                        run=RunConfig(threads=1, out=str(tmp_path / "cmp")))
    summary = compare_agents(cfg)
    assert set(summary) == {"REINFORCE", "PPO", "A2C", "random", "MobileNetV2"}
    for name in ("curves.csv", "summary.csv", "curves.png", "summary.md"):
        assert (tmp_path / "cmp" / name).stat().st_size > 0
    reinforce = summary["REINFORCE"]  # its controller counted end to end, in the table's runtime
    assert reinforce["controller_ms"] > 0
    assert reinforce["e2e_ms"] == pytest.approx(reinforce["network_latency_ms"] + reinforce["controller_ms"])
    assert reinforce["e2e_measured_ms"] == pytest.approx(reinforce["measured_ms"] + reinforce["controller_ms"])
    assert summary["PPO"]["controller_ms"] > 0  # its actor, timed like REINFORCE's controller
    assert "e2e_ms" not in summary["random"] and "e2e_ms" not in summary["MobileNetV2"]
    assert "e2e_ms" in (tmp_path / "cmp" / "summary.csv").read_text().splitlines()[0]
    again = compare_agents(CompareConfig(env=trained_env, agents=("REINFORCE", "random"), seeds=(0, 1),
                                         total_steps=64, num_envs=16, judge=JudgeConfig(limit=32),
                                         controller=ControllerConfig(widths=(4, 8)),
                                         run=RunConfig(threads=1, out=str(tmp_path / "cmp2"))))
    for agent in ("REINFORCE", "random"):
        for key in ("accuracy", "reward", "latency_ms"):
            assert again[agent][key] == pytest.approx(summary[agent][key]), (agent, key)
    # a rerun (after a kill) reuses every finished agent x seed instead of training it again
    monkeypatch.setattr(compare_module, "run_agent", lambda *a, **k: pytest.fail("a finished agent trained again"))
    assert compare_agents(cfg) == summary
    assert (tmp_path / "cmp" / "PPO_seed1" / "result.json").is_file()
    with pytest.raises(ValueError, match=r"PPO_seed0/result.json: written by a comparison with other settings or files \(total_steps\)"):
        compare_agents(dataclasses.replace(cfg, agents=("PPO",), total_steps=96))


def test_evaluation_counts_distinct_masks(trained_env):
    """One fixed mask is one architecture; per-image random masks are (almost surely) all different."""
    bandit = trained_env.bandit("test")
    fixed = evaluate_policy(fixed_policy(mobilenetv2_mask()), bandit, limit=40)
    rand = evaluate_policy(random_policy(0), bandit, batch_size=16, limit=40)
    assert fixed["distinct_masks"] == 1 and rand["distinct_masks"] == 40


@pytest.mark.parametrize("penalty", [0.0, 0.05])
def test_logit_penalty_pulls_saturated_sigmoids_back(penalty):
    """With saturated logits and no advantage, the entropy bonus moves nothing (its gradient vanishes
    through a saturated sigmoid); the logit L2 shrinks the logits."""
    torch.manual_seed(0)
    controller = Controller(in_channels=1)
    with torch.no_grad():
        controller.head.weight.mul_(0.0)
        controller.head.bias.copy_(torch.where(torch.arange(85) % 2 == 0, 30.0, -30.0))
    images = torch.randint(0, 256, (8, 28, 28, 1), dtype=torch.uint8)
    pg = MaskLearner(controller, PolicyGradientConfig(lr=1e-2, logit_penalty=penalty), torch.Generator().manual_seed(0))
    before = controller(images).detach()
    for _ in range(5):
        s = pg.sample(images)
        stats = pg.update(s, np.zeros(8), np.zeros(8))
    after = controller(images).detach()
    assert stats["logit_rms"] > 0
    if penalty:
        assert after.abs().mean() < before.abs().mean() - 0.01
    else:
        torch.testing.assert_close(after, before, atol=1e-3, rtol=0)


def test_halving_the_image_is_bilinear_resizing():
    """The controller halves 28 x 28 images by 2 x 2 averaging: the numbers of bilinear resizing to 14 x 14."""
    images = torch.rand(3, 1, 28, 28)
    pooled = torch.nn.functional.avg_pool2d(images, 2)
    resized = torch.nn.functional.interpolate(images, size=(14, 14), mode="bilinear", align_corners=False)
    assert torch.allclose(pooled, resized, atol=1e-6)
    c = ControllerConfig(widths=(4, 8), input_size=14).build(1)
    assert torch.allclose(c.embed(images), c.embed(resized), atol=1e-6)


def test_compare_every_agent_writes_every_column(trained_assets, tmp_path):
    """Every agent, over the 85 bits and over a family's arms (lookup mode), judged also for
    instance-awareness; every file and every column written."""
    family = ArchitectureFamily(np.stack([mobilenetv2_mask(), all_ops_mask(), single_op_mask(4)]), ("mbv2", "all", "op4"))
    save_family(tmp_path / "family.json", family)
    env = env_config(own_copy(trained_assets, tmp_path / "net"), family=str(tmp_path / "family.json"))
    cfg = CompareConfig(env=env, agents=MASK_AND_FAMILY_AGENTS, seeds=(0,), total_steps=64, num_envs=16,
                        judge=JudgeConfig(limit=48, own_archs=4), router_epochs=1,
                        controller=ControllerConfig(widths=(4, 8)),
                        run=RunConfig(threads=1, out=str(tmp_path / "cmp")))
    summary = compare_agents(cfg)
    assert tuple(summary) == MASK_AND_FAMILY_AGENTS
    # the family agents stepped the lookup env; the judge stored the test split's answers
    assert {p.name for p in (tmp_path / "net").glob("*.npz")} == {"last_outcomes_train.npz", "last_outcomes_test.npz"}
    for name in ("curves.csv", "summary.csv", "curves.png", "summary.md"):
        assert (tmp_path / "cmp" / name).stat().st_size > 0
    with open(tmp_path / "cmp" / "summary.csv") as f:
        rows = {r["agent"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(MASK_AND_FAMILY_AGENTS) and set(AWARE_KEYS) <= set(next(iter(rows.values())))
    md = (tmp_path / "cmp" / "summary.md").read_text()
    assert "family of 3 arms" in md and "mutual information of the architecture and the class" in md
    for agent in ("REINFORCE", "REINFORCE-family", "router", "PPO", "A2C-family", "VW-family"):
        assert summary[agent]["e2e_ms"] == pytest.approx(summary[agent]["network_latency_ms"] + summary[agent]["controller_ms"])
        assert summary[agent]["controller_ms"] > 0
    for agent in ("random", "MobileNetV2", "best-single"):
        assert "e2e_ms" not in summary[agent]
    for agent in ("MobileNetV2", "best-single"):
        assert summary[agent]["distinct_archs"] == 1 and summary[agent]["top_share"] == 1
        # one architecture, in the family its frontier is built from: on or below it, and it says nothing
        assert summary[agent]["mi_class_bits"] == 0 and summary[agent]["gain_points"] <= 1e-9
    assert summary["random"]["distinct_archs"] == 48
    for agent in FAMILY_AGENTS:
        assert 1 <= summary[agent]["distinct_archs"] <= 3
    curves = (tmp_path / "cmp" / "curves.csv").read_text()
    assert "best-single" in curves and "router" not in curves  # the router has no env-step curve
    with pytest.raises(ValueError, match="agents: unknown"):
        CompareConfig(agents=("DQN",))


def test_best_single_arm_has_the_highest_mean_reward():
    """Two arms at the bounds' midpoint (R_A = 1) and at a bound (R_A = 0): the fast arm right on 3 of
    4 images earns 10 (3 x 1) - 10 = 20 / 4; the slow one right on all, 0: the fast one wins, and a
    tie goes to the lower index."""
    table = LatencyTable(np.ones((17, 5)), 0.0, np.zeros(17, dtype=bool))
    reward = LatencyReward(table, RewardConfig(lower_ms=0.0, upper_ms=2.0))
    correct = np.array([[True] * 4, [True, True, True, False]])
    assert best_single_arm(correct, np.array([2.0, 1.0]), reward) == 1
    assert best_single_arm(correct[[1, 1]], np.array([1.0, 1.0]), reward) == 0
    assert best_single_arm(correct, np.array([1.0, 1.0]), reward) == 0
    with pytest.raises(ValueError, match="cells_ms"):
        best_single_arm(correct, np.array([1.0]), reward)


@pytest.mark.parametrize("lookup", [False, True])
def test_sb3_on_the_family_view_and_its_actor_timed(trained_env, tmp_path, lookup):
    """PPO over a family's arms (live or lookup): its policy returns the family's masks, and its actor
    as one exported graph (what is timed) chooses what ``predict`` chooses."""
    family = ArchitectureFamily(np.stack([mobilenetv2_mask(), all_ops_mask(), single_op_mask(4)]))
    save_family(tmp_path / "family.json", family)
    model, history = train_sb3("ppo", dataclasses.replace(trained_env, lookup=lookup), total_steps=64, num_envs=16,
                               seed=0, family=str(tmp_path / "family.json"))
    assert history and 1 <= history[-1]["ops_per_cell"] <= 5
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1)).astype(np.uint8)
    masks = sb3_policy(model, family)(images)
    arms, _ = model.predict(images.transpose(0, 3, 1, 2), deterministic=True)
    assert np.array_equal(masks, family.masks[arms])
    session = ort.InferenceSession(onnx_bytes(SB3Actor(model.policy), (28, 28, 1), "action"), providers=["CPUExecutionProvider"])
    assert np.array_equal(session.run(None, {"images": images})[0], arms)
    for runtime in ("torch", "onnxruntime"):
        assert 0 < sb3_latency_ms(model, (28, 28, 1), runtime, repeats=3) < np.inf  # on the clock: any positive ms
