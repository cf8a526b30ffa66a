"""Shared fixtures: synthetic data in the real layouts, tiny supernets (untrained, and trained once per
session) and their latency tables, computed from MACs so that nothing depends on the clock."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from instanas_gym.envs.config import EnvConfig
from instanas_gym.model.checkpoint import load_checkpoint, load_supernet, supernet_state
from instanas_gym.model.supernet import Supernet
from instanas_gym.space.data import DataConfig, get_spec
from instanas_gym.space.search_space import SearchSpace
from instanas_gym.utils.files import atomic_save
from tests.fixtures import macs_table, write_fashion_mnist
from tests.make_assets import TRAINED

TINY_WIDTH = 0.1
#: Cases tried by the generated-input tests (tests/test_fuzz*.py) of this process, by kind.
FUZZ_COUNTS: dict[str, int] = {}
#: The same over every process of the run (pytest-xdist's workers report theirs), printed at the end.
_FUZZ_TOTALS: dict[str, int] = {}


@pytest.fixture(autouse=True)
def _report_fuzz_cases(request):
    """A test's generated cases, as a property of its report (so they reach the controlling process)."""
    before = dict(FUZZ_COUNTS)
    yield
    new = {k: v - before.get(k, 0) for k, v in FUZZ_COUNTS.items() if v != before.get(k, 0)}
    if new:
        request.node.user_properties.append(("fuzz_cases", new))


def pytest_runtest_logreport(report) -> None:
    if report.when == "teardown":
        for name, cases in report.user_properties:
            if name == "fuzz_cases":
                for kind, n in cases.items():
                    _FUZZ_TOTALS[kind] = _FUZZ_TOTALS.get(kind, 0) + n


def pytest_terminal_summary(terminalreporter) -> None:
    if _FUZZ_TOTALS:
        detail = ", ".join(f"{k} {v}" for k, v in sorted(_FUZZ_TOTALS.items()))
        terminalreporter.write_line(f"generated bad-input cases tried: {sum(_FUZZ_TOTALS.values())} ({detail})")

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


def assets(folder: Path, fmnist_root: Path) -> dict[str, Any]:
    """The environment keyword arguments of the supernet ``folder/last.pt`` and its table ``folder/latency.json``
    on the synthetic Fashion-MNIST's training split."""
    return {"supernet": str(folder / "last.pt"), "latency_table": str(folder / "latency.json"),
            "data_root": str(fmnist_root), "dataset": "fashion_mnist", "split": "train"}


def env_config(kwargs: dict[str, Any], **extra: Any) -> EnvConfig:
    """The :class:`EnvConfig` of environment keyword arguments such as :func:`tiny_assets`'s."""
    return EnvConfig(data=DataConfig(kwargs["data_root"]), supernet=kwargs["supernet"],
                     latency_table=kwargs["latency_table"], split=kwargs.get("split", "train"), **extra)


def own_copy(kwargs: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``kwargs`` with its supernet copied into ``folder``: the outcomes stored beside it are this test's own."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(kwargs["supernet"], folder / "last.pt")
    return kwargs | {"supernet": str(folder / "last.pt")}


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory, fmnist_root) -> dict[str, Any]:
    """A tiny (width 0.1) untrained Fashion-MNIST supernet checkpoint and its MACs latency table."""
    folder = tmp_path_factory.mktemp("tiny")
    model = tiny_supernet()
    atomic_save(supernet_state(model, "fashion_mnist"), folder / "last.pt")
    macs_table(model.space).save(folder / "latency.json")
    return assets(folder, fmnist_root)


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory, fmnist_root) -> dict[str, Any]:
    """A width-0.1 supernet trained on the synthetic Fashion-MNIST (stored: ``tests/make_assets.py``
    says how it was trained; all ops clearly beat the fastest mask) and its MACs latency table."""
    folder = tmp_path_factory.mktemp("trained")
    ckpt = load_checkpoint(TRAINED)
    ckpt["model"] = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    atomic_save(ckpt, folder / "last.pt")
    model, _ = load_supernet(folder / "last.pt")
    macs_table(model.space).save(folder / "latency.json")
    return assets(folder, fmnist_root)


@pytest.fixture
def trained_assets(trained_checkpoint, tmp_path) -> dict[str, Any]:
    """:func:`trained_checkpoint` copied into the test's own folder: the outcomes stored beside it
    (lookup mode, judging) are the test's own, so no test's cost or result depends on another's."""
    return own_copy(trained_checkpoint, tmp_path / "trained")


@pytest.fixture
def trained_env(trained_assets) -> EnvConfig:
    """The environment settings of :func:`trained_assets` (training split)."""
    return env_config(trained_assets)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
