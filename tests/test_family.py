"""The architecture family: its file, the K-way action wrappers, and lookup mode."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instanas_gym.space.family import FAMILY_FORMAT, ArchitectureFamily, load_family, save_family
from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask, random_masks
from instanas_gym.utils.files import FileFormatError

from .conftest import FUZZ_COUNTS, own_copy


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
    assert gym.make(env.spec).action_space == gym.spaces.Discrete(4)  # the spec records the family view
    for arm in range(4):
        np.testing.assert_array_equal(env.action(arm), fam.masks[arm])
        env.reset(seed=arm)
        _, _, terminated, _, info = env.step(np.int64(arm))
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


# ---- lookup mode ---------------------------------------------------------------------------------
def _assert_same_step(a, b):
    obs_a, rew_a, term_a, trunc_a, info_a = a
    obs_b, rew_b, term_b, trunc_b, info_b = b
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)
    np.testing.assert_array_equal(term_a, term_b)
    np.testing.assert_array_equal(trunc_a, trunc_b)
    assert list(info_a) == list(info_b) and list(info_a["final_info"]) == list(info_b["final_info"])
    for key, value in info_a["final_info"].items():
        other = info_b["final_info"][key]
        assert value.dtype == other.dtype, key
        if key == "confidence":  # one supernet call per arm against one per step: float rounding only
            np.testing.assert_allclose(value, other, rtol=1e-5, err_msg=key)
        else:
            np.testing.assert_array_equal(value, other, err_msg=key)
    np.testing.assert_array_equal(np.stack(info_a["final_obs"]), np.stack(info_b["final_obs"]))
    np.testing.assert_array_equal(info_a["image_index"], info_b["image_index"])


def test_lookup_env_steps_as_the_live_family_view(tiny_assets, tmp_path):
    from instanas_gym.envs.family import FamilyVectorAction
    from instanas_gym.envs.lookup import FamilyLookupVectorEnv
    from instanas_gym.envs.vector import InstaNASVectorEnv

    fam = small_family(4, dataset="fashion_mnist")
    save_family(tmp_path / "f.json", fam)
    tiny_assets = own_copy(tiny_assets, tmp_path / "net")
    lookup = FamilyLookupVectorEnv(5, family=tmp_path / "f.json", progress=False, **tiny_assets)
    assert lookup.bandit.outcomes_path == tmp_path / "net" / "last_outcomes_train.npz"
    assert lookup.bandit.outcomes_path.is_file()
    live = FamilyVectorAction(InstaNASVectorEnv(5, **tiny_assets), tmp_path / "f.json")
    assert lookup.action_space == live.action_space
    a, b = live.reset(seed=3), lookup.reset(seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    rng = np.random.default_rng(0)
    for step in range(6):
        if step == 3:  # the annealed bound moves both the same way
            for env in (live, lookup):
                env.unwrapped.bandit.reward.anneal(0.8)
        if step == 4:  # a new table (as calibrate_latency installs): the arms' latencies follow it
            import dataclasses

            table = live.unwrapped.bandit.table
            for env in (live, lookup):
                env.unwrapped.bandit.table = dataclasses.replace(table, ops_ms=table.ops_ms * 2)
        arms = rng.integers(0, 4, 5)
        _assert_same_step(live.step(arms), lookup.step(arms))
    # the single live env with the family wrapper, seeded as sub-environment 0
    import gymnasium as gym

    from instanas_gym.envs.family import FamilyAction

    single = FamilyAction(gym.make("InstaNAS-FashionMNIST-v0", **tiny_assets), fam)
    single.unwrapped.bandit.reward.anneal(0.8)
    single.unwrapped.bandit.table = lookup.bandit.table
    lookup.reset(seed=11)
    single.reset(seed=11)
    _, rewards, _, _, info = lookup.step(np.array([2, 0, 0, 0, 0]))
    _, reward, _, _, one = single.step(2)
    assert reward == rewards[0] and one["arm"] == 2
    assert {k: one[k] for k in ("correct", "prediction", "latency_ms", "upper_ms", "macs")} == {
        k: info["final_info"][k][0] for k in ("correct", "prediction", "latency_ms", "upper_ms", "macs")}
    assert set(one) == {k for k in info["final_info"] if not k.startswith("_")}
    with pytest.raises(ValueError, match=r"actions must be arm indices in \[0, 4\)"):
        lookup.step(np.full(5, 4))
    from instanas_gym.envs.wrappers import SB3VecEnv

    sb3 = SB3VecEnv(lookup)
    sb3.seed(2)
    assert sb3.reset().shape == (5, 1, 28, 28) and sb3.action_space == gym.spaces.Discrete(4)
    _, _, dones, infos = sb3.step(np.array([0, 1, 2, 3, 0]))
    assert dones.all() and [i["arm"] for i in infos] == [0, 1, 2, 3, 0]


def test_lookup_outcomes_are_recomputed_for_another_supernet_and_refused_when_damaged(tiny_assets, tmp_path):
    from instanas_gym.envs.lookup import FamilyLookup
    from instanas_gym.model.checkpoint import supernet_state
    from instanas_gym.utils.files import atomic_save

    from .conftest import tiny_supernet

    save_family(tmp_path / "f.json", small_family(2))
    kwargs = own_copy(tiny_assets, tmp_path / "net")
    first = FamilyLookup(tmp_path / "f.json", progress=False, **kwargs)
    assert first.outcomes.prediction.shape == (2, 512) and first.outcomes_path.is_file()
    # another supernet at the same path: its answers, computed again, replace the file
    atomic_save(supernet_state(tiny_supernet(seed=1), "fashion_mnist"), kwargs["supernet"])
    other = FamilyLookup(tmp_path / "f.json", progress=False, **kwargs)
    live = other.evaluate(np.arange(256), np.broadcast_to(other.family.masks[1], (256, 17, 5)))
    np.testing.assert_array_equal(other.outcomes.prediction[1, :256], live["prediction"])
    again = FamilyLookup(small_family(2, seed=5), progress=False, **kwargs)  # another family: rows added
    assert again.outcomes.prediction.shape == (2, 512)
    rebuilt = FamilyLookup(tmp_path / "f.json", rebuild=True, progress=False, **kwargs)
    np.testing.assert_array_equal(rebuilt.outcomes.prediction, other.outcomes.prediction)
    first.outcomes_path.write_bytes(b"junk")
    with pytest.raises(FileFormatError, match=r"last_outcomes_train\.npz is not an outcomes file"):
        FamilyLookup(tmp_path / "f.json", progress=False, **kwargs)
    with pytest.raises(ValueError, match="supernet=PATH"):
        FamilyLookup(small_family(2), progress=False, **(kwargs | {"supernet": tiny_supernet()}))


# ---- generated bad input -------------------------------------------------------------------------
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
JSON_JUNK = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.text(max_size=4),
                         lambda inner: st.lists(inner, max_size=18) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                         max_leaves=20)
FIELDS = st.sampled_from(["format", "arms", "dataset", "supernet", "meta", "arms.0", "arms.1.mask", "arms.0.name",
                          "arms.1.latency_ms", "arms.0.mask.3", "arms.1.mask.16.4"])


@FUZZ
@given(field=FIELDS, value=JSON_JUNK)
def test_damaged_family_files_raise_naming_the_file(tmp_path_factory, field, value):
    FUZZ_COUNTS["damaged family files"] = FUZZ_COUNTS.get("damaged family files", 0) + 1
    data = small_family(2, latency_ms=[0.5, 0.25]).to_dict()
    *path, last = field.split(".")
    node = data
    for part in path:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[int(last) if isinstance(node, list) else last] = value
    file = tmp_path_factory.mktemp("family") / "damaged.json"
    file.write_text(json.dumps(data))
    try:
        fam = load_family(file)
    except FileFormatError as err:
        assert str(file) in str(err) and "field" in str(err), err
    else:
        assert fam.masks.shape == (2, 17, 5) and fam.masks.dtype == np.uint8


@FUZZ
@given(arm=st.one_of(JSON_JUNK, st.integers(-10, 10), st.sampled_from([np.int8(1), np.uint64(3), np.float32(1), np.array(2),
                                                                          np.array([1]), np.bool_(True)])))
def test_bad_arms_raise_value_errors(arm):
    from instanas_gym.envs.family import check_arms

    FUZZ_COUNTS["family arms"] = FUZZ_COUNTS.get("family arms", 0) + 1
    try:
        out = check_arms(arm, 4)
    except ValueError as err:
        assert "action must" in str(err), err
    else:
        assert out.shape == () and 0 <= int(out) < 4 and isinstance(arm, (int, np.integer, np.ndarray))
