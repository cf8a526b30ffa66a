"""Process-group plumbing for training under ``torchrun``: one process per device, gradients
averaged by DistributedDataParallel, every rank's RNG state kept in rank 0's checkpoint."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def init_distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group (gloo) when launched by torchrun with
    WORLD_SIZE > 1, and does nothing otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def gather(obj: Any, world: int) -> list[Any]:
    """Every rank's ``obj``, in rank order (just ``[obj]`` on one process)."""
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def wrap(model: torch.nn.Module, world: int) -> torch.nn.Module:
    """The model as trained: DDP over several processes (ops chosen by no image of a batch get no
    gradient, so DDP must expect unused parameters), the model itself on one."""
    if world == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()
