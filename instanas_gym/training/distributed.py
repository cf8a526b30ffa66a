"""Process-group plumbing for training under ``torchrun``: one process per device, gradients
averaged by DistributedDataParallel (or by :func:`average_gradients`, for the sandwich rule's several
networks per step), every rank's RNG state kept in rank 0's checkpoint.

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


def broadcast_module(model: torch.nn.Module, world: int, parameters: bool = True) -> None:
    """Give every rank rank 0's parameters (unless ``parameters`` is False) and buffers, as DDP does
    when it wraps a model (and before each forward, for the buffers: BatchNorm's running statistics)."""
    if world > 1:
        for tensor in [*(model.parameters() if parameters else ()), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)


def average_gradients(model: torch.nn.Module, world: int) -> None:
    """Average ``model``'s gradients over the ranks in one all-reduce, in place, for steps that run
    several networks of different masks per rank before one optimizer step (the sandwich rule), which
    DDP's per-backward hooks do not fit. A parameter no rank gave a gradient keeps ``grad=None`` (the
    optimizer leaves it alone, as on one process); one that some rank did not use counts zero there."""
    if world == 1:
        return
    params = list(model.parameters())
    flat = torch.cat([torch.zeros(p.numel(), device=p.device) if p.grad is None else p.grad.reshape(-1).float()
                      for p in params] + [torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)])
    dist.all_reduce(flat)
    used, offset = flat[-len(params):], 0
    for i, p in enumerate(params):
        n = p.numel()
        p.grad = (flat[offset : offset + n].view_as(p) / world).to(p.dtype) if used[i] > 0 else None
        offset += n


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()
