"""Which device a job runs on, and how: ``device`` ("auto", "cpu", "cuda", "cuda:1"...), ``precision``
("fp32" or "bf16": bfloat16 autocast of the forward passes) and the loading helpers that go with them.

``"auto"`` picks CUDA when torch sees a GPU, else the CPU; under ``torchrun`` it picks the GPU of
the process's ``LOCAL_RANK``. An explicit CUDA device on a machine without one is a ``ValueError``
that names the argument, not a crash deep inside the first ``.to()``.
"""

from __future__ import annotations

import copy
import os
from contextlib import AbstractContextManager, nullcontext

import torch

from instanas_gym.utils.checks import DEVICE_NAMES, Precision, check_precision

CPU = torch.device("cpu")


def resolve_device(device: str | torch.device = "auto", name: str = "device") -> torch.device:
    """``device`` as a ``torch.device``: "auto" is ``cuda:$LOCAL_RANK`` when a GPU is visible, else "cpu";
    a bare "cuda" under torchrun is the process's own GPU. ``name`` is the argument named in errors."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"{name} must be a string such as {DEVICE_NAMES}, got {device!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{name} must be {DEVICE_NAMES}, got {device!r} ({err})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}={device!r} but torch sees no CUDA GPU on this machine; use {name}='cpu' or 'auto'")
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name}={device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif dev.type != "cpu":
        raise ValueError(f"{name} must be {DEVICE_NAMES}, got {device!r}")
    return dev


def autocast(device: torch.device, precision: Precision) -> AbstractContextManager:
    """bfloat16 autocast on ``device`` for ``precision="bf16"`` (weights and the optimizer stay fp32),
    nothing for "fp32"."""
    if check_precision(precision) == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU batch on ``device``: on a GPU through page-locked (pinned) memory, an asynchronous copy,
    as ``DataLoader(pin_memory=True)`` does; on the CPU the tensor itself."""
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def cpu_copy(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` itself when it is on the CPU, else a copy there: the clock paths time the CPU
    runtimes (eager PyTorch, ONNX Runtime) that the latency tables describe."""
    on_cpu = all(p.device.type == "cpu" for p in module.parameters())
    return module if on_cpu else copy.deepcopy(module).cpu()
