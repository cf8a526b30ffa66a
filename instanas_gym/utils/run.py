"""How and where a job runs: one settings object, :class:`RunConfig`, that every command nests as
``--run.*`` (seed, threads, device, precision, output folder), and the checks of those settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from instanas_gym.utils.checks import available_cores, check_int, check_threads
from instanas_gym.utils.devices import Precision, check_precision, resolve_device

#: Largest seed accepted (numpy, torch and Python's generators all take it).
MAX_SEED = 2**32 - 1

__all__ = ["MAX_SEED", "RunConfig", "available_cores", "check_seed", "check_threads", "flat_settings"]


def check_seed(name: str, value: Any) -> int:
    """``value`` as a seed in [0, 2**32 - 1]."""
    seed = check_int(name, value, minimum=0)
    if seed > MAX_SEED:
        raise ValueError(f"{name} must be in [0, {MAX_SEED}], got {seed}")
    return seed


@dataclass(frozen=True)
class RunConfig:
    """How and where a job runs."""

    seed: int = 0
    """Seed of every random draw, in [0, 2**32 - 1]."""
    threads: int = 2
    """Torch intra-op threads (at most the machine's cores)."""
    device: str = "auto"
    """"auto" (CUDA when present, else the CPU), "cpu", "cuda" or "cuda:N"."""
    precision: Precision = "fp32"
    """"fp32", or "bf16": bfloat16 autocast of the supernet's forward passes."""
    out: str | None = None
    """Output folder (None: the command's own, said in its help)."""

    def __post_init__(self) -> None:
        check_seed("run.seed", self.seed)
        check_threads("run.threads", self.threads)
        resolve_device(self.device, "run.device")
        check_precision(self.precision, "run.precision")
        if self.out is not None and not isinstance(self.out, str):
            raise TypeError(f"run.out must be a folder path or None, got {self.out!r}")


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
