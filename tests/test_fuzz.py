"""Generated bad input (hypothesis): actions, seeds, reset options and env keyword arguments thrown at
the env, the vector env and the wrappers. Only the documented exceptions may come out (ValueError /
TypeError naming the argument), and a valid input is never refused. The number of cases tried is
printed at the end of the run. Damaged files of every format: tests/test_fuzz_files.py."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from instanas_gym.envs.instanas_env import InstaNASEnv
from instanas_gym.envs.vector import InstaNASVectorEnv
from instanas_gym.envs.wrappers import make_sb3_env
from instanas_gym.space.search_space import MASK_SHAPE
from instanas_gym.utils.checks import available_cores

from .conftest import FUZZ_COUNTS
from .reliability_assets import write_assets

FAST = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
ARG_ERRORS = (ValueError, TypeError)

DTYPES = st.sampled_from([np.bool_, np.uint8, np.int8, np.int16, np.int32, np.int64, np.uint64, np.float16,
                          np.float32, np.float64, np.complex64])
SHAPES = st.one_of(st.just(MASK_SHAPE), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=18))
ARRAYS = st.builds(lambda a: a, DTYPES.flatmap(lambda dt: SHAPES.flatmap(lambda sh: hnp.arrays(dt, sh))))
VALID_MASKS = st.sampled_from([np.bool_, np.uint8, np.int8, np.int64]).flatmap(
    lambda dt: hnp.arrays(dt, MASK_SHAPE, elements=st.integers(0, 1)))
JUNK = st.one_of(st.none(), st.text(max_size=5), st.integers(-5, 5), st.floats(), st.dictionaries(st.text(max_size=3), st.integers()),
                 st.lists(st.integers(-1, 2), max_size=90), st.lists(st.lists(st.integers(0, 1), max_size=6), max_size=18))
ACTIONS = st.one_of(VALID_MASKS, ARRAYS, JUNK, VALID_MASKS.map(lambda m: m.tolist()))


def _count(name: str) -> None:
    FUZZ_COUNTS[name] = FUZZ_COUNTS.get(name, 0) + 1


def _valid_mask(action) -> bool:
    try:
        arr = np.asarray(action)
    except Exception:
        return False
    ok_dtype = arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer)
    return arr.shape == MASK_SHAPE and ok_dtype and bool(np.isin(arr, (0, 1)).all())


def _names(err: BaseException, *words: str) -> None:
    assert any(re.search(w, str(err)) for w in words), f"{type(err).__name__}: {err!r} names none of {words}"


@pytest.fixture(scope="module")
def tiny_assets(tmp_path_factory, fmnist_root) -> dict:
    """A tiny supernet, a table computed from MACs (no clock) and the synthetic Fashion-MNIST's train split."""
    assets = write_assets(tmp_path_factory.mktemp("tiny"))
    return assets | {"split": "train", "data_root": str(fmnist_root), "dataset": "fashion_mnist"}


@pytest.fixture(scope="module")
def envs(tiny_assets):
    env = InstaNASEnv(**tiny_assets)
    venv = InstaNASVectorEnv(num_envs=2, **tiny_assets)
    flat = make_sb3_env("InstaNAS-FashionMNIST-v0", **tiny_assets)
    return env, venv, flat


@FAST
@given(action=ACTIONS)
def test_env_actions(envs, action):
    env, _, _ = envs
    _count("env actions")
    env.reset(seed=0)
    if _valid_mask(action):
        env.step(action)
        return
    with pytest.raises(ARG_ERRORS) as err:
        env.step(action)
    _names(err.value, "action")


@FAST
@given(action=st.one_of(ACTIONS, VALID_MASKS.map(lambda m: np.stack([m, m]))))
def test_vector_env_actions(envs, action):
    _, venv, _ = envs
    _count("vector env actions")
    venv.reset(seed=0)
    try:
        arr = np.asarray(action)
    except ValueError:  # ragged nested lists
        arr = None
    if arr is not None and arr.ndim == 3 and len(arr) == 2 and all(_valid_mask(a) for a in arr):
        venv.step(action)
        return
    with pytest.raises(ARG_ERRORS) as err:
        venv.step(action)
    _names(err.value, "action")


@FAST
@given(bits=st.one_of(hnp.arrays(st.sampled_from([np.float32, np.float64, np.int64, np.bool_]), (85,),
                                 elements=st.sampled_from([0, 1])),
                      hnp.arrays(np.float64, (85,)), ACTIONS))
def test_flat_wrapper_actions(envs, bits):
    _, _, flat = envs
    _count("flat wrapper actions")
    flat.reset(seed=0)
    try:
        arr = np.asarray(bits)
        valid = arr.shape == (85,) and arr.dtype.kind in "biuf" and bool(np.isin(arr, (0, 1)).all())
    except Exception:
        valid = False
    if valid:
        flat.step(bits)
        return
    with pytest.raises(ARG_ERRORS) as err:
        flat.step(bits)
    _names(err.value, "action")


SEEDS = st.one_of(st.none(), st.integers(-3, 2**70), st.floats(), st.text(max_size=3), st.booleans(),
                  st.integers(0, 2**31).map(np.int64), st.lists(st.integers(-1, 9), max_size=3))


@FAST
@given(seed=SEEDS, index=st.one_of(st.none(), st.integers(-2, 2**70), st.floats(), st.text(max_size=2),
                                   st.booleans(), st.integers(0, 300).map(np.int32)))
def test_reset_seeds_and_options(envs, seed, index):
    env, venv, _ = envs
    _count("reset seeds and options")
    options = None if index is None else {"index": index}
    n = env.bandit.num_images
    seed_ok = seed is None or (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0)
    index_ok = index is None or (isinstance(index, (int, np.integer)) and not isinstance(index, bool) and 0 <= index < n)
    if seed_ok and index_ok:
        env.reset(seed=seed, options=options)
    else:
        with pytest.raises(ARG_ERRORS) as err:
            env.reset(seed=seed, options=options)
        _names(err.value, "seed", "index")
    vseed_ok = seed_ok or (isinstance(seed, list) and len(seed) == 2 and all(s >= 0 for s in seed))
    if vseed_ok and index_ok:
        venv.reset(seed=seed, options=options)
    else:
        with pytest.raises(ARG_ERRORS) as err:
            venv.reset(seed=seed, options=options)
        _names(err.value, "seed", "index")


ENV_KWARGS = st.fixed_dictionaries({}, optional={
    "dataset": st.sampled_from(["fashion_mnist", "mnist", "", "cifar1000"]),
    "split": st.sampled_from(["train", "test", "valid", 3]),
    "mode": st.sampled_from(["dynamic", "masked", "fast", None]),
    "threads": st.one_of(st.integers(-2, 3), st.just(10**6), st.floats(), st.none()),
    "data_root": st.sampled_from([123, 1.5, b"x"]),
    "order": st.sampled_from(["random", "sequential", "shuffle"]),
    "render_mode": st.sampled_from([None, "rgb_array", "human"]),
    "download": st.sampled_from([False, "yes", 1]),
    "reward": st.one_of(st.none(), st.integers(), st.fixed_dictionaries({}, optional={
        "correct_reward": st.one_of(st.floats(), st.integers(-3, 3), st.text(max_size=2)),
        "shape": st.sampled_from(["parabola", "monotone", "linear"]),
        "lower_ms": st.one_of(st.none(), st.floats()),
        "upper_end_frac": st.floats(),
    })),
})


def _kwargs_valid(kw: dict) -> bool:
    r = kw.get("reward")
    reward_ok = r is None or (isinstance(r, dict) and r.get("shape", "parabola") != "linear" and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > 0
        for k, v in r.items() if k in ("correct_reward", "upper_end_frac")) and (
        r.get("lower_ms") is None or (np.isfinite(r["lower_ms"]) and r["lower_ms"] >= 0)))
    threads = kw.get("threads")
    return (kw.get("dataset", "fashion_mnist") == "fashion_mnist" and kw.get("split", "train") in ("train", "test")
            and kw.get("mode", "dynamic") in ("dynamic", "masked") and kw.get("order", "random") != "shuffle"
            and kw.get("render_mode") != "human" and kw.get("download", False) is False and reward_ok
            and (threads is None or (isinstance(threads, int) and 1 <= threads <= available_cores()))
            and "data_root" not in kw)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(kw=ENV_KWARGS)
def test_env_keyword_arguments(tiny_assets, kw):
    _count("env keyword arguments")
    args = {**tiny_assets, **kw}
    try:
        valid = _kwargs_valid(kw)
    except (TypeError, ValueError):
        valid = False
    if valid:
        InstaNASEnv(**args)
        return
    with pytest.raises(ARG_ERRORS) as err:
        InstaNASEnv(**args)
    _names(err.value, *[k for k in kw] + ["shape", "reward", "dataset", "split", "mode", "threads", "order",
                                          "render_mode", "download", "correct_reward", "lower_ms", "upper_end_frac",
                                          "data_root"])
