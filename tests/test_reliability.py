"""Hostile and broken input: every loader refuses to run code, every bad file or argument gets one
clear error naming it, thread and environment counts stay within what the machine can run, and
Stable-Baselines3 trains on the wrapped env. Each case here is a defect that once got through
(damaged files of every kind: tests/test_damaged_files.py)."""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.env_util import make_vec_env

from instanas_gym.agents.config import ControllerConfig, SearchConfig
from instanas_gym.agents.controller import Controller, load_controller, save_controller
from instanas_gym.agents.policy import load_policy, save_policy
from instanas_gym.agents.search import search
from instanas_gym.envs.instanas_env import InstaNASEnv
from instanas_gym.envs.reward import RewardConfig
from instanas_gym.envs.vector import InstaNASVectorEnv
from instanas_gym.envs.wrappers import make_sb3_env
from instanas_gym.latency.table import LatencyTable
from instanas_gym.model.checkpoint import load_checkpoint, supernet_state
from instanas_gym.space.data import DataConfig, SubsetConfig
from instanas_gym.space.masks import load_mask
from instanas_gym.space.search_space import SearchSpace
from instanas_gym.training.config import TrainConfig
from instanas_gym.training.trainer import train_supernet
from instanas_gym.utils.files import FileFormatError, atomic_save
from instanas_gym.utils.run import RunConfig

from .conftest import env_config, tiny_supernet


def _train(root, out, **kw) -> TrainConfig:
    """A one-epoch run of the tiny supernet on 32 images."""
    return TrainConfig(data=DataConfig(str(root)), run=RunConfig(threads=1, out=str(out)), width_mult=0.1, epochs=1,
                       batch_size=16, subset=SubsetConfig(32, 16), **kw)


class Payload:
    """Unpickling this runs ``touch MARKER``: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_files(folder: Path) -> list[Path]:
    """A malicious file in torch's zip format (a payload inside a valid-looking checkpoint dict) and
    one as a plain pickle."""
    marker = folder / "pwned"
    zipped, plain = folder / "evil.pt", folder / "evil_plain.pt"
    torch.save({"format": "instanas-supernet-v1", "model": Payload(marker)}, zipped)
    with open(plain, "wb") as f:
        pickle.dump(Payload(marker), f)
    return [zipped, plain]


def _loaders(tiny_assets, tmp_path):
    """Every way a file gets loaded, as (name, (call(path), the file it reads: None for ``path``))."""
    def resume_training(path: Path) -> None:
        out = tmp_path / "train"
        out.mkdir(exist_ok=True)
        (out / "last.pt").write_bytes(path.read_bytes())
        train_supernet(_train(tiny_assets["data_root"], out, resume=True))

    def resume_search(path: Path) -> None:
        out = tmp_path / "search"
        out.mkdir(exist_ok=True)
        (out / "search.pt").write_bytes(path.read_bytes())
        search(SearchConfig(env=env_config(tiny_assets), run=RunConfig(threads=1, out=str(out)), epochs=1,
                            controller=ControllerConfig(widths=(4, 8)), controller_images=16, supernet_images=16,
                            finetune_images=0, resume=True))

    return [
        ("checkpoint", (load_checkpoint, None)),
        ("env", (lambda p: gym.make("InstaNAS-FashionMNIST-v0", **{**tiny_assets, "supernet": str(p)}), None)),
        ("controller", (load_controller, None)),
        ("policy", (load_policy, None)),
        ("init_from", (lambda p: train_supernet(_train(tiny_assets["data_root"], tmp_path / "i", init_from=str(p))), None)),
        ("resume training", (resume_training, "last.pt")),
        ("resume search", (resume_search, "search.pt")),
    ]


@pytest.mark.parametrize("which", ["checkpoint", "env", "controller", "policy", "init_from", "resume training",
                                   "resume search"])
def test_a_malicious_file_runs_nothing_and_the_error_names_it(tiny_assets, tmp_path, which):
    loader, reads = dict(_loaders(tiny_assets, tmp_path))[which]
    for evil in _evil_files(tmp_path):
        with pytest.raises(FileFormatError) as err:
            loader(evil)
        assert (reads or evil.name) in str(err.value) and "not loaded" in str(err.value)
        assert not (tmp_path / "pwned").exists(), "the payload ran"


@pytest.mark.parametrize("damage", ["empty", "random bytes", "truncated", "missing key", "not a dict", "a folder"])
def test_a_broken_checkpoint_gets_one_clear_error(tiny_assets, tmp_path, damage):
    good = Path(tiny_assets["supernet"]).read_bytes()
    path = tmp_path / "bad.pt"
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "missing key":
        state = supernet_state(tiny_supernet().eval(), "fashion_mnist")
        del state["space"]
        torch.save(state, path)
    elif damage == "not a dict":
        torch.save([1, 2, 3], path)
    else:
        path.mkdir()
    kind = FileNotFoundError if damage == "a folder" else FileFormatError
    for load in (load_checkpoint, load_controller, load_policy):
        with pytest.raises(kind, match="bad.pt"):
            load(path)
    with pytest.raises(kind, match="bad.pt"):
        InstaNASEnv(**{**tiny_assets, "supernet": str(path)}) if damage != "a folder" else load_checkpoint(path)


def _table_dict(tiny_assets) -> dict:
    return json.loads(Path(tiny_assets["latency_table"]).read_text())


@pytest.mark.parametrize("damage, message", [
    ("missing key", "lacks"),
    ("corrupt JSON", "not valid JSON"),
    ("a JSON list", "JSON object"),
    ("opens_stage length", "opens_stage must have shape"),
    ("flipped opens_stage", "opens_stage does not match"),
    ("NaN entry", "finite"),
    ("negative entry", r"in \[0, 1e\+06\] ms"),
    ("wrong shape", r"ops_ms must have shape"),
    ("other num_classes", "num_classes"),
    ("other cell_merge", "cell_merge"),
    ("fixed_ms text", "fixed_ms"),
])
def test_a_broken_latency_table_gets_one_clear_error(tiny_assets, tmp_path, damage, message):
    d = _table_dict(tiny_assets)
    path = tmp_path / "table.json"
    text = None
    if damage == "missing key":
        del d["fixed_ms"]
    elif damage == "corrupt JSON":
        text = json.dumps(d)[:-20]
    elif damage == "a JSON list":
        text = "[1, 2, 3]"
    elif damage == "opens_stage length":
        d["opens_stage"] = d["opens_stage"][:-1]
    elif damage == "flipped opens_stage":
        d["opens_stage"] = [not v for v in d["opens_stage"]]
    elif damage == "NaN entry":
        text = json.dumps(d).replace(str(d["ops_ms"][0][0]), "NaN", 1)
    elif damage == "negative entry":
        d["ops_ms"][3][2] = -0.1
    elif damage == "wrong shape":
        d["ops_ms"] = d["ops_ms"][:5]
    elif damage == "other num_classes":
        d["meta"]["num_classes"] = 100
    elif damage == "other cell_merge":
        d["meta"]["cell_merge"] = "sum"
    else:
        d["fixed_ms"] = "fast"
    path.write_text(text if text is not None else json.dumps(d))
    with pytest.raises(FileFormatError, match=message) as err:
        LatencyTable.load(path, SearchSpace(0.1, 28, 1, 10))
    assert "table.json" in str(err.value)
    with pytest.raises(FileFormatError, match="table.json"):
        InstaNASEnv(**{**tiny_assets, "latency_table": str(path)})


def test_a_broken_mask_file_gets_one_clear_error(tmp_path):
    for name, content in (("m.json", "{"), ("n.json", '{"format": "instanas-mask-v1", "mask": [[2]]}'),
                          ("o.json", "[]")):
        (tmp_path / name).write_text(content)
        with pytest.raises(FileFormatError, match=name):
            load_mask(tmp_path / name)
    np.save(tmp_path / "p.npy", np.array([Payload(tmp_path / "pwned")], dtype=object), allow_pickle=True)
    with pytest.raises(FileFormatError, match="p.npy"):
        load_mask(tmp_path / "p.npy")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("kwargs, error, message", [
    ({"dataset": "mnist"}, ValueError, "unknown dataset 'mnist'"),
    ({"reward": {"correct_reward": float("nan")}}, ValueError, "correct_reward"),
    ({"reward": {"upper_end_frac": -1}}, ValueError, "upper_end_frac"),
    ({"reward": {"lower_ms": float("inf")}}, ValueError, "lower_ms"),
    ({"reward": {"shape": "linear"}}, ValueError, "shape"),
    ({"reward": {"speed": 1}}, TypeError, "speed"),
    ({"reward": 3}, TypeError, "reward"),
    ({"mode": "fast"}, ValueError, "mode"),
    ({"threads": 0}, ValueError, "threads"),
    ({"threads": 1.5}, TypeError, "threads"),
    ({"download": "yes"}, TypeError, "download"),
    ({"device": "gpu9"}, ValueError, "device"),
    ({"order": "shuffled"}, ValueError, "order"),
])
def test_bad_env_arguments_are_refused_by_name(tiny_assets, kwargs, error, message):
    with pytest.raises(error, match=message):
        InstaNASEnv(**{**tiny_assets, **kwargs})


@pytest.mark.parametrize("index, error", [(1.7, TypeError), ("3", TypeError), (True, TypeError), ("x", TypeError),
                                          (-1, ValueError), (10**30, ValueError), (np.float64(2.0), TypeError)])
def test_reset_index_must_be_an_integer_in_range(tiny_assets, index, error):
    env = InstaNASEnv(**tiny_assets)
    with pytest.raises(error, match=r"options\['index'\]"):
        env.reset(options={"index": index})
    venv = InstaNASVectorEnv(num_envs=2, **tiny_assets)
    with pytest.raises(error, match=r"options\['index'\]"):
        venv.reset(options={"index": index})


def test_reset_accepts_numpy_integers_and_refuses_other_seeds(tiny_assets):
    env = InstaNASEnv(**tiny_assets)
    assert env.reset(seed=np.int64(3))[1] == env.reset(seed=3)[1]
    assert env.reset(options={"index": np.int32(4)})[1]["image_index"] == 4
    venv = InstaNASVectorEnv(num_envs=2, **tiny_assets)
    np.testing.assert_array_equal(venv.reset(seed=np.int64(3))[0], venv.reset(seed=3)[0])
    for seed, error in (("abc", TypeError), (-1, ValueError), (1.5, TypeError), ([1, "a"], TypeError)):
        with pytest.raises(error, match="seed"):
            venv.reset(seed=seed)
        if not isinstance(seed, list):
            with pytest.raises(error, match="seed"):
                env.reset(seed=seed)
    with pytest.raises(ValueError, match="options: unknown keys"):
        env.reset(options={"idx": 1})
    with pytest.raises(TypeError, match="options"):
        env.reset(options=[1])


@pytest.mark.parametrize("algo", [PPO, A2C])
def test_sb3_trains_on_the_wrapped_env_and_on_make_vec_env(tiny_assets, algo):
    """SB3 samples MultiBinary actions as 0./1. floats: the flat-action wrapper takes them."""
    kwargs = {"n_steps": 16} | ({"batch_size": 32} if algo is PPO else {})
    algo("MlpPolicy", make_sb3_env("InstaNAS-FashionMNIST-v0", **tiny_assets), seed=0, device="cpu", **kwargs).learn(48)
    venv = make_vec_env(make_sb3_env, n_envs=2, env_kwargs={"env_id": "InstaNAS-FashionMNIST-v0", **tiny_assets})
    algo("MlpPolicy", venv, seed=0, device="cpu", **kwargs).learn(48)


def test_the_flat_action_wrapper_refuses_floats_other_than_0_and_1(tiny_assets):
    env = make_sb3_env("InstaNAS-FashionMNIST-v0", **tiny_assets)
    env.reset(seed=0)
    env.step(np.ones(85, np.float32))
    for bad in (np.full(85, 0.5, np.float32), np.full(85, np.nan), np.full(85, 2.0)):
        with pytest.raises(ValueError, match="exactly 0 or 1"):
            env.step(bad)


@pytest.mark.parametrize("change", [{"width_mult": 0.2}, {"epochs": 3}, {"lr": 0.5}, {"dataset": "cifar10"},
                                    {"mask_sampling": "mixed"}])
def test_resume_with_other_settings_is_refused(fmnist_root, tmp_path, change):
    cfg = _train(fmnist_root, tmp_path)
    train_supernet(cfg)
    with pytest.raises(ValueError, match=f"other settings.*{next(iter(change))}"):
        train_supernet(replace(cfg, resume=True, **change))


@pytest.mark.parametrize("field, value", [("epochs", 0), ("batch_size", 0), ("subset.train", -5), ("lr", float("nan")),
                                          ("run.threads", 0), ("momentum", 1.5), ("checkpoint_every", 0),
                                          ("run.seed", -1), ("run.threads", 10**6)])
def test_training_settings_are_checked_before_anything_runs(field, value):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        if field.startswith("run."):
            TrainConfig(run=RunConfig(**{field[4:]: value}))
        elif field.startswith("subset."):
            TrainConfig(subset=SubsetConfig(**{field[7:]: value}))
        else:
            TrainConfig(**{field: value})


def test_stray_temporary_files_are_removed_at_the_next_save(tmp_path):
    path = tmp_path / "last.pt"
    (tmp_path / "last.ptabc123.tmp").write_bytes(b"half a checkpoint")
    atomic_save({"x": 1}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_controller_and_policy_files_round_trip(tmp_path):
    c = Controller(1, (8, 16), (1, 2), input_size=14)
    save_controller(c, tmp_path / "c.pt", note="x")
    loaded, ckpt = load_controller(tmp_path / "c.pt")
    assert ckpt["note"] == "x" and loaded.config == c.config
    for a, b in zip(c.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    save_policy(tmp_path / "p.pt", "masks", c, note="y")
    saved = load_policy(tmp_path / "p.pt")
    assert saved.view == "masks" and saved.meta == {"note": "y"} and saved.network.config == c.config
    for a, b in zip(c.state_dict().values(), saved.network.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="family"):
        save_policy(tmp_path / "q.pt", "family", c)
    with pytest.raises(FileFormatError, match="c.pt"):
        load_policy(tmp_path / "c.pt")  # a controller file is not a policy file
    assert RewardConfig.coerce({"upper_end_frac": 1.0}).upper_end_frac == 1.0


# ---- thread and environment counts --------------------------------------------------------------------
def test_a_thread_count_above_the_cores_is_refused_before_any_thread_starts(tiny_assets, tmp_path):
    import gymnasium as gym

    from instanas_gym.deploy.engine import InstaNASModel
    from instanas_gym.latency.config import TableConfig
    from instanas_gym.latency.measure import torch_threads
    from instanas_gym.model.parallel import ProcessPool
    from instanas_gym.utils.checks import available_cores
    from instanas_gym.utils.runtime import session_options

    before, too_many = torch.get_num_threads(), available_cores() + 1
    for threads in (10**6, too_many):
        with pytest.raises(ValueError, match=rf"threads must be at most {available_cores()}.*got {threads}"):
            gym.make("InstaNAS-FashionMNIST-v0", threads=threads)
        with pytest.raises(ValueError, match="threads must be at most"):
            InstaNASVectorEnv(num_envs=2, threads=threads, **tiny_assets)
        with pytest.raises(ValueError, match="run.threads must be at most"):
            RunConfig(threads=threads)
        with pytest.raises(ValueError, match="table.timed_threads must be at most"):
            TableConfig(timed_threads=threads)
        with pytest.raises(ValueError, match="threads must be at most"):
            session_options(threads)
        with pytest.raises(ValueError, match="threads must be at most"), torch_threads(threads):
            pass
        with pytest.raises(ValueError, match="threads must be at most"):
            InstaNASModel.load(tmp_path, threads=threads)  # refused before the folder is read
        with pytest.raises(ValueError, match="workers must be at most"):
            ProcessPool(tiny_supernet().eval(), workers=threads)
    assert torch.get_num_threads() == before


def test_a_table_timed_with_more_threads_than_cores_times_with_the_cores(tiny_assets, tmp_path):
    from instanas_gym.utils.checks import available_cores

    d = json.loads(Path(tiny_assets["latency_table"]).read_text())
    d["meta"]["threads"] = available_cores() + 3
    (tmp_path / "t.json").write_text(json.dumps(d))
    with pytest.warns(UserWarning, match="threads"):
        table = LatencyTable.load(tmp_path / "t.json", SearchSpace(0.1, 28, 1, 10))
    assert table.threads == available_cores()
    d["meta"]["threads"] = 0
    (tmp_path / "t.json").write_text(json.dumps(d))
    with pytest.raises(FileFormatError, match=r"t\.json: meta\.threads"):
        LatencyTable.load(tmp_path / "t.json")


def test_vector_envs_refuse_more_sub_environments_than_they_can_hold(tiny_assets):
    from instanas_gym.envs.lookup import FamilyLookupVectorEnv
    from instanas_gym.envs.vector import MAX_NUM_ENVS
    from instanas_gym.envs.wrappers import SB3VecEnv
    from instanas_gym.utils.paths import BUNDLED_FAMILY

    for n in (10**9, MAX_NUM_ENVS + 1):  # a ValueError before anything is allocated, not a MemoryError
        with pytest.raises(ValueError, match=f"num_envs must be at most {MAX_NUM_ENVS}"):
            FamilyLookupVectorEnv(num_envs=n, family=BUNDLED_FAMILY)
        with pytest.raises(ValueError, match="num_envs must be at most"):
            InstaNASVectorEnv(num_envs=n, **tiny_assets)
        with pytest.raises(ValueError, match="num_envs must be at most"):
            SB3VecEnv.make(num_envs=n, **tiny_assets)
    for n, error in ((0, ValueError), (2.0, TypeError), ("4", TypeError)):
        with pytest.raises(error, match="num_envs"):
            InstaNASVectorEnv(num_envs=n, **tiny_assets)


# ---- argument types ------------------------------------------------------------------------------------
@pytest.mark.parametrize("anneal", ["no", "False", 0, 1, None, 1.0])
def test_reward_anneal_must_be_a_bool(anneal):
    with pytest.raises(TypeError, match="anneal must be True or False"):
        RewardConfig.coerce({"anneal": anneal})


@pytest.mark.parametrize("root", [123, 1.5, b"/tmp", ["/tmp"]])
def test_data_root_must_be_a_path(tiny_assets, root):
    from instanas_gym.space.data import load_split

    with pytest.raises(TypeError, match="data_root must be a folder path"):
        InstaNASEnv(**{**tiny_assets, "data_root": root})
    with pytest.raises(TypeError, match="root must be a folder path"):
        load_split("fashion_mnist", "search", root)  # a split that never reads the root
    with pytest.raises(TypeError, match="data.root must be a folder path"):
        DataConfig(root)
