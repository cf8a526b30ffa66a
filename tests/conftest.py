"""Shared fixtures: synthetic data in the real layouts, a tiny supernet and its latency table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from instanas_gym.latency.measure import build_table
from instanas_gym.model.checkpoint import load_supernet, supernet_state
from instanas_gym.model.supernet import Supernet
from instanas_gym.space.data import DataConfig, get_spec
from instanas_gym.space.search_space import SearchSpace
from instanas_gym.training.config import TrainConfig
from instanas_gym.training.trainer import train_supernet
from instanas_gym.utils.files import atomic_save
from instanas_gym.utils.run import RunConfig
from tests.fixtures import write_fashion_mnist

TINY_WIDTH = 0.1
#: Cases tried per generated-input test (tests/test_fuzz.py), printed at the end of the run.
FUZZ_COUNTS: dict[str, int] = {}


def pytest_terminal_summary(terminalreporter) -> None:
    if FUZZ_COUNTS:
        detail = ", ".join(f"{k} {v}" for k, v in FUZZ_COUNTS.items())
        terminalreporter.write_line(f"generated bad-input cases tried: {sum(FUZZ_COUNTS.values())} ({detail})")

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test sees an empty cache and data root of its own: nothing of the user's leaks in."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("INSTANAS_CACHE", str(cache))
    monkeypatch.delenv("INSTANAS_DATA", raising=False)
    return cache


@pytest.fixture(scope="session")
def fmnist_root(tmp_path_factory) -> Path:
    """A synthetic Fashion-MNIST in torchvision's layout (and Debian's, under ``debian/``)."""
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=512, n_test=256)


def tiny_supernet(seed: int = 0) -> Supernet:
    torch.manual_seed(seed)
    spec = get_spec("fashion_mnist")
    return Supernet(SearchSpace(TINY_WIDTH, 28, 1, 10), spec.mean, spec.std).eval()


def trained_like(model: Supernet) -> Supernet:
    """Give BatchNorm non-trivial running statistics so eval-mode comparisons mean something."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
    model.classifier.weight.data.normal_(0, 0.5, generator=g)
    return model.eval()


def train_tiny_assets(
    out: Path, fmnist_root: Path, epochs: int, train_subset: int, eval_subset: int, passes: int, warmup: int
) -> tuple[str, str]:
    """A width-0.1 supernet trained briefly on the synthetic Fashion-MNIST (batch 32, lr 0.05) and a
    latency table built for it, in ``out``; returns (checkpoint path, table path)."""
    train_supernet(TrainConfig(data=DataConfig(str(fmnist_root)), run=RunConfig(threads=1, out=str(out)), width_mult=0.1,
                               epochs=epochs, batch_size=32, train_subset=train_subset, eval_subset=eval_subset,
                               lr=0.05))
    model, _ = load_supernet(out / "last.pt")
    build_table(model, passes=passes, warmup=warmup).save(out / "latency.json")
    return str(out / "last.pt"), str(out / "latency.json")


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory, fmnist_root) -> dict:
    """A tiny (width 0.1) untrained Fashion-MNIST supernet checkpoint and a quickly built latency table."""
    folder = tmp_path_factory.mktemp("tiny")
    model = tiny_supernet()
    atomic_save(supernet_state(model, "fashion_mnist"), folder / "last.pt")
    table = build_table(model, passes=120, warmup=10)
    table.save(folder / "latency.json")
    return {
        "supernet": str(folder / "last.pt"),
        "latency_table": str(folder / "latency.json"),
        "data_root": str(fmnist_root),
        "dataset": "fashion_mnist",
        "split": "train",
    }


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
