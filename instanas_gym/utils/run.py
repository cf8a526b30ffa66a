"""How and where a job runs: one settings object, :class:`RunConfig`, that every command nests as
``--run.*`` (seed, threads, device, precision, output folder), and the checks of those settings.

Light on purpose: the command line imports it to parse its flags, so it imports no torch; only a
device that names a GPU is checked against the machine (with torch) when the settings are made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from instanas_gym.utils.checks import DEVICE_NAMES, Precision, check_int, check_precision, check_threads

#: Largest seed accepted (numpy, torch and Python's generators all take it).
MAX_SEED = 2**32 - 1
_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def check_device(name: str, device: Any) -> str:
    """``device`` if it is one of :data:`DEVICE_NAMES`; one naming a GPU must exist on this machine
    (:func:`~instanas_gym.utils.devices.resolve_device`, which imports torch)."""
    if not isinstance(device, str):
        raise TypeError(f"{name} must be a string, one of {DEVICE_NAMES}, got {device!r}")
    if not _DEVICE.fullmatch(device):
        raise ValueError(f"{name} must be {DEVICE_NAMES}, got {device!r}")
    if device.startswith("cuda"):
        from instanas_gym.utils.devices import resolve_device

        resolve_device(device, name)
    return device


def check_seed(name: str, value: Any) -> int:
    """``value`` as a seed in [0, 2**32 - 1]."""
    seed = check_int(name, value, minimum=-(2**63))
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{name} must be an integer in [0, {MAX_SEED}], got {seed}")
    return seed


@dataclass(frozen=True)
class RunConfig:
    """How and where a job runs."""

    seed: int = 0
    """Seed of every random draw, from 0 to 2**32 - 1."""
    threads: int = 2
    """Torch threads, at most the CPU cores this process may use."""
    device: str = "auto"
    """Where the networks run: "auto" (a CUDA GPU if there is one), "cpu", "cuda" or "cuda:N"."""
    precision: Precision = "fp32"
    """Arithmetic of the supernet's forward passes: "fp32", or "bf16" (bfloat16 autocast)."""
    channels_last: bool = True
    """Train the supernet in the channels_last memory format (about 1.7 times faster on CPUs)."""
    out: str | None = None
    """Output folder of the command."""

    def __post_init__(self) -> None:
        check_seed("run.seed", self.seed)
        check_threads("run.threads", self.threads)
        check_device("run.device", self.device)
        check_precision(self.precision, "run.precision")
        if self.out is not None and not isinstance(self.out, str):
            raise TypeError(f"run.out must be a folder path or None, got {self.out!r}")
        if not isinstance(self.channels_last, bool):
            raise TypeError(f"run.channels_last must be True or False, got {self.channels_last!r}")


def flat_settings(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings (``dataclasses.asdict`` of a config) as one level of dotted names:
    ``{"run": {"seed": 0}}`` -> ``{"run.seed": 0}``."""
    out: dict[str, Any] = {}
    for k, v in settings.items():
        if isinstance(v, dict) and v and all(isinstance(key, str) for key in v):
            out |= flat_settings(v, f"{prefix}{k}.")
        else:
            out[prefix + k] = v
    return out
