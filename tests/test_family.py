"""The architecture family: its file, the K-way action wrappers, and lookup mode."""

from __future__ import annotations

import json

import numpy as np
import pytest

from instanas_gym.family import FAMILY_FORMAT, ArchitectureFamily, load_family, save_family
from instanas_gym.files import FileFormatError
from instanas_gym.masks import all_ops_mask, mobilenetv2_mask, single_op_mask
from instanas_gym.samplers import random_masks


def small_family(k: int = 4, seed: int = 0, **kwargs) -> ArchitectureFamily:
    masks = np.concatenate([mobilenetv2_mask()[None], random_masks(np.random.default_rng(seed), k - 1, min_ops=1)])
    return ArchitectureFamily(masks, **kwargs)


# ---- the file ------------------------------------------------------------------------------------
def test_family_file_round_trip(tmp_path):
    fam = small_family(3, names=("mbv2", "a", "b"), latency_ms=[0.3, 0.2, 0.1], dataset="fashion_mnist",
                       supernet="x/last.pt", meta={"table": "t.json", "ks": [0, 1]})
    save_family(tmp_path / "f.json", fam)
    back = load_family(tmp_path / "f.json")
    np.testing.assert_array_equal(back.masks, fam.masks)
    assert back.masks.dtype == np.uint8 and back.k == len(back) == 3
    assert back.names == ("mbv2", "a", "b") and back.latency_ms.tolist() == [0.3, 0.2, 0.1]
    assert (back.dataset, back.supernet, back.meta) == ("fashion_mnist", "x/last.pt", {"table": "t.json", "ks": [0, 1]})
    assert json.loads((tmp_path / "f.json").read_text())["format"] == FAMILY_FORMAT
    assert not list(tmp_path.glob("*.tmp"))
    plain = ArchitectureFamily(np.stack([mobilenetv2_mask(), all_ops_mask()]))
    save_family(tmp_path / "g.json", plain)
    back = load_family(tmp_path / "g.json")
    assert back.names == ("arm 0", "arm 1") and back.latency_ms is None and back.supernet is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"masks": np.zeros((0, 17, 5), np.uint8)}, "K >= 1"),
        ({"masks": np.zeros((2, 17, 4), np.uint8)}, "masks must have shape"),
        ({"masks": np.stack([mobilenetv2_mask()] * 2)}, "arm 1 repeats arm 0"),
        ({"masks": np.stack([mobilenetv2_mask(), all_ops_mask()]), "names": ("one",)}, "names: 2 strings"),
        ({"masks": np.stack([mobilenetv2_mask(), all_ops_mask()]), "latency_ms": [1.0, float("nan")]}, "latency_ms"),
    ],
)
def test_family_checks_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ArchitectureFamily(**kwargs)


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


def test_family_file_errors_name_the_file_and_field(tmp_path):
    good = small_family(2).to_dict()
    with pytest.raises(FileNotFoundError, match="no architecture family file"):
        load_family(tmp_path / "missing.json")
    bad = _write(tmp_path / "fmt.json", good | {"format": "instanas-mask-v1"})
    with pytest.raises(FileFormatError, match=r"fmt\.json: field 'format'"):
        load_family(bad)
    bad = _write(tmp_path / "empty.json", good | {"arms": []})
    with pytest.raises(FileFormatError, match=r"empty\.json: field 'arms' must be a list of K >= 1"):
        load_family(bad)
    arms = [dict(a) for a in good["arms"]]
    arms[1]["mask"] = arms[1]["mask"][:16]
    with pytest.raises(FileFormatError, match=r"shape\.json: field 'arms\[1\]\.mask' must have shape"):
        load_family(_write(tmp_path / "shape.json", good | {"arms": arms}))
    arms = [good["arms"][0], good["arms"][0]]
    with pytest.raises(FileFormatError, match=r"dup\.json: field masks: arm 1 repeats arm 0"):
        load_family(_write(tmp_path / "dup.json", good | {"arms": arms}))
    arms = [dict(good["arms"][0], latency_ms=0.1), good["arms"][1]]
    with pytest.raises(FileFormatError, match=r"lat\.json: field 'arms\[\*\]\.latency_ms'"):
        load_family(_write(tmp_path / "lat.json", good | {"arms": arms}))


# ---- the family view -----------------------------------------------------------------------------
def test_family_action_round_trip_and_both_checkers(tiny_assets, tmp_path):
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    from instanas_gym.envs.family import FamilyAction
    from instanas_gym.envs.wrappers import make_sb3_env

    fam = small_family(4, dataset="fashion_mnist")
    save_family(tmp_path / "f.json", fam)
    env = FamilyAction(gym.make("InstaNAS-FashionMNIST-v0", **tiny_assets), tmp_path / "f.json")
    assert env.action_space == gym.spaces.Discrete(4)
    for arm in range(4):
        np.testing.assert_array_equal(env.action(arm), fam.masks[arm])
        env.reset(seed=arm)
        _, reward, terminated, _, info = env.step(np.int64(arm))
        assert info["arm"] == arm and terminated
        assert info["latency_ms"] == pytest.approx(env.unwrapped.bandit.table.cells_ms(fam.masks[arm]))
    for bad in (4, -1, 1.0, [0, 1]):
        env.reset(seed=0)
        with pytest.raises(ValueError, match=r"action must"):
            env.step(bad)
    gym_check_env(FamilyAction(gym.make("InstaNAS-FashionMNIST-v0", **tiny_assets).unwrapped, fam))
    sb3_env = make_sb3_env("InstaNAS-FashionMNIST-v0", family=fam, **tiny_assets)
    assert sb3_env.action_space == gym.spaces.Discrete(4) and sb3_env.observation_space.shape == (1, 28, 28)
    sb3_check_env(sb3_env, warn=True)
    with pytest.raises(ValueError, match="cifar10 supernet"):
        FamilyAction(gym.make("InstaNAS-FashionMNIST-v0", **tiny_assets), small_family(2, dataset="cifar10"))


def test_family_vector_view_matches_the_single_env_and_serves_sb3(tiny_assets):
    import gymnasium as gym

    from instanas_gym.envs.family import FamilyAction, FamilyVectorAction
    from instanas_gym.envs.vector import InstaNASVectorEnv
    from instanas_gym.envs.wrappers import SB3VecEnv

    fam = small_family(3)
    venv = FamilyVectorAction(InstaNASVectorEnv(num_envs=3, **tiny_assets), fam)
    assert venv.action_space == gym.spaces.MultiDiscrete([3, 3, 3])
    venv.reset(seed=7)
    arms = np.array([2, 0, 1])
    _, rewards, _, _, info = venv.step(arms)
    np.testing.assert_array_equal(info["final_info"]["arm"], arms)
    for i in range(3):
        env = FamilyAction(gym.make("InstaNAS-FashionMNIST-v0", **tiny_assets), fam)
        env.reset(seed=7 + i)
        _, r, _, _, single = env.step(arms[i])
        assert r == pytest.approx(rewards[i]) and single["arm"] == arms[i]
        assert single["correct"] == info["final_info"]["correct"][i]
    with pytest.raises(ValueError, match=r"actions must have shape \(3,\)"):
        venv.step(np.zeros(2, dtype=np.int64))
    sb3 = SB3VecEnv.make("InstaNAS-FashionMNIST-v0", num_envs=3, family=fam, **tiny_assets)
    assert sb3.action_space == gym.spaces.Discrete(3)
    sb3.seed(7)
    sb3.reset()
    _, sb3_rewards, dones, infos = sb3.step(arms)
    np.testing.assert_allclose(sb3_rewards, rewards, rtol=1e-6)
    assert dones.all() and [i["arm"] for i in infos] == arms.tolist()
    assert sb3.get_attr("latency_bounds")[0] == venv.unwrapped.latency_bounds
