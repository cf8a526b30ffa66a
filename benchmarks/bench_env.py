"""Environment throughput: single env, Gymnasium's sync vector env, and the native vector env.

    python benchmarks/bench_env.py [--num-envs 64] [--seconds 10] [--memory-steps 100000] [--threads 2]

Steps per second (one step = one image and one mask) on the bundled InstaNAS-FashionMNIST-v0 with
uniform-random masks, measured in alternating rounds in this run (median of 5), and the ratio native / single.
Target: native >= 10x the single-env loop. In the same rounds, the supernet alone (no env) on the
same kind of masks at batch 1 and batch N: its batch-N / batch-1 ratio bounds what batching can give
the env, since a single-env step costs at least one batch-1 forward pass. Then a long native run
prints RSS at start and end (memory must stay flat).
"""

from __future__ import annotations

import argparse
import resource
import time

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from rich.console import Console
from rich.table import Table
from timing import interleaved_steps

import instanas_gym  # noqa: F401
from instanas_gym.utils.runtime import allocator

ENV_ID = "InstaNAS-FashionMNIST-v0"


def rss_mb() -> float:
    """Current resident set size in MB (from /proc), falling back to the peak."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-envs", type=int, default=64)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--memory-steps", type=int, default=100_000)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    n = a.num_envs

    env = gym.make(ENV_ID)
    env.reset(seed=0)

    def single_step():
        env.step(rng.integers(0, 2, (17, 5), dtype=np.int8))
        env.reset()

    sync = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})
    sync.reset(seed=0)
    native = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point")
    native.reset(seed=0)

    model = native.unwrapped.bandit.model
    images = native.unwrapped.bandit.images

    @torch.inference_mode()
    def forward(batch: int) -> None:
        idx = rng.integers(0, len(images), batch)
        model(images[idx].contiguous(), torch.from_numpy(rng.integers(0, 2, (batch, 17, 5), dtype=np.int8)).bool())

    # name -> (one call, env steps or images per call)
    calls = {
        "single env, Python loop": (single_step, 1),
        f"make_vec sync, {n} envs": (lambda: sync.step(rng.integers(0, 2, (n, 17, 5), dtype=np.int8)), n),
        f"native vector env, {n} envs": (lambda: native.step(rng.integers(0, 2, (n, 17, 5), dtype=np.int8)), n),
        "supernet alone, batch 1": (lambda: forward(1), 1),
        f"supernet alone, batch {n}": (lambda: forward(n), n),
    }
    results = interleaved_steps(calls, a.seconds)  # alternating rounds (median)
    base = results["single env, Python loop"]
    table = Table(title=f"{ENV_ID}, random masks, {a.threads} threads, allocator {allocator()}")
    table.add_column("environment (or the supernet alone)")
    table.add_column("steps/s", justify="right")
    table.add_column("vs single", justify="right")
    for name, value in results.items():
        table.add_row(name, f"{value:.0f}", f"{value / base:.1f}x")
    console = Console()
    console.print(table)
    ceiling = results[f"supernet alone, batch {n}"] / results["supernet alone, batch 1"]
    console.print(f"native / single: {results[f'native vector env, {n} envs'] / base:.1f}x; the supernet's own "
                  f"batch-{n} / batch-1 speed-up, the ceiling for it: {ceiling:.1f}x")

    start_rss = rss_mb()
    steps = 0
    t = time.perf_counter()
    while steps < a.memory_steps:
        native.step(rng.integers(0, 2, (n, 17, 5), dtype=np.int8))
        steps += n
    console.print(f"memory over {steps} native steps ({time.perf_counter() - t:.0f} s): "
                  f"RSS {start_rss:.0f} MB at start, {rss_mb():.0f} MB at end")


if __name__ == "__main__":
    main()
