"""The sandwich rule with a fixed teacher on two processes (torchrun, gloo): killed with SIGKILL at a
random point after its first checkpoint (the launcher and both workers at once: nothing gets to
save), resumed with the same command, and compared with an uninterrupted run: bit-exact."""

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

from instanas_gym.model.checkpoint import load_checkpoint, supernet_state
from instanas_gym.utils.files import atomic_save
from tests.conftest import tiny_supernet, trained_like

KILL_SEED = int(os.environ.get("INSTANAS_KILL_SEED", random.SystemRandom().randrange(10**6)))
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "instanas_gym.cli", "train-supernet"]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "INSTANAS_CACHE": str(tmp_path / "cache"), "COLUMNS": "100"}


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts each worker in a session of its own)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # the task ended meanwhile
            continue
        for child in children:
            out += [child, *_descendants(child)]
    return out


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill_after_first_checkpoint(args: list[str], watch: Path, env: dict[str, str], delay: float) -> None:
    """Start the two-process job, wait for its first checkpoint, SIGKILL the launcher and every worker
    ``delay`` s later."""
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300
    try:
        while not watch.exists():
            assert proc.poll() is None, "the job ended before its first checkpoint"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(delay)
    finally:
        victims = [proc.pid, *_descendants(proc.pid)]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
        while any(map(_alive, victims)):  # every one dead before the checkpoint is read
            time.sleep(0.01)
        assert len(victims) >= 3, f"expected the launcher and 2 workers, found {len(victims)} processes"


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="needs torch.distributed with gloo")
def test_two_process_distillation_survives_sigkill(fmnist_root, tiny_assets, tmp_path):
    atomic_save(supernet_state(trained_like(tiny_supernet(1)), "fashion_mnist"), tmp_path / "teacher.pt")
    command = [*TORCHRUN, "--data.root", str(fmnist_root), "--width-mult", "0.1", "--epochs", "2",
               "--batch-size", "16", "--subset.train", "64", "--subset.eval", "32", "--run.threads", "1",
               "--mask-sampling", "sandwich", "--sandwich-random", "1", "--teacher", str(tmp_path / "teacher.pt"),
               "--checkpoint-every", "1", "--probe-images", "16", "--probe-table", tiny_assets["latency_table"]]
    # 2 ranks x 32 images: 2 steps per epoch, 4 in all; each rank scores half the probes after each epoch
    env = _env(tmp_path)
    full = subprocess.run([*command, "--run.out", str(tmp_path / "full")], capture_output=True, text=True, check=False,
                          timeout=600, env=env)
    assert full.returncode == 0, full.stderr[-3000:]
    delay = random.Random(KILL_SEED).uniform(0, 0.3)
    _kill_after_first_checkpoint([*command, "--run.out", str(tmp_path / "cut")], tmp_path / "cut" / "last.pt", env, delay)
    why = f"kill seed {KILL_SEED}, killed {delay:.2f} s after the first checkpoint"
    killed = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert killed["epoch"] * 2 + killed["batch_in_epoch"] < 4, f"the job ended before the kill ({why})"
    resumed = subprocess.run([*command, "--run.out", str(tmp_path / "cut"), "--resume"], capture_output=True, check=False,
                             text=True, timeout=600, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "cut" / "last.pt")
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), f"{name} ({why})"
    assert a["metrics"] == b["metrics"], why
    assert len(a["rng"]["masks"]) == 2 and a["rng"]["masks"][0] != a["rng"]["masks"][1]  # each rank its own draws
    assert a["teacher"]["path"] == str(tmp_path / "teacher.pt")
    assert len(a["metrics"]["history"][-1]["probes"]) == 19  # 18 probes and the per-image masks, from both ranks


def _average_on_rank(rank: int, store: str, out: str) -> None:
    """Rank ``rank`` of 2: gradients 1 + rank on the first parameter, on the second only on rank 1,
    none on the third; average them and save what this rank holds."""
    import torch.distributed as dist

    from instanas_gym.training.distributed import average_gradients

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    params = [torch.nn.Parameter(torch.zeros(2, 3)) for _ in range(3)]
    params[0].grad = torch.full((2, 3), 1.0 + rank)
    if rank == 1:
        params[1].grad = torch.full((2, 3), 4.0)
    average_gradients(torch.nn.ParameterList(params), 2)
    torch.save([p.grad for p in params], f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_gradients_are_averaged_over_the_ranks(tmp_path):
    torch.multiprocessing.spawn(_average_on_rank, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        grads = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert torch.equal(grads[0], torch.full((2, 3), 1.5))
        assert torch.equal(grads[1], torch.full((2, 3), 2.0))  # rank 0 did not use it: counts zero there
        assert grads[2] is None  # no rank used it: left to the optimizer as on one process
