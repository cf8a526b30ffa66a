import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from instanas_gym.model.checkpoint import export_supernet, load_checkpoint, load_supernet
from instanas_gym.space.data import DataConfig, SubsetConfig
from instanas_gym.space.masks import mobilenetv2_mask, one_op_masks, save_mask
from instanas_gym.space.search_space import SearchSpace
from instanas_gym.training.config import TrainConfig
from instanas_gym.training.trainer import keep_prob, train_supernet
from instanas_gym.utils.run import RunConfig

from .helpers import Crash, raise_at

REPO = Path(__file__).resolve().parents[1]


def _cfg(root, out, **kw) -> TrainConfig:
    return TrainConfig(
        dataset="fashion_mnist", data=DataConfig(str(root)), run=RunConfig(threads=1, out=str(out)), width_mult=0.1,
        epochs=2, batch_size=16, subset=SubsetConfig(64, 64), checkpoint_every=2, **kw,
    )


def test_keep_prob_schedule():
    assert keep_prob(0.0) == keep_prob(0.49) == 1.0
    assert keep_prob(0.75) == pytest.approx(0.75)
    assert keep_prob(1.0) == pytest.approx(0.5)
    assert keep_prob(1.0, 0.3) == pytest.approx(0.3)


@pytest.fixture(scope="module")
def uninterrupted(fmnist_root, tmp_path_factory) -> Path:
    """The folder of a run of :func:`_cfg` that nothing interrupted (one for both kinds of interruption)."""
    out = tmp_path_factory.mktemp("full")
    metrics = train_supernet(_cfg(fmnist_root, out))
    assert set(metrics) == {"test_acc_mobilenetv2", "test_acc_all_ops", "test_acc_random"}
    return out


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, Crash])
def test_resume_after_interruption_loses_nothing(fmnist_root, tmp_path, interrupt, uninterrupted):
    """A run killed at step 5 (Ctrl-C saves there; a crash falls back to step 4) and resumed ends
    with exactly the weights of an uninterrupted run."""

    cut = _cfg(fmnist_root, tmp_path / "cut")
    with pytest.raises(interrupt):
        train_supernet(cut, on_step=raise_at(5, interrupt))
    ckpt = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert ckpt["epoch"] * 4 + ckpt["batch_in_epoch"] == (5 if interrupt is KeyboardInterrupt else 4)
    train_supernet(replace(cut, resume=True))

    a, full_ckpt = load_supernet(uninterrupted / "last.pt")
    b, ckpt = load_supernet(tmp_path / "cut" / "last.pt")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    # the logged epoch means are the true ones (the interrupted epoch's batches before the kill count too)
    assert ckpt["epoch"] == 2
    assert ckpt["metrics"] == full_ckpt["metrics"]
    assert ckpt["optimizer"]["state"].keys() == full_ckpt["optimizer"]["state"].keys()
    assert ckpt["config"]["width_mult"] == 0.1 and ckpt["config"]["run"]["threads"] == 1
    assert ckpt["space"]["num_classes"] == 10
    assert {"optimizer", "scheduler", "rng"} <= set(ckpt)


def test_ddp_two_processes(fmnist_root, tmp_path):
    """torchrun with 2 gloo processes trains and rank 0 writes one checkpoint."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        str(REPO / "examples" / "train_supernet.py"), "--data.root", str(fmnist_root), "--width-mult", "0.1",
        "--epochs", "1", "--batch-size", "16", "--subset.train", "64", "--subset.eval", "32", "--run.threads", "1",
        "--run.out", str(tmp_path / "ddp"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}  # this checkout's package
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert ckpt["epoch"] == 1
    assert len(ckpt["rng"]["augment"]) == 2  # both ranks' RNG states are kept for resume
    assert "test_acc_mobilenetv2" in ckpt["metrics"]


def test_export_drops_resume_state(fmnist_root, tmp_path):
    train_supernet(replace(_cfg(fmnist_root, tmp_path / "run"), epochs=1))
    export_supernet(tmp_path / "run" / "last.pt", tmp_path / "small.pt")
    small = load_checkpoint(tmp_path / "small.pt")
    assert "optimizer" not in small and "rng" not in small
    a, _ = load_supernet(tmp_path / "run" / "last.pt")
    b, _ = load_supernet(tmp_path / "small.pt")
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(a(x, np.ones((17, 5), np.uint8)), b(x, np.ones((17, 5), np.uint8)))


@pytest.mark.parametrize("sampling", ["mobilenetv2", "fixed"])
def test_one_architecture_sampling_trains_its_ops_only(fmnist_root, tmp_path, sampling):
    """mask_sampling="mobilenetv2" updates the 3x3 expand-6 op of each cell, "fixed" the ops of its
    mask file; every other op stays as it was."""
    train_supernet(replace(_cfg(fmnist_root, tmp_path / "a"), epochs=1))
    start = load_checkpoint(tmp_path / "a" / "last.pt")["model"]
    want = mobilenetv2_mask()
    fixed = None
    if sampling == "fixed":
        want = one_op_masks(np.random.default_rng(3), 1)[0]
        want[1] = 0  # an empty identity cell: none of its ops may change
        save_mask(tmp_path / "arch.json", want)
        fixed = str(tmp_path / "arch.json")
        assert not SearchSpace(0.1, 28, 1, 10).opens_stage[1]
    cfg = replace(_cfg(fmnist_root, tmp_path / "b"), epochs=1, mask_sampling=sampling, fixed_mask=fixed,
                  init_from=str(tmp_path / "a" / "last.pt"), weight_decay=0.0)
    metrics = train_supernet(cfg)
    ckpt = load_checkpoint(tmp_path / "b" / "last.pt")
    end = ckpt["model"]
    for c in range(17):
        for j in range(5):
            keys = [k for k in start if k.startswith(f"cells.{c}.ops.{j}.") and start[k].is_floating_point()]
            changed = any(not torch.equal(start[k], end[k]) for k in keys)
            assert changed == bool(want[c, j]), (c, j)
    if sampling == "fixed":
        assert np.array_equal(np.asarray(ckpt["train_mask"]), want) and 0 <= metrics["test_acc_fixed"] <= 1
    else:
        assert ckpt["train_mask"] is None and "test_acc_fixed" not in metrics


def test_fixed_sampling_needs_a_mask_file(fmnist_root, tmp_path):
    with pytest.raises(ValueError, match="fixed_mask"):
        train_supernet(replace(_cfg(fmnist_root, tmp_path / "a"), mask_sampling="fixed"))
    with pytest.raises(ValueError, match="fixed_mask"):
        train_supernet(replace(_cfg(fmnist_root, tmp_path / "a"), fixed_mask=str(tmp_path / "m.json")))
    with pytest.raises(FileNotFoundError, match="no mask file"):
        train_supernet(replace(_cfg(fmnist_root, tmp_path / "a"), mask_sampling="fixed", fixed_mask=str(tmp_path / "m.json")))


def test_unknown_mask_sampling_is_an_error(fmnist_root, tmp_path):
    with pytest.raises(ValueError, match="mask_sampling"):
        train_supernet(replace(_cfg(fmnist_root, tmp_path / "a"), mask_sampling="dense"))
