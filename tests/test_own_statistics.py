"""Each architecture's own BatchNorm statistics: estimated once, stored and read back per architecture,
and used by the outcomes store and the family view in lookup mode, which say so."""

from __future__ import annotations

import functools
import shutil

import numpy as np
import pytest
import torch

from instanas_gym.envs import bandit
from instanas_gym.envs.config import EnvConfig
from instanas_gym.envs.lookup import FamilyLookupVectorEnv
from instanas_gym.model import own_statistics
from instanas_gym.model.batchnorm import recalibrate_bn
from instanas_gym.model.checkpoint import load_supernet
from instanas_gym.model.outcomes import OutcomeStore, answers, read_outcomes
from instanas_gym.model.own_statistics import OwnStatistics
from instanas_gym.space.data import load_split
from instanas_gym.space.family import ArchitectureFamily
from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask, single_op_mask
from instanas_gym.space.search_space import FALLBACK_OP
from instanas_gym.utils.files import FileFormatError

SETTINGS = {"batches": 2, "batch_size": 16, "progress": False}


@pytest.fixture
def supernet(tiny_assets, tmp_path) -> tuple[torch.nn.Module, str]:
    """The tiny supernet and a copy of its checkpoint of this test's own (files are written beside it)."""
    path = tmp_path / "net.pt"
    shutil.copy(tiny_assets["supernet"], path)
    return load_supernet(path)[0], str(path)


def _no_estimate(*args, **kwargs):
    raise AssertionError("statistics estimated again instead of read from the file")


def test_own_statistics_are_stored_per_architecture_and_read_back(supernet, fmnist_root, monkeypatch):
    model, path = supernet
    train, test = (load_split("fashion_mnist", s, fmnist_root) for s in ("train", "test"))
    own = OwnStatistics(model, path, train, **SETTINGS)
    c = int(np.flatnonzero(model.space.opens_stage)[-1])  # an empty cell here runs the basic block
    empty_opening, fallback = mobilenetv2_mask(), mobilenetv2_mask()
    empty_opening[c] = 0
    fallback[c] = 0
    fallback[c, FALLBACK_OP] = 1
    masks = np.stack([mobilenetv2_mask(), single_op_mask(2), fallback])
    own.ensure(masks)
    assert own.path.name == "net_bn_train.pt" and own.path.is_file()
    assert len(own.stored_masks()) == 3
    state = own.state(mobilenetv2_mask())
    shared = model.state_dict()
    assert "cells.5.ops.0.0.1.running_mean" in state and "cells.5.ops.2.0.1.running_mean" not in state
    assert not torch.equal(state["cells.5.ops.0.0.1.running_mean"], shared["cells.5.ops.0.0.1.running_mean"])
    x = test.tensors()[0][:16]
    for mask in masks[:2]:  # the same network as a copy recalibrated for it alone
        calibrated = recalibrate_bn(model, train, mask, batches=2, batch_size=16)
        m = torch.from_numpy(mask).bool()
        with torch.no_grad():
            assert torch.equal(own.network(mask)(x, m), calibrated(x, m))
    with torch.no_grad():  # the supernet itself keeps the shared statistics
        assert torch.equal(model.state_dict()["cells.5.ops.0.0.1.running_mean"], shared["cells.5.ops.0.0.1.running_mean"])

    monkeypatch.setattr(own_statistics, "own_bn_state", _no_estimate)
    again = OwnStatistics(model, path, train, **SETTINGS)
    for name, value in own.state(single_op_mask(2)).items():
        assert torch.equal(again.state(single_op_mask(2))[name], value), name
    name = f"cells.{c}.ops.{FALLBACK_OP}.0.1.running_var"
    assert torch.equal(again.state(empty_opening)[name], own.state(fallback)[name])  # keyed by the effective mask


def test_a_stale_file_is_replaced_and_a_damaged_one_named(supernet, fmnist_root):
    model, path = supernet
    train = load_split("fashion_mnist", "train", fmnist_root)
    own = OwnStatistics(model, path, train, **SETTINGS)
    own.ensure(mobilenetv2_mask()[None])
    other = OwnStatistics(model, path, train, **{**SETTINGS, "seed": 1})  # other settings: the file is stale
    assert len(other.stored_masks()) == 0
    other.ensure(all_ops_mask()[None])
    assert len(OwnStatistics(model, path, train, **{**SETTINGS, "seed": 1}).stored_masks()) == 1
    own.path.write_bytes(b"not a torch file")
    with pytest.raises(FileFormatError, match="net_bn_train.pt"):
        OwnStatistics(model, path, train, **SETTINGS)


def test_an_outcomes_store_with_own_statistics_runs_them_and_says_so_in_its_key(supernet, fmnist_root):
    model, path = supernet
    train, test = (load_split("fashion_mnist", s, fmnist_root) for s in ("train", "test"))
    own = OwnStatistics(model, path, train, **SETTINGS)
    store = OutcomeStore(model, path, test, "own", own=own, progress=False)
    mask = single_op_mask(1)
    got = store.get(mask[None], 64)
    calibrated = recalibrate_bn(model, train, mask, batches=2, batch_size=16)
    assert np.array_equal(got.prediction[0], answers(calibrated, test, mask, n=64)["prediction"])
    assert store.path.name == "net_outcomes_test_own.npz"
    stored, _ = read_outcomes(store.path, None)
    key = read_outcomes(store.path, store.key)
    assert key is not None and store.key["statistics"] == "own" and store.key["own_statistics"] == own.settings
    assert len(stored["masks"]) == 1
    shared = OutcomeStore(model, path, test, progress=False)
    assert shared.path.name == "net_outcomes_test.npz" and "own_statistics" not in shared.key
    with pytest.raises(ValueError, match="own"):
        OutcomeStore(model, path, test, "own", progress=False)
    with pytest.raises(ValueError, match="own"):
        OutcomeStore(model, path, test, "shared", own=own, progress=False)


def test_the_family_view_in_lookup_mode_runs_each_arm_with_its_own_statistics(supernet, tiny_assets, monkeypatch):
    _, path = supernet
    monkeypatch.setattr(bandit, "OwnStatistics", functools.partial(OwnStatistics, batches=2, batch_size=16))  # quick
    family = ArchitectureFamily(np.stack([mobilenetv2_mask(), single_op_mask(4)]), dataset="fashion_mnist")
    env = FamilyLookupVectorEnv(2, family=family, dataset="fashion_mnist", split="test",
                                data_root=tiny_assets["data_root"], supernet=path,
                                latency_table=tiny_assets["latency_table"], bn_statistics="own", progress=False)
    env.reset(seed=0)
    info = env.step(np.array([0, 1]))[-1]
    assert list(info["final_info"]["bn_statistics"]) == ["own", "own"]
    assert env.bandit.outcomes_path.name == "net_outcomes_test_own.npz"
    assert env.bandit.own_statistics().path.name == "net_bn_search.pt"  # Fashion-MNIST's bundled training images
    with pytest.raises(ValueError, match="bn_statistics"):
        EnvConfig(bn_statistics="own", lookup=False)
