"""Training-step img/s of the supernet under DistributedDataParallel, one thread per process.

The data-parallel way to use several cores for training, as ``examples/train_supernet.py`` does under
``torchrun``: each process takes a contiguous share of the batch, and DDP (gloo) all-reduces the
gradients in backward. ``find_unused_parameters=True`` as in ``instanas_gym.training``, since ops no
image of a share chose get no gradient.
"""

from __future__ import annotations

import os
import socket
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from instanas_gym.model.supernet import Supernet
from instanas_gym.utils.runtime import tune_allocator

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # images, masks (B, 17, 5) bool, labels


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, model: Supernet, batches: dict[str, Batch], modes: tuple[str, ...],
          seconds: float, rounds: int, results: mp.SimpleQueue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    tune_allocator()
    ddp = torch.nn.parallel.DistributedDataParallel(model.train(), find_unused_parameters=True)
    rates: dict[str, dict[str, float]] = {}
    for name, (x, masks, y) in batches.items():
        bounds = np.linspace(0, x.shape[0], world + 1).round().astype(int)
        share = slice(bounds[rank], bounds[rank + 1])
        xs, ms, ys = x[share], masks[share], y[share]

        def step(mode: str) -> None:
            model.mode = mode
            loss = F.cross_entropy(ddp(xs, ms), ys)
            model.zero_grad(set_to_none=True)
            loss.backward()

        def timed(mode: str, steps: int) -> float:
            """Seconds for ``steps`` steps of every rank (barriers on both sides)."""
            dist.barrier()
            start = time.perf_counter()
            for _ in range(steps):
                step(mode)
            dist.barrier()
            return time.perf_counter() - start

        steps = {}
        for mode in modes:  # warm up, then size a round to about seconds / rounds (same on every rank)
            step(mode)
            per_step = torch.tensor([timed(mode, 2) / 2])
            dist.all_reduce(per_step, op=dist.ReduceOp.MAX)
            steps[mode] = max(1, round(seconds / rounds / per_step.item()))
        samples: dict[str, list[float]] = {mode: [] for mode in modes}
        for _ in range(rounds):
            for mode in modes:
                samples[mode].append(steps[mode] * x.shape[0] / timed(mode, steps[mode]))
        rates[name] = {mode: float(np.median(v)) for mode, v in samples.items()}
    if rank == 0:
        results.put(rates)
    dist.destroy_process_group()


def ddp_train_rates(
    model: Supernet, batches: dict[str, Batch], workers: int, seconds: float,
    modes: tuple[str, ...] = ("masked", "dynamic"), rounds: int = 5,
) -> dict[str, dict[str, float]]:
    """img/s (whole batch over all processes) of a training step (forward, backward; no optimizer step) per
    batch name and execution mode, median of ``rounds`` alternating rounds of about ``seconds / rounds`` each."""
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    mp.spawn(_rank, args=(workers, _free_port(), model, batches, modes, seconds, rounds, results), nprocs=workers)
    return results.get()
