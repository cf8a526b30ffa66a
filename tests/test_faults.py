"""Fault injection: each long-running job is killed with SIGKILL at a random point (nothing gets to
save), resumed with the same command, and compared with an uninterrupted run: bit-exact.

The REINFORCE demo keeps no checkpoint (a run is minutes; a killed one starts again), and the
latency-table build is not resumable either (it is a measurement: a killed build leaves no file,
and the previous table, if any, intact)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from instanas_gym.cli import main
from instanas_gym.model.checkpoint import load_checkpoint
from instanas_gym.utils.files import load_torch

REPO = Path(__file__).resolve().parents[1]
KILL_SEED = int(os.environ.get("INSTANAS_KILL_SEED", random.SystemRandom().randrange(10**6)))


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "instanas_gym.cli", *args], capture_output=True, text=True,
                          timeout=600, env=env)


def _kill_midway(args: list[str], watch: Path, env: dict[str, str], rng: random.Random) -> float:
    """Start the job, wait for its first checkpoint, SIGKILL it a random 0-2 s later; returns the delay."""
    proc = subprocess.Popen([sys.executable, "-m", "instanas_gym.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300
    while not watch.exists():
        assert proc.poll() is None, "the job ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    delay = rng.uniform(0, 2)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return delay


def _env(tmp_path: Path) -> dict[str, str]:
    """The jobs' environment: this checkout's package, one thread, a cache of their own."""
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "INSTANAS_CACHE": str(tmp_path / "cache"),
            "COLUMNS": "100"}


def _same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _full_and_killed(command: list[str], checkpoint: str, tmp_path: Path, rng: random.Random,
                     monkeypatch: pytest.MonkeyPatch) -> str:
    """Run ``command`` into tmp_path/full uninterrupted (in this process: the same code on one thread,
    without a second start-up), and into tmp_path/cut in a process of its own, killed once and resumed;
    returns what to say when they differ (the kill seed and delay)."""
    env = _env(tmp_path)
    monkeypatch.setenv("INSTANAS_CACHE", env["INSTANAS_CACHE"])
    main([*command, "--run.out", str(tmp_path / "full")])
    delay = _kill_midway([*command, "--run.out", str(tmp_path / "cut")], tmp_path / "cut" / checkpoint, env, rng)
    resumed = _run([*command, "--run.out", str(tmp_path / "cut"), "--resume"], env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not list((tmp_path / "cut").glob("*.tmp"))
    return f"kill seed {KILL_SEED}, killed {delay:.2f} s after the first checkpoint"


def test_supernet_training_survives_sigkill(fmnist_root, tmp_path, monkeypatch):
    command = ["train-supernet", "--data.root", str(fmnist_root), "--width-mult", "0.1", "--epochs", "3",
               "--batch-size", "16", "--subset.train", "128", "--subset.eval", "32", "--run.threads", "1",
               "--checkpoint-every", "3"]
    why = _full_and_killed(command, "last.pt", tmp_path, random.Random(KILL_SEED), monkeypatch)
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "cut" / "last.pt")
    _same_tensors(a["model"], b["model"])
    assert a["metrics"] == b["metrics"], why


def test_search_survives_sigkill(tiny_assets, tmp_path, monkeypatch):
    command = ["search", "--env.split", "train", "--env.data.root", tiny_assets["data_root"], "--env.supernet",
               tiny_assets["supernet"], "--env.latency-table", tiny_assets["latency_table"], "--epochs", "2",
               "--controller.widths", "4", "8", "--controller-images", "96", "--batch-size", "16",
               "--supernet-images", "96", "--supernet-batch-size", "32", "--finetune-images", "96", "--run.threads", "1",
               "--checkpoint-every", "2", "--log-every", "1"]
    why = _full_and_killed(command, "search.pt", tmp_path, random.Random(KILL_SEED + 1), monkeypatch)
    a = load_torch(tmp_path / "full" / "search.pt", "search", "instanas-search-v1")
    b = load_torch(tmp_path / "cut" / "search.pt", "search", "instanas-search-v1")
    _same_tensors(a["supernet"]["model"], b["supernet"]["model"])
    _same_tensors(a["controller"]["state_dict"], b["controller"]["state_dict"])
    drop_wall = lambda h: {k: [{c: v for c, v in r.items() if c != "wall_s"} for r in rows] for k, rows in h.items()}  # noqa: E731
    assert drop_wall(a["history"]) == drop_wall(b["history"]), why


def test_a_killed_latency_table_build_leaves_the_old_table(tiny_assets, tmp_path):
    out = tmp_path / "latency_onnxruntime.json"
    out.write_text("previous table")
    env = _env(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "instanas_gym.cli", "build-latency-table", "--env.supernet",
                             tiny_assets["supernet"], "--run.out", str(tmp_path), "--table.passes", "100000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    time.sleep(random.Random(KILL_SEED + 2).uniform(3, 6))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert out.read_text() == "previous table"
