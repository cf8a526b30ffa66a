"""Process-group plumbing for training under ``torchrun``: one process per device, gradients
averaged by DistributedDataParallel, every rank's RNG state kept in rank 0's checkpoint.

The process group talks NCCL between GPUs and gloo between CPU processes; each rank trains on its
own device (``cuda:$LOCAL_RANK``, see :func:`instanas_gym.utils.devices.resolve_device`). Several machines:
``torchrun --nnodes N --node-rank R --nproc-per-node GPUS --rdzv-backend c10d --rdzv-endpoint HOST:29500
examples/train_supernet.py ...`` on each.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from instanas_gym.utils.devices import CPU


def backend(device: torch.device) -> str:
    """The process-group backend for ranks on ``device``: "nccl" on GPUs, "gloo" on CPUs."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_distributed(device: torch.device = CPU) -> tuple[int, int]:
    """(rank, world size); initialises the process group (:func:`backend` of ``device``) when
    launched by torchrun with WORLD_SIZE > 1, and does nothing otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend(device), **({"device_id": device} if device.type == "cuda" else {}))
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def gather(obj: Any, world: int) -> list[Any]:
    """Every rank's ``obj``, in rank order (just ``[obj]`` on one process)."""
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def wrap(model: torch.nn.Module, world: int, device: torch.device = CPU) -> torch.nn.Module:
    """The model as trained: DDP over several processes (ops chosen by no image of a batch get no
    gradient, so DDP must expect unused parameters; on a GPU each rank its own), the model itself on one."""
    if world == 1:
        return model
    ids = [device] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()
