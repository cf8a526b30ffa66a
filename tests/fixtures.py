"""Small synthetic data sets written in the real on-disk layouts, so the real loaders can be tested.

Images are class-dependent (a centred square whose size and brightness encode the label, on noise),
so a model can learn them in a few steps, augmented or not.

* ``write_cifar(root, "cifar10"|"cifar100")``: ``cifar-10-batches-py/`` or ``cifar-100-python/``
  pickles as torchvision reads them. torchvision checks each file's MD5 against the real data set's;
  synthetic files cannot pass that, so loading them needs :func:`skip_cifar_checksums`, an explicit
  bypass for tests only.
* ``write_fashion_mnist(root)``: ``FashionMNIST/raw/*-ubyte`` as torchvision reads them, plus the
  gzip'd files of Debian's package layout in ``root/debian``.

And latency that does not depend on the clock: ``macs_table(space)``, a table from each op's MACs, and
``macs_runtime_ms``, the same figures standing in for ONNX Runtime's clock.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np

from instanas_gym.latency.machine import device_meta
from instanas_gym.latency.table import LatencyTable
from instanas_gym.model.supernet import Supernet
from instanas_gym.space.data import write_idx
from instanas_gym.space.search_space import SearchSpace


def synthetic_images(rng: np.random.Generator, n: int, size: int, channels: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images (n, size, size, channels) with labels: noise plus a centred bright square
    whose side (label % 10) and brightness (label // 10) encode the label, so that the training
    augmentation (crop, flip) keeps the label."""
    labels = rng.integers(0, num_classes, n)
    images = rng.integers(0, 60, (n, size, size, channels)).astype(np.uint8)
    for i, label in enumerate(labels):
        side = 4 + 2 * (label % 10)
        lo = (size - side) // 2
        images[i, lo : lo + side, lo : lo + side] = 100 + 15 * (label // 10 % 10)
    return images, labels.astype(np.int64)


def write_cifar(root: str | os.PathLike, dataset: str = "cifar10", n_train: int = 500, n_test: int = 200, seed: int = 0) -> Path:
    """Write a synthetic CIFAR-10/100 in torchvision's unpacked layout under ``root``; returns root."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    classes = 10 if dataset == "cifar10" else 100
    folder = root / ("cifar-10-batches-py" if dataset == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True, exist_ok=True)
    label_key = "labels" if dataset == "cifar10" else "fine_labels"

    def dump(name: str, n: int) -> None:
        images, labels = synthetic_images(rng, n, 32, 3, classes)
        data = images.transpose(0, 3, 1, 2).reshape(n, -1)  # CIFAR rows: R plane, G plane, B plane
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, label_key: labels.tolist()}, f)

    if dataset == "cifar10":
        for b, part in enumerate(np.array_split(np.arange(n_train), 5), start=1):
            dump(f"data_batch_{b}", len(part))
        dump("test_batch", n_test)
        meta = {"label_names": [f"class{i}" for i in range(classes)]}
        meta_name = "batches.meta"
    else:
        dump("train", n_train)
        dump("test", n_test)
        meta = {"fine_label_names": [f"class{i}" for i in range(classes)]}
        meta_name = "meta"
    with open(folder / meta_name, "wb") as f:
        pickle.dump(meta, f)
    return root


@contextmanager
def skip_cifar_checksums() -> Iterator[None]:
    """Let torchvision's CIFAR loaders accept files whose MD5 is not the real data set's (tests only)."""
    with mock.patch("torchvision.datasets.cifar.check_integrity", lambda fpath, md5=None: os.path.isfile(fpath)):
        yield


def write_fashion_mnist(root: str | os.PathLike, n_train: int = 500, n_test: int = 200, seed: int = 0) -> Path:
    """Write a synthetic Fashion-MNIST: torchvision's ``FashionMNIST/raw`` and Debian's gzip layout in ``root/debian``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    raw, debian = root / "FashionMNIST" / "raw", root / "debian"
    raw.mkdir(parents=True, exist_ok=True)
    debian.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images, labels = synthetic_images(rng, n, 28, 1, 10)
        for folder, suffix in ((raw, ""), (debian, ".gz")):
            write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images[..., 0])
            write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels.astype(np.uint8))
    return root


def macs_table(space: SearchSpace) -> LatencyTable:
    """A latency table computed from each op's MACs, without a clock: 1 ms per million MACs plus
    0.01 ms per op, and for the fixed cost the stem's, head's and classifier's MACs plus 0.05 ms. The
    same on every machine and under any load, so rewards (and whatever learns from them) are too."""
    ops_ms = 0.01 + space.op_macs / 1e6
    fixed_ms = 0.05 + space.fixed_macs / 1e6
    meta = device_meta(space, threads=1) | {"method": "macs", "date": "2026-01-01T00:00:00+00:00"}
    return LatencyTable(ops_ms, float(fixed_ms), space.opens_stage.copy(), meta)


def macs_runtime_ms(model: Supernet, masks: np.ndarray, *args: object, **kwargs: object) -> np.ndarray:
    """A stand-in for timing each mask's exported sub-network in ONNX Runtime
    (:func:`instanas_gym.latency.onnx.measure_onnx_masks`): the ms of :func:`macs_table`, at once and
    the same under any load. Tests that run a command building an ONNX Runtime table patch it in;
    exporting the 120 graphs a fit needs takes minutes of CPU."""
    return np.asarray(macs_table(model.space).network_ms(masks), dtype=np.float64).reshape(len(masks))
