import numpy as np
import pytest
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from instanas_gym.envs.vector import InstaNASVectorEnv
from instanas_gym.envs.wrappers import SB3VecEnv, make_sb3_env
from instanas_gym.space.masks import flatten_mask, mobilenetv2_mask


def test_sb3_check_env_on_wrapped_env(tiny_assets):
    env = make_sb3_env("InstaNAS-FashionMNIST-v0", **tiny_assets)
    assert env.observation_space.shape == (1, 28, 28)
    assert env.action_space.shape == (85,)
    sb3_check_env(env, warn=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (1, 28, 28)
    _, _, terminated, _, info = env.step(flatten_mask(mobilenetv2_mask()))
    assert terminated and info["empty_cells"] == 0


def test_flat_action_shape_is_checked(tiny_assets):
    env = make_sb3_env("InstaNAS-FashionMNIST-v0", **tiny_assets)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"\(85,\)"):
        env.step(mobilenetv2_mask())


def test_sb3_vecenv_adapter(tiny_assets):
    venv = SB3VecEnv(InstaNASVectorEnv(num_envs=3, **tiny_assets))
    venv.seed(5)
    obs = venv.reset()
    assert obs.shape == (3, 1, 28, 28) and obs.dtype == np.uint8
    actions = np.tile(flatten_mask(mobilenetv2_mask()), (3, 1))
    next_obs, rewards, dones, infos = venv.step(actions)
    assert next_obs.shape == obs.shape and rewards.shape == (3,) and dones.all()
    np.testing.assert_array_equal(np.stack([i["terminal_observation"] for i in infos]), obs)
    assert {"correct", "latency_ms", "reward_arch"} <= set(infos[0])
    # seeding reproduces the same images
    venv.seed(5)
    np.testing.assert_array_equal(venv.reset(), obs)
