"""Device selection, bf16 autocast and the device plumbing of the jobs, on the CPU (no GPU needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rich.console import Console

from instanas_gym.agents.config import ControllerConfig, SearchConfig
from instanas_gym.agents.search import search
from instanas_gym.envs.bandit import InstaNASBandit
from instanas_gym.latency.machine import cpu_model
from instanas_gym.latency.measure import build_table
from instanas_gym.space.data import DataConfig, SubsetConfig
from instanas_gym.training import distributed
from instanas_gym.training.config import TrainConfig
from instanas_gym.training.trainer import SupernetTrainer
from instanas_gym.utils.devices import autocast, cpu_copy, resolve_device
from instanas_gym.utils.run import RunConfig

from .conftest import env_config, tiny_supernet

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the errors of a machine without a GPU")


def test_auto_is_cpu_without_a_gpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@no_gpu
@pytest.mark.parametrize("make", [
    lambda: resolve_device("cuda"),
    lambda: TrainConfig(run=RunConfig(device="cuda")),
    lambda: RunConfig(device="cuda:0"),
])
def test_cuda_without_a_gpu_is_a_clear_error(make):
    with pytest.raises(ValueError, match=r"device='cuda(:0)?' but torch sees no CUDA GPU"):
        make()


@pytest.mark.parametrize("bad", ["gpu", "mps", "cuda:x"])
def test_unknown_devices_are_refused(bad):
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        resolve_device(bad)


def test_precision_is_checked():
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(run=RunConfig(precision="fp16"))


def test_process_group_backend_follows_the_device():
    assert distributed.backend(torch.device("cpu")) == "gloo"
    assert distributed.backend(torch.device("cuda", 1)) == "nccl"


def test_bf16_training_step_on_cpu(fmnist_root, tmp_path):
    """One sandwich step and one plain step under bfloat16 autocast: finite losses, fp32 weights that moved."""
    for sampling in ("sandwich", "paper"):
        run = RunConfig(threads=1, out=str(tmp_path / sampling), device="auto", precision="bf16")
        cfg = TrainConfig(data=DataConfig(str(fmnist_root)), run=run, width_mult=0.1, epochs=1, batch_size=16,
                          subset=SubsetConfig(32, 16), mask_sampling=sampling)
        t = SupernetTrainer(cfg, Console(quiet=True))
        assert t.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
        before = t.model.classifier.weight.detach().clone()
        t.net.train()
        loss, correct = t.train_step(torch.arange(16), 0)
        assert np.isfinite(loss) and 0 <= correct <= 16
        assert t.model.classifier.weight.dtype == torch.float32
        assert not torch.equal(before, t.model.classifier.weight.detach())


def test_autocast_runs_the_supernet_in_bf16(tiny_assets):
    bandit = InstaNASBandit(supernet=tiny_assets["supernet"], latency_table=tiny_assets["latency_table"], device="auto",
                            precision="bf16")
    with autocast(bandit.device, "bf16"):
        logits = bandit.model(bandit.images[:4].contiguous(), np.ones((17, 5), bool))
    assert logits.dtype == torch.bfloat16
    out = bandit.evaluate(np.arange(4), np.ones((4, 17, 5), np.uint8))
    assert out["confidence"].dtype == np.float64 and np.isfinite(out["reward"]).all()


def test_a_latency_table_names_its_device(tiny_supernet_model):
    meta = build_table(tiny_supernet_model, passes=20, warmup=2).meta
    assert meta["device"] == "cpu" and meta["device_name"] == cpu_model()


def test_clock_paths_time_a_cpu_module_in_place(tiny_supernet_model):
    assert cpu_copy(tiny_supernet_model) is tiny_supernet_model


@pytest.fixture
def tiny_supernet_model():
    return tiny_supernet()


def test_search_runs_in_bf16_with_channels_last(tiny_assets, tmp_path):
    """The search's supernet steps under bfloat16 autocast and channels_last, on the device "auto" picks."""
    cfg = SearchConfig(env=env_config(tiny_assets), controller=ControllerConfig(widths=(4, 8), input_size=14),
                       epochs=1, controller_images=32, batch_size=16, supernet_images=32, supernet_batch_size=16,
                       finetune_images=16, log_every=1,  # run.channels_last: True by default
                       run=RunConfig(threads=1, device="auto", precision="bf16", out=str(tmp_path / "search")))
    out = search(cfg, Console(quiet=True))
    rows = (out / "supernet_log.csv").read_text().splitlines()
    assert len(rows) > 1 and "nan" not in rows[-1]
