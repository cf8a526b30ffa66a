"""``instanas-gym prepare`` end to end on a synthetic CIFAR-10 with a tiny budget: stages, resume
after an interruption at each stage, install, and ``gymnasium.make`` with no arguments."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from rich.console import Console

import instanas_gym  # noqa: F401 (registers the ids)
from instanas_gym.latency import onnx as onnx_latency
from instanas_gym.latency.config import TableConfig
from instanas_gym.space.data import DataConfig, SubsetConfig
from instanas_gym.training import prepare as prep
from instanas_gym.utils.paths import cache_dir, data_root, default_latency_table, default_supernet
from instanas_gym.utils.run import RunConfig
from tests.fixtures import macs_runtime_ms, skip_cifar_checksums, write_cifar


def tiny(root, work, **over) -> prep.PrepareConfig:
    settings = {"data": DataConfig(str(root), download=False), "run": RunConfig(threads=1, device="auto", out=str(work)),
                "width_mult": 0.1, "epochs": 1, "frozen_epochs": 1, "batch_size": 16,
                "subset": SubsetConfig(32, 16), "frozen_bn_batches": 2,
                "table": TableConfig(passes=120, repeats=1, validate_masks=3)}
    return prep.PrepareConfig("cifar10", **(settings | over))


class Boom(RuntimeError):
    pass


def test_prepare_resumes_after_a_failure_at_each_stage_then_the_env_needs_no_argument(tmp_path, monkeypatch):
    root = write_cifar(tmp_path / "data", "cifar10", n_train=60, n_test=30)
    cfg = tiny(root, tmp_path / "work")
    ran: list[str] = []
    real_train = prep.train_supernet

    def interrupted_train(train_cfg, console=None):
        """The supernet stage is killed after its first step (Ctrl-C), then resumed from its checkpoint."""
        if "supernet" not in ran:
            ran.append("supernet")

            def stop(step: int) -> None:
                raise KeyboardInterrupt

            return real_train(train_cfg, on_step=stop, console=console)
        return real_train(train_cfg, console=console)

    monkeypatch.setattr(prep, "train_supernet", interrupted_train)
    monkeypatch.setattr(onnx_latency, "measure_onnx_masks", macs_runtime_ms)  # ONNX Runtime's clock, at once
    failing = {"data": None, "frozen": None, "table": None, "install": None}
    for stage in failing:  # each of these stages fails once, before doing anything
        method = "train" if stage == "frozen" else stage
        real = getattr(prep.Preparation, method)

        def once(self, *args, _stage=stage, _real=real, _method=method):
            if _method == "train" and args != ("frozen",):
                return _real(self, *args)
            if _stage not in ran:
                ran.append(_stage)
                raise Boom(_stage)
            return _real(self, *args)

        monkeypatch.setattr(prep.Preparation, method, once)

    console = Console(record=True, width=200)
    attempts = 0
    with skip_cifar_checksums():
        while True:
            attempts += 1
            try:
                state = prep.prepare(cfg, console)
                break
            except (Boom, KeyboardInterrupt):
                done = json.loads((tmp_path / "work" / "prepare.json").read_text())["done"] if attempts > 1 else []
                assert list(done) == list(prep.STAGES[: len(done)])  # stages complete in order
                assert attempts <= 6
        text = console.export_text()
        assert attempts == 6 and state["done"] == list(prep.STAGES)
        assert "resumed from" in text  # the killed supernet stage continued from its checkpoint
        assert text.count("[1/5] data: done") == 4  # every rerun after the first success skipped it

        installed = cache_dir() / "cifar10"
        record = json.loads((installed / "prepared.json").read_text())
        assert record["data_root"] == str(root.resolve())
        assert default_supernet("cifar10") == installed / "last.pt"
        assert default_latency_table("cifar10") == installed / "latency_onnxruntime.json"
        assert data_root(dataset="cifar10") == root.resolve()
        assert record["tables"]["onnxruntime"]["spearman"] == pytest.approx(1.0)  # the fit of a runtime it can fit

        env = gym.make("InstaNAS-CIFAR10-v0")  # no arguments: supernet, table and data from the cache
        obs, _ = env.reset(seed=0)
        assert obs.shape == (32, 32, 3)
        _, reward, terminated, _, info = env.step(env.action_space.sample())
        assert terminated and np.isfinite(reward) and info["latency_ms"] > 0


def test_a_rerun_with_other_settings_is_refused(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    cfg = tiny(tmp_path, work)
    (work / "prepare.json").write_text(json.dumps({"config": {**prep.asdict(cfg), "epochs": 7}, "done": ["data"]}))
    with pytest.raises(ValueError, match="epochs: before 7 vs now 1"):
        prep.prepare(cfg, Console(quiet=True))
    assert prep.PrepareConfig("fashion-mnist").name == "fashion_mnist"
