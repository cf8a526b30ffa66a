"""Speed of the supernet trainer's sandwich rule: in-place distillation against a fixed teacher, and
one process against two (``torchrun --nproc-per-node 2``, gloo), each process one thread.

    python benchmarks/bench_distill_speed.py --teacher runs/teacher_mbv2/last.pt [--init-from PATH] [--steps 20]

Runs ``instanas-gym train-supernet --mask-sampling sandwich`` itself (``train_supernet`` with an
``on_step`` clock) for ``--steps`` optimizer steps of ``--batch-size`` images per process, as
separate jobs, one after the other: in place on one process, with the teacher on one process, with
the teacher on two processes. For each: training img/s over the steps after the first
``--warmup`` (all processes' images; the median step), CPU seconds per step and process (what a
shared machine cannot take away: wall over CPU time > 1 means the process waited for a core or for
the other rank), and the hours an epoch of the 60,000 training images would take. The ratios of
the img/s are the speed-ups. ``--probe-images N`` also times the per-epoch probe scoring
(``train-supernet --probe-images N``) once, on one thread (two processes share it). The 1-minute load average before and
after says how busy the machine was.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TRAIN_IMAGES = 60_000


def worker(a: argparse.Namespace) -> None:
    """One training job (a torchrun rank or a lone process): per-step wall and CPU clocks to ``--timings``."""
    import torch

    from instanas_gym.space.data import DataConfig, SubsetConfig
    from instanas_gym.training.config import TrainConfig
    from instanas_gym.training.trainer import train_supernet
    from instanas_gym.utils.run import RunConfig

    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    torch.set_num_threads(1)
    clock: list[tuple[float, float]] = []
    cfg = TrainConfig(data=DataConfig(a.data_root), run=RunConfig(threads=1, out=a.out, seed=0), width_mult=0.25,
                      epochs=1, batch_size=a.batch_size, subset=SubsetConfig(a.steps * a.batch_size * world, 256),
                      mask_sampling="sandwich", sandwich_random=2, teacher=a.teacher, init_from=a.init_from,
                      checkpoint_every=10**6)
    train_supernet(cfg, on_step=lambda _: clock.append((time.perf_counter(), time.process_time())))
    Path(f"{a.timings}.rank{rank}").write_text(json.dumps({"world": world, "clock": clock}))


def run_job(name: str, procs: int, teacher: str | None, a: argparse.Namespace, folder: Path) -> dict:
    """Launch one job and read its clocks: img/s, CPU s per step and process, wall over CPU."""
    timings = folder / name.replace(" ", "_")
    launcher = [sys.executable] if procs == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    "--nproc-per-node", str(procs)]
    args = [*launcher, __file__, "--worker", "--timings", str(timings), "--out", str(folder / f"out_{timings.name}"),
            "--steps", str(a.steps), "--batch-size", str(a.batch_size)]
    args += [f for k, v in (("--teacher", teacher), ("--init-from", a.init_from), ("--data-root", a.data_root))
             if v for f in (k, v)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    walls, cpus = [], []
    for rank in range(procs):
        clock = np.array(json.loads(Path(f"{timings}.rank{rank}").read_text())["clock"])[a.warmup:]
        walls.append(np.diff(clock[:, 0]))
        cpus.append(np.diff(clock[:, 1]))
    wall, cpu = float(np.median(walls[0])), float(np.median(np.concatenate(cpus)))
    img_s = procs * a.batch_size / wall
    return {"job": name, "processes": procs, "img_s": img_s, "wall_s_per_step": wall, "cpu_s_per_step": cpu,
            "wall_over_cpu": wall / cpu, "epoch_h": TRAIN_IMAGES / img_s / 3600}


def probe_seconds(n: int, a: argparse.Namespace) -> float:
    """Seconds of one per-epoch probe scoring on ``n`` test images (bundled supernet, one thread)."""
    import torch

    from instanas_gym.latency.table import LatencyTable
    from instanas_gym.model.checkpoint import load_supernet
    from instanas_gym.space.data import ImageSet, load_split
    from instanas_gym.training.evaluation import probe_accuracies
    from instanas_gym.utils.paths import BUNDLED_SUPERNET, default_latency_table

    torch.set_num_threads(1)
    model, _ = load_supernet(a.init_from or BUNDLED_SUPERNET)
    test = load_split("fashion_mnist", "test", a.data_root)
    test = ImageSet(test.images[:n], test.labels[:n], test.spec, "test", test.source)
    table = LatencyTable.load(default_latency_table("fashion_mnist", "torch"), model.space)
    start = time.perf_counter()
    probe_accuracies(model, test, table)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default=None, help="the teacher's checkpoint (required)")
    p.add_argument("--init-from", default=None, help="start every job from this checkpoint's weights")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per job (per process)")
    p.add_argument("--warmup", type=int, default=3, help="first steps left out of the rates")
    p.add_argument("--batch-size", type=int, default=128, help="images per step and process")
    p.add_argument("--probe-images", type=int, default=0, help="also time the per-epoch probe scoring (0: no)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--timings", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a)
        return
    if not a.teacher:
        p.error("--teacher (a checkpoint) is required")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_job(name, procs, teacher, a, Path(tmp)) for name, procs, teacher in
                (("in place, 1 process", 1, None), ("teacher, 1 process", 1, a.teacher),
                 ("teacher, 2 processes", 2, a.teacher))]
    probes = probe_seconds(a.probe_images, a) if a.probe_images else None
    print(f"sandwich rule (all ops, smallest, 2 random), width 0.25, batch {a.batch_size} per process, 1 thread "
          f"each, {a.steps} steps per job (first {a.warmup} left out); load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")
    print(f"{'job':<24}{'img/s':>8}{'wall s/step':>13}{'CPU s/step':>12}{'wall/CPU':>10}{'epoch h':>9}")
    for r in rows:
        print(f"{r['job']:<24}{r['img_s']:>8.1f}{r['wall_s_per_step']:>13.2f}{r['cpu_s_per_step']:>12.2f}"
              f"{r['wall_over_cpu']:>10.2f}{r['epoch_h']:>9.2f}")
    inplace, one, two = (r["img_s"] for r in rows)
    print(f"teacher over in place, 1 process: {one / inplace:.2f}x; 2 processes over 1: {two / one:.2f}x "
          f"(CPU s per step and process: {rows[2]['cpu_s_per_step'] / rows[1]['cpu_s_per_step']:.2f}x)")
    if probes is not None:
        print(f"probe scoring after each epoch, {a.probe_images} test images, 1 thread: {probes:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "probe_s": probes, "load_before": load_before,
                                            "args": vars(a)}, indent=1))


if __name__ == "__main__":
    main()
