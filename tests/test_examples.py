"""Every script in ``examples/`` runs, with short settings, on the tiny test assets (the bundled
supernet's data set would take minutes), and writes what its docstring says it writes."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from instanas_gym.agents.policy import load_policy
from instanas_gym.judge import cascade as judge_cascade
from instanas_gym.latency import onnx as onnx_latency
from instanas_gym.latency.table import LatencyTable
from instanas_gym.model.checkpoint import load_checkpoint
from instanas_gym.space.family import ArchitectureFamily, save_family
from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask, single_op_mask
from instanas_gym.utils.paths import cache_dir
from tests.fixtures import macs_runtime_ms

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY_CONTROLLER = ["--controller.widths", "4", "8"]


def run_example(name: str, *args: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``examples/<name>`` as ``python examples/<name> ARGS`` would, in this process."""
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), *args])
    monkeypatch.setenv("COLUMNS", "160")
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")


def env_flags(assets: dict) -> list[str]:
    return ["--env.data.root", assets["data_root"], "--env.supernet", assets["supernet"], "--env.latency-table",
            assets["latency_table"], "--env.split", "train"]


def test_every_example_is_tested():
    tested = {"train_supernet.py", "build_latency_table.py", "prepare.py", "search.py", "evaluate_search.py",
              "train_reinforce.py", "train_reinforce_masks.py", "compare_agents.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_train_supernet(fmnist_root, tmp_path, monkeypatch, capsys):
    run_example("train_supernet.py", "--data.root", str(fmnist_root), "--width-mult", "0.25", "--epochs", "1",
                "--batch-size", "16", "--subset.train", "32", "--subset.eval", "16", "--run.threads", "1",
                "--run.out", str(tmp_path), monkeypatch=monkeypatch)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert f"the environment on {tmp_path / 'last.pt'}: MobileNetV2 path" in capsys.readouterr().out


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_build_latency_table(tiny_assets, tmp_path, monkeypatch, backend):
    monkeypatch.setattr(onnx_latency, "measure_onnx_masks", macs_runtime_ms)  # ONNX Runtime's clock, at once
    run_example("build_latency_table.py", "--supernet", tiny_assets["supernet"], "--backend", backend,
                "--table.passes", "120" if backend == "onnxruntime" else "20", "--table.repeats", "1",
                "--table.validate-masks", "3", "--run.out", str(tmp_path), monkeypatch=monkeypatch)
    name = "latency.json" if backend == "torch" else "latency_onnxruntime.json"
    assert LatencyTable.load(tmp_path / name).meta.get("runtime", "torch") == backend
    assert (tmp_path / name).with_suffix(".png").is_file()


def test_prepare(fmnist_root, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_latency, "measure_onnx_masks", macs_runtime_ms)  # ONNX Runtime's clock, at once
    run_example("prepare.py", "fashion-mnist", "--data.root", str(fmnist_root), "--width-mult", "0.1", "--epochs", "1",
                "--frozen-epochs", "1", "--batch-size", "16", "--subset.train", "32", "--subset.eval", "16",
                "--frozen-bn-batches", "2", "--table.passes", "120", "--table.repeats", "1", "--table.validate-masks", "3",
                "--run.threads", "1", "--run.out", str(tmp_path / "work"), monkeypatch=monkeypatch)
    installed = cache_dir() / "fashion_mnist"
    assert (installed / "last.pt").is_file() and (installed / "latency_onnxruntime.json").is_file()


def test_search_then_evaluate_search(tiny_assets, tmp_path, monkeypatch):
    out = tmp_path / "search"
    run_example("search.py", *env_flags(tiny_assets), *TINY_CONTROLLER, "--epochs", "1", "--controller-images", "16",
                "--batch-size", "16", "--supernet-images", "16", "--supernet-batch-size", "16", "--finetune-images",
                "16", "--run.threads", "1", "--run.out", str(out), monkeypatch=monkeypatch)
    assert (out / "supernet.pt").is_file() and load_policy(out / "policy.pt").view == "masks"
    run_example("evaluate_search.py", "--folders", str(out), "--judge.limit", "32", "--judge.measure", "0", "--data.root",
                tiny_assets["data_root"], "--run.threads", "1", monkeypatch=monkeypatch)
    assert "| InstaNAS (searched) |" in (out / "report.md").read_text()


@pytest.mark.parametrize("script, view", [("train_reinforce.py", "cascade"), ("train_reinforce_masks.py", "masks")])
def test_train_reinforce(trained_assets, tmp_path, monkeypatch, capsys, script, view):
    monkeypatch.setattr(judge_cascade, "POOL_SIZE", 8)  # the judged frontier's pool, small, on few images
    monkeypatch.setattr(judge_cascade, "POOL_IMAGES", 64)
    family = ArchitectureFamily(np.stack([mobilenetv2_mask(), all_ops_mask(), single_op_mask(4)]), dataset="fashion_mnist")
    save_family(tmp_path / "family.json", family)
    run_example(script, *env_flags(trained_assets), "--env.family", str(tmp_path / "family.json"), *TINY_CONTROLLER,
                "--total-steps", "64", "--batch-size", "16", "--judge.limit", "200", "--judge.measure", "4",
                "--run.threads", "1", "--run.out", str(tmp_path / "run"), monkeypatch=monkeypatch)
    assert load_policy(tmp_path / "run" / "policy.pt").view == view
    report = json.loads((tmp_path / "run" / ("cascade.json" if view == "cascade" else "instance_aware.json")).read_text())
    clock = report["clock"]  # the networks of the first 4 test images, on the clock beside the table
    assert clock["images"] == 4 and clock["clock_ms"] > 0 and clock["ratio"] == clock["clock_ms"] / clock["table_ms"]
    assert ("gain over the static frontier" if view == "cascade" else "static frontier at") in capsys.readouterr().out


def test_compare_agents(trained_assets, tmp_path, monkeypatch):
    run_example("compare_agents.py", *env_flags(trained_assets), *TINY_CONTROLLER, "--agents", "REINFORCE", "random",
                "--seeds", "0", "--total-steps", "64", "--num-envs", "16", "--judge.measure", "0", "--judge.limit", "32",
                "--run.threads", "1", "--run.out", str(tmp_path), monkeypatch=monkeypatch)
    for name in ("curves.csv", "summary.csv", "curves.png", "summary.md"):
        assert (tmp_path / name).stat().st_size > 0
