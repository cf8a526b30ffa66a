"""What a latency table describes: the machine, the software and the search space it was measured on."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instanas_gym.space.search_space import SEARCH_SPACE_VERSION, SearchSpace
from instanas_gym.utils.runtime import allocator

if TYPE_CHECKING:
    import torch


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def torch_version() -> str:
    import torch  # here, not at the top: loading a latency table needs no torch

    return torch.__version__


def device_name(device: torch.device) -> str:
    """The processor a table of ``device`` describes: the GPU's name on CUDA, else the CPU's model."""
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def here_gpu_name() -> str:
    """This machine's first CUDA GPU's name, or "no CUDA GPU"."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU"


def device_meta(space: SearchSpace, threads: int, device: torch.device | None = None) -> dict[str, Any]:
    """The metadata a table built here, now, at batch 1 with ``threads`` threads on ``device`` (None:
    the CPU) carries."""
    import torch

    device = torch.device("cpu") if device is None else device
    return {
        "device": device.type,
        "device_name": device_name(device),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_version": torch_version(),
        "threads": threads,
        "allocator": allocator(),
        "batch_size": 1,
        **{k: v for k, v in space.to_dict().items() if k != "version"},
        "search_space_version": SEARCH_SPACE_VERSION,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
