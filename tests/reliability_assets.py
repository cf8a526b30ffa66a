"""Small deterministic files for the reliability and generated-input tests: a width-0.1 supernet
checkpoint, a latency table computed from the search space's MACs (no clock involved), the bundled
Fashion-MNIST test split as the env's images, and an export folder with one architecture."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import torch

from instanas_gym.agents.controller import Controller
from instanas_gym.deploy.export import export_model
from instanas_gym.latency.machine import device_meta
from instanas_gym.latency.table import LatencyTable
from instanas_gym.model.checkpoint import supernet_state
from instanas_gym.model.supernet import Supernet
from instanas_gym.space.data import get_spec
from instanas_gym.space.search_space import SearchSpace
from instanas_gym.utils.files import atomic_save

SPACE = SearchSpace(0.1, 28, 1, 10)


def tiny_model(seed: int = 0) -> Supernet:
    """A width-0.1 Fashion-MNIST supernet with random weights (eval mode)."""
    torch.manual_seed(seed)
    spec = get_spec("fashion_mnist")
    return Supernet(SPACE, spec.mean, spec.std).eval()


def macs_table(space: SearchSpace = SPACE) -> LatencyTable:
    """A latency table whose ms are the ops' MACs / 1e6 (plus 0.01 each): the same on every machine."""
    ops_ms = space.op_macs / 1e6 + 0.01
    return LatencyTable(ops_ms, space.fixed_macs / 1e6, space.opens_stage.copy(), device_meta(space, 1))


def write_assets(folder: Path, seed: int = 0) -> dict[str, str]:
    """A checkpoint and a table in ``folder``; returns env keyword arguments that use them on the
    bundled test split."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save(supernet_state(tiny_model(seed), "fashion_mnist"), folder / "last.pt")
    macs_table().save(folder / "latency.json")
    return {"supernet": str(folder / "last.pt"), "latency_table": str(folder / "latency.json"), "split": "test"}


def write_export(folder: Path) -> Path:
    """An export folder of the tiny supernet whose controller picks one architecture (all ops) for every image."""
    torch.manual_seed(0)
    controller = Controller(1, (4,), (2,), input_size=14)  # zero head: every logit 0, every op kept
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1)).astype(np.uint8)
    export_model(folder, tiny_model(), controller, images)
    return folder


def member_data(path: Path, member: str) -> tuple[int, int]:
    """(offset, size) of the stored bytes of ``member`` (a name ending, e.g. "data/10") in a zip file."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(member))
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<2H", f.read(4))
    return info.header_offset + 30 + name_len + extra_len, info.compress_size
