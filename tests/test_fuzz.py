"""Generated bad input (hypothesis): actions, seeds, reset options, env keyword arguments and damaged
checkpoint / latency-table / mask files thrown at the env, the vector env, the wrappers and every
loader. Only the documented exceptions may come out (ValueError / TypeError naming the argument,
FileNotFoundError / FileFormatError naming the file), and a valid input is never refused. The
number of cases tried is printed at the end of the run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from instanas_gym.agents.controller import load_controller
from instanas_gym.envs.instanas_env import InstaNASEnv
from instanas_gym.envs.vector import InstaNASVectorEnv
from instanas_gym.envs.wrappers import make_sb3_env
from instanas_gym.latency import LatencyTable
from instanas_gym.model.checkpoint import build_supernet, load_checkpoint
from instanas_gym.space.masks import load_mask
from instanas_gym.space.search_space import MASK_SHAPE, SearchSpace
from instanas_gym.utils.files import FileFormatError

from .conftest import FUZZ_COUNTS

FAST = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
ARG_ERRORS = (ValueError, TypeError)
FILE_ERRORS = (FileNotFoundError, FileFormatError)

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
    "threads": st.one_of(st.integers(-2, 3), st.floats(), st.none()),
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
            and (threads is None or (isinstance(threads, int) and threads >= 1)))


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
                                          "render_mode", "download", "correct_reward", "lower_ms", "upper_end_frac"])


def _mutate(data: bytes, cuts: list[tuple[int, int]], truncate: int | None) -> bytes:
    b = bytearray(data)
    for pos, val in cuts:
        b[pos % len(b)] = val
    return bytes(b[:truncate] if truncate is not None else b)


MUTATIONS = st.tuples(st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 255)), max_size=8),
                      st.one_of(st.none(), st.integers(0, 5000)))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(mutation=MUTATIONS)
def test_damaged_checkpoints(tiny_assets, tmp_path_factory, mutation):
    _count("damaged checkpoints")
    path = tmp_path_factory.mktemp("ck") / "damaged.pt"
    path.write_bytes(_mutate(Path(tiny_assets["supernet"]).read_bytes(), *mutation))
    try:
        build_supernet(load_checkpoint(path), path)
    except FILE_ERRORS as err:
        _names(err, "damaged.pt")
    with pytest.raises(FILE_ERRORS) as err:  # a supernet file is never a controller
        load_controller(path)
    _names(err.value, "damaged.pt")


JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.floats(), st.integers(), st.text(max_size=4)),
                    lambda children: st.one_of(st.lists(children, max_size=18), st.dictionaries(st.text(max_size=6), children, max_size=4)),
                    max_leaves=40)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(field=st.sampled_from(["format", "ops_ms", "fixed_ms", "opens_stage", "meta", "validation", None]),
       value=JSON, text=st.one_of(st.none(), st.text(max_size=30)))
def test_damaged_latency_tables(tiny_assets, tmp_path_factory, field, value, text):
    _count("damaged latency tables")
    d = json.loads(Path(tiny_assets["latency_table"]).read_text())
    if field is not None:
        d[field] = value
    path = tmp_path_factory.mktemp("lut") / "damaged.json"
    path.write_text(text if text is not None else json.dumps(d))
    try:
        LatencyTable.load(path, SearchSpace(0.1, 28, 1, 10))
    except FILE_ERRORS as err:
        _names(err, "damaged.json")


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(content=st.one_of(JSON.map(json.dumps), st.text(max_size=40),
                         st.fixed_dictionaries({"format": st.just("instanas-mask-v1"), "mask": JSON}).map(json.dumps)),
       npy=st.one_of(st.none(), ARRAYS))
def test_damaged_mask_files(tmp_path_factory, content, npy):
    _count("damaged mask files")
    folder = tmp_path_factory.mktemp("mask")
    if npy is None:
        path = folder / "damaged.json"
        path.write_text(content)
    else:
        path = folder / "damaged.npy"
        np.save(path, npy)
    try:
        mask = load_mask(path)
    except FILE_ERRORS as err:
        _names(err, "damaged")
    else:
        assert mask.shape == MASK_SHAPE and mask.dtype == np.uint8
