import numpy as np
import pytest

from instanas_gym.envs.reward import LatencyReward, RewardConfig, fastest_cells_ms
from instanas_gym.latency.table import LatencyTable
from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask
from instanas_gym.space.search_space import SearchSpace


@pytest.fixture
def table() -> LatencyTable:
    ops = np.tile(np.array([0.3, 0.2, 0.4, 0.25, 0.5]), (17, 1))
    return LatencyTable(ops, 1.0, SearchSpace(0.25, 28, 1, 10).opens_stage, {})


def test_default_bounds_follow_the_paper(table):
    r = LatencyReward(table)
    n_open = int(table.opens_stage.sum())
    assert r.lower_ms == pytest.approx(fastest_cells_ms(table)) == pytest.approx(0.2 * n_open)
    assert r.upper_ms == pytest.approx(0.7 * table.cells_ms(all_ops_mask())) == r.upper_start_ms
    assert r.upper_end_ms == pytest.approx(0.5 * table.cells_ms(mobilenetv2_mask()))
    r.anneal(1.0)
    assert r.upper_ms == pytest.approx(r.upper_end_ms)
    r.anneal(0.5)
    assert r.upper_ms == pytest.approx((r.upper_start_ms + r.upper_end_ms) / 2)


def test_without_annealing_the_bound_sits_at_its_end(table):
    annealed = LatencyReward(table, RewardConfig(upper_end_frac=1.0))
    fixed = LatencyReward(table, RewardConfig(upper_end_frac=1.0, anneal=False))
    assert fixed.upper_ms == pytest.approx(annealed.upper_end_ms) == pytest.approx(table.cells_ms(mobilenetv2_mask()))
    for progress in (0.0, 0.3, 1.0):
        assert fixed.anneal(progress) == pytest.approx(annealed.upper_end_ms)
    assert fixed.lower_ms == annealed.lower_ms
    explicit = LatencyReward(table, RewardConfig(upper_ms=5.0, anneal=False))
    assert [explicit.anneal_step(step, 10) for step in range(10)] == [5.0] * 10  # the schedule leaves it alone
    assert explicit.upper_ms == 5.0 and explicit.anneal(0.0) == pytest.approx(explicit.upper_end_ms)


def test_the_schedule_runs_from_the_start_at_the_first_step_to_the_end_at_the_last(table):
    r = LatencyReward(table)
    ub = [r.anneal_step(step, 5) for step in range(5)]
    assert ub[0] == pytest.approx(r.upper_start_ms) and ub[-1] == pytest.approx(r.upper_end_ms)
    np.testing.assert_allclose(np.diff(ub), (r.upper_end_ms - r.upper_start_ms) / 4)
    assert r.anneal_step(0, 1) == pytest.approx(r.upper_start_ms)  # a run of one step stays at the start


def test_parabola(table):
    r = LatencyReward(table, RewardConfig(lower_ms=1.0, upper_ms=3.0))
    np.testing.assert_allclose(r.arch_reward(np.array([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0])), [0, 0, 0.75, 1, 0.75, 0, 0])


def test_monotone(table):
    r = LatencyReward(table, RewardConfig(shape="monotone", lower_ms=1.0, upper_ms=3.0))
    np.testing.assert_allclose(r.arch_reward(np.array([0.5, 1.0, 2.0, 3.0, 4.0])), [1, 1, 0.25, 0, 0])


def test_gating(table):
    r = LatencyReward(table, RewardConfig(correct_reward=10, lower_ms=1.0, upper_ms=3.0))
    out = r(np.array([True, True, False, False]), np.array([2.0, 5.0, 2.0, 5.0]))
    np.testing.assert_allclose(out["reward"], [10, 0, -10, -10])
    np.testing.assert_allclose(out["reward_task"], [10, 10, -10, -10])
    np.testing.assert_allclose(out["reward_arch"], [1, 0, 1, 0])
    assert r.constants() == {"reward_shape": "parabola", "correct_reward": 10.0, "lower_ms": 1.0, "upper_ms": 3.0}


def test_bad_arguments(table):
    with pytest.raises(ValueError, match="shape"):
        LatencyReward(table, RewardConfig(shape="linear"))
    with pytest.raises(ValueError, match="lower < upper"):
        LatencyReward(table, RewardConfig(lower_ms=3.0, upper_ms=1.0))
    with pytest.raises(ValueError, match="correct_reward"):
        LatencyReward(table, RewardConfig(correct_reward=0))
