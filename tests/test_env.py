import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import instanas_gym
from instanas_gym.envs.instanas_env import InstaNASEnv
from instanas_gym.envs.vector import InstaNASVectorEnv
from instanas_gym.model.checkpoint import supernet_state
from instanas_gym.model.supernet import Supernet
from instanas_gym.space.data import get_spec
from instanas_gym.space.masks import mobilenetv2_mask
from instanas_gym.space.search_space import MASK_SHAPE, SearchSpace
from instanas_gym.utils.files import atomic_save
from instanas_gym.utils.paths import BUNDLED_LATENCY_TABLE, BUNDLED_SUPERNET
from tests.fixtures import macs_table, skip_cifar_checksums, write_cifar

ENV_KEYS = {
    "correct", "label", "prediction", "confidence", "latency_ms", "network_latency_ms", "reward_task",
    "reward_arch", "macs", "empty_cells", "reward_shape", "correct_reward", "lower_ms", "upper_ms",
}


@pytest.fixture(scope="module")
def cifar_assets(tmp_path_factory):
    """Synthetic CIFAR-10/100 files and tiny supernets with latency tables for both ids."""
    root = tmp_path_factory.mktemp("cifar")
    out = {}
    for dataset in ("cifar10", "cifar100"):
        write_cifar(root, dataset, n_train=40, n_test=20)
        spec = get_spec(dataset)
        torch.manual_seed(0)
        model = Supernet(SearchSpace(0.1, 32, 3, spec.num_classes), spec.mean, spec.std).eval()
        atomic_save(supernet_state(model, dataset), root / f"{dataset}.pt")
        macs_table(model.space).save(root / f"{dataset}.json")
        out[dataset] = {"data_root": str(root), "supernet": str(root / f"{dataset}.pt"), "latency_table": str(root / f"{dataset}.json")}
    return out


def test_registered_ids():
    assert set(instanas_gym.ENV_IDS) <= set(gym.registry)


@pytest.mark.parametrize("env_id", ["InstaNAS-CIFAR10-v0", "InstaNAS-CIFAR100-v0"])
def test_check_env_cifar_ids(cifar_assets, env_id):
    kwargs = cifar_assets["cifar10" if "CIFAR10-" in env_id else "cifar100"]
    with skip_cifar_checksums():
        env = gym.make(env_id, **kwargs)
    assert env.observation_space.shape == (32, 32, 3)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(mobilenetv2_mask())
    assert terminated and not truncated and ENV_KEYS <= set(info)


def test_check_env_tiny(tiny_assets):
    env = InstaNASEnv(**tiny_assets, render_mode="rgb_array")
    check_env(env)
    assert env.observation_space.shape == (28, 28, 1) and env.observation_space.dtype == np.uint8
    assert env.action_space.shape == MASK_SHAPE


@pytest.mark.skipif(not BUNDLED_SUPERNET.is_file() or not BUNDLED_LATENCY_TABLE.is_file(), reason="bundled assets not built")
def test_bundled_default_works_offline():
    env = gym.make("InstaNAS-FashionMNIST-v0")
    check_env(env.unwrapped)
    obs, info = env.reset(seed=3)
    _, reward, terminated, _, info = env.step(mobilenetv2_mask())
    assert info["network_latency_ms"] > info["latency_ms"] > 0
    assert reward == pytest.approx(info["reward_task"] * info["reward_arch"] if info["correct"] else -10)
    env = gym.make("instanas_gym:InstaNAS-FashionMNIST-v0", split="test")
    assert env.unwrapped.bandit.num_images == 10_000


def test_step_info_and_reward(tiny_assets):
    env = InstaNASEnv(**tiny_assets)
    obs, info = env.reset(seed=0)
    assert obs.shape == (28, 28, 1) and obs.dtype == np.uint8 and "image_index" in info
    _, reward, terminated, truncated, info = env.step(mobilenetv2_mask())
    assert terminated is True and truncated is False
    assert ENV_KEYS <= set(info)
    expected = info["reward_task"] * info["reward_arch"] if info["correct"] else info["reward_task"]
    assert reward == pytest.approx(expected)
    assert info["reward_task"] == (10.0 if info["correct"] else -10.0)
    assert info["macs"] == env.bandit.model.space.macs(mobilenetv2_mask())
    assert info["empty_cells"] == 0
    lb, ub = env.latency_bounds
    assert info["lower_ms"] == lb and info["upper_ms"] == ub
    env.set_latency_bounds(upper_ms=ub * 2)
    env.reset()
    assert env.step(mobilenetv2_mask())[-1]["upper_ms"] == ub * 2


def test_seeding(tiny_assets, rng):
    masks = np.random.default_rng(1).integers(0, 2, (5, *MASK_SHAPE))

    def run(seed):
        env = InstaNASEnv(**tiny_assets)
        out = []
        for i, m in enumerate(masks):
            obs, info = env.reset(seed=seed if i == 0 else None)
            _, r, _, _, step_info = env.step(m)
            out.append((info["image_index"], obs.tobytes(), r, step_info))
        return out

    a, b, c = run(7), run(7), run(8)
    assert a == b
    assert [x[0] for x in a] != [x[0] for x in c]


def test_sequential_order_and_index_option(tiny_assets):
    env = InstaNASEnv(**tiny_assets, order="sequential")
    assert [env.reset(seed=0)[1]["image_index"]] + [env.reset()[1]["image_index"] for _ in range(2)] == [0, 1, 2]
    assert env.reset(options={"index": 42})[1]["image_index"] == 42


def test_bad_inputs(tiny_assets, tmp_path):
    env = InstaNASEnv(**tiny_assets)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(mobilenetv2_mask())
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"\(17, 5\)"):
        env.step(np.zeros(85, np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        env.step(np.zeros(MASK_SHAPE, np.float32))
    with pytest.raises(ValueError, match="0 or 1"):
        env.step(np.full(MASK_SHAPE, 2))
    with pytest.raises(ValueError, match="index"):
        env.reset(options={"index": 10**9})
    with pytest.raises(FileNotFoundError, match="instanas-gym train-supernet"):
        InstaNASEnv(**{**tiny_assets, "supernet": str(tmp_path / "none.pt")})
    with pytest.raises(FileNotFoundError, match="instanas-gym build-latency-table"):
        InstaNASEnv(**{**tiny_assets, "latency_table": str(tmp_path / "none.json")})
    with pytest.raises(ValueError, match="render_mode"):
        InstaNASEnv(**tiny_assets, render_mode="human")
    with pytest.raises(ValueError, match="trained on"):
        InstaNASEnv(**{**tiny_assets, "dataset": "cifar10"})


def test_missing_cifar_checkpoint_says_what_to_run(tmp_path):
    """The cache is isolated per test (conftest), so a CIFAR supernet in the user's cache can't hide this."""
    with pytest.raises(FileNotFoundError, match="instanas-gym train-supernet --dataset cifar10"):
        gym.make("InstaNAS-CIFAR10-v0", data_root=str(tmp_path))


def test_render(tiny_assets):
    env = InstaNASEnv(**tiny_assets, render_mode="rgb_array")
    env.reset(seed=0)
    before = env.render()
    env.step(np.zeros(MASK_SHAPE, np.uint8))
    after = env.render()
    assert before.dtype == np.uint8 and before.ndim == 3 and before.shape[2] == 3
    assert before.shape == after.shape and not np.array_equal(before, after)


# ---- vector env --------------------------------------------------------------------------------
def test_native_vector_env_matches_sync(tiny_assets):
    n = 4
    native = gym.make_vec("InstaNAS-FashionMNIST-v0", num_envs=n, vectorization_mode="vector_entry_point", **tiny_assets)
    sync = gym.make_vec(
        "InstaNAS-FashionMNIST-v0", num_envs=n, vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}, **tiny_assets,
    )
    assert isinstance(native.unwrapped, InstaNASVectorEnv)
    assert native.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    obs_a, info_a = native.reset(seed=11)
    obs_b, info_b = sync.reset(seed=11)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(info_a["image_index"], info_b["image_index"])
    rng = np.random.default_rng(0)
    for _ in range(3):
        actions = rng.integers(0, 2, (n, *MASK_SHAPE)).astype(np.int8)
        a = native.step(actions)
        b = sync.step(actions)
        for x, y in zip(a[:4], b[:4]):
            np.testing.assert_array_equal(x, y)
        assert set(a[4]) == set(b[4])
        np.testing.assert_array_equal(a[4]["image_index"], b[4]["image_index"])
        assert set(a[4]["final_info"]) == set(b[4]["final_info"])
        for key in ENV_KEYS - {"confidence"}:
            np.testing.assert_array_equal(a[4]["final_info"][key], b[4]["final_info"][key], err_msg=key)
        # a batch of 4 and 4 batches of 1 round differently in the last float bits
        np.testing.assert_allclose(a[4]["final_info"]["confidence"], b[4]["final_info"]["confidence"], rtol=1e-5)
        for fa, fb in zip(a[4]["final_obs"], b[4]["final_obs"]):
            np.testing.assert_array_equal(fa, fb)


def test_vector_env_bad_actions(tiny_assets):
    venv = InstaNASVectorEnv(num_envs=3, **tiny_assets)
    with pytest.raises(RuntimeError, match="reset"):
        venv.step(np.zeros((3, *MASK_SHAPE), np.uint8))
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=r"\(3, 17, 5\)"):
        venv.step(np.zeros((2, *MASK_SHAPE), np.uint8))
    with pytest.raises(ValueError, match="0 or 1"):
        venv.step(np.full((3, *MASK_SHAPE), 5))
    with pytest.raises(ValueError, match="num_envs"):
        InstaNASVectorEnv(num_envs=0, **tiny_assets)
