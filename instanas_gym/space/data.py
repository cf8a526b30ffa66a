"""Datasets as uint8 image arrays, and batch augmentation on tensors.

Every split loads into memory as ``images`` uint8 (N, H, W, C) and ``labels`` int64 (N,): the
environment hands these images out as observations, and training batches are cut from them.

Where data comes from: the data root is ``root``, else ``$INSTANAS_DATA``, else
``$INSTANAS_CACHE/data`` (:func:`instanas_gym.utils.paths.data_root`).

* CIFAR-10/100: torchvision's ``CIFAR10``/``CIFAR100`` under the root (``download=True`` fetches).
* Fashion-MNIST: torchvision's ``FashionMNIST`` under the root if it is there (or with
  ``download=True``); otherwise the gzip
  files of Debian's ``dataset-fashion-mnist`` package in ``/usr/share/datasets/fashion-mnist``;
  the ``test`` split and the ``search`` split (a fixed subset of 10,000 training images, drawn by
  ``numpy.random.default_rng(20261124).choice(60000, 10000, replace=False)`` and sorted, for the
  controller to learn on) also ship inside this package, so the default environment works offline.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.error import URLError

import numpy as np

from instanas_gym.utils.checks import check_int
from instanas_gym.utils.paths import BUNDLED_FASHION_MNIST, DEBIAN_FASHION_MNIST, data_root

if TYPE_CHECKING:  # torch is imported where tensors are made: the command line parses DataConfig without it
    import torch


@dataclass(frozen=True)
class DatasetSpec:
    """Shape, statistics and training augmentation of one dataset.

    ``crop_padding`` pixels of zero padding before a random crop back to size; ``cutout`` is the side
    in pixels of a zeroed square (0: off).
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]  # H, W, C
    mean: tuple[float, ...]
    std: tuple[float, ...]
    splits: tuple[str, ...]
    crop_padding: int
    flip: bool
    cutout: int

    @property
    def class_names(self) -> tuple[str, ...]:
        """Human-readable class names (class indices as text where none are listed)."""
        return CLASS_NAMES.get(self.name, tuple(str(i) for i in range(self.num_classes)))

    @property
    def title(self) -> str:
        """The data set's name as people write it ("Fashion-MNIST")."""
        return TITLES.get(self.name, self.name)


CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
}

TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "fashion_mnist": "Fashion-MNIST"}

DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(
        "cifar10", 10, (32, 32, 3), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), ("train", "test"), 4, True, 16
    ),
    "cifar100": DatasetSpec(
        "cifar100", 100, (32, 32, 3), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), ("train", "test"), 4, True, 16
    ),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist", 10, (28, 28, 1), (0.2860,), (0.3530,), ("train", "search", "test"), 2, True, 0
    ),
}


@dataclass(frozen=True)
class DataConfig:
    """Where a data set's images are (:func:`load_split`'s ``root`` and ``download``)."""

    root: str | None = None
    """Data folder; unset, $INSTANAS_DATA, else the folder prepare recorded, else $INSTANAS_CACHE/data."""
    download: bool = False
    """Let torchvision download the data set where it is missing (needs internet)."""

    def __post_init__(self) -> None:
        check_data_root("data.root", self.root)
        if not isinstance(self.download, bool):
            raise TypeError(f"data.download must be True or False, got {self.download!r}")


@dataclass
class SubsetConfig:
    """How many images of each split a training run uses: the first N (unset: all)."""

    train: int | None = None
    """Train on the first N training images only; unset, on all of them."""
    eval: int | None = None
    """Evaluate on the first N test images only; unset, on all of them."""

    def __post_init__(self) -> None:
        for name in ("train", "eval"):
            check_int(f"subset.{name}", getattr(self, name), optional=True)


@dataclass
class ImageSet:
    """One split in memory: uint8 images (N, H, W, C), int64 labels (N,)."""

    images: np.ndarray
    labels: np.ndarray
    spec: DatasetSpec
    split: str
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Images as uint8 NCHW tensor and labels as int64 tensor (shared memory, no copy of labels)."""
        import torch

        return torch.from_numpy(self.images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(self.labels)


def data_sha256(data: ImageSet) -> str:
    """SHA-256 (hex) of a split's images and labels."""
    h = hashlib.sha256(np.ascontiguousarray(data.images).tobytes())
    h.update(np.ascontiguousarray(data.labels).tobytes())
    return h.hexdigest()


def statistics_split(dataset: str) -> str:
    """The training split that BatchNorm statistics of single architectures are estimated on:
    "search" where the data set has one (Fashion-MNIST: training images that ship in the package),
    else "train"."""
    return "search" if "search" in get_spec(dataset).splits else "train"
#: What a download without a connection raises (urllib's errors, as torchvision downloads with it).
NO_CONNECTION = (URLError, ConnectionError, TimeoutError)


class DataNotFoundError(FileNotFoundError):
    """A data set is not where we looked; the message says how to get it."""


def check_data_root(name: str, root: Any) -> None:
    """Refuse a data root that is not a path (str or os.PathLike) or None; TypeError names ``name``."""
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"{name} must be a folder path (str or os.PathLike) or None, got {root!r:.80}")


def get_spec(dataset: str) -> DatasetSpec:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[dataset]


def load_split(dataset: str, split: str, root: str | os.PathLike | None = None, download: bool = False) -> ImageSet:
    """Load one split of ``dataset`` ("cifar10", "cifar100", "fashion_mnist") into memory."""
    spec = get_spec(dataset)
    check_data_root("root", root)
    if not isinstance(download, bool):
        raise TypeError(f"download must be True or False, got {download!r}")
    if split not in spec.splits:
        raise ValueError(f"{dataset} has splits {spec.splits}, got {split!r}")
    path = data_root(root, dataset)
    if dataset in ("cifar10", "cifar100"):
        images, labels, source = _load_cifar(dataset, split, path, download)
    else:
        images, labels, source = _load_fashion_mnist(split, path, download)
    return ImageSet(np.ascontiguousarray(images), np.asarray(labels, dtype=np.int64), spec, split, source)


def _load_cifar(dataset: str, split: str, root: Path, download: bool) -> tuple[np.ndarray, np.ndarray, str]:
    from torchvision import datasets

    cls = datasets.CIFAR10 if dataset == "cifar10" else datasets.CIFAR100
    try:
        ds = cls(str(root), train=split == "train", download=download)
    except NO_CONNECTION as err:
        raise DataNotFoundError(offline_message(dataset, root, cls.__name__, err)) from None
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted."
        folder = cls.base_folder
        raise DataNotFoundError(
            f"{dataset} not found under {root} ({err}). Pass download=True (needs internet), or point "
            f"root= / $INSTANAS_DATA at a folder that holds {folder}/ as torchvision unpacks it."
        ) from err
    return ds.data, np.asarray(ds.targets), f"torchvision:{root}"


def offline_message(dataset: str, root: Path, torchvision_class: str, err: Exception) -> str:
    """What to do when downloading ``dataset`` into ``root`` failed for want of a connection."""
    reason = getattr(err, "reason", None) or err
    return (f"could not download {get_spec(dataset).title} into {root}: this machine looks offline ({reason}). "
            f"Download it where there is internet (torchvision.datasets.{torchvision_class}(ROOT, download=True)), "
            f"copy ROOT here and pass it as the data root (--data.root or $INSTANAS_DATA).")


def _load_fashion_mnist(split: str, root: Path, download: bool) -> tuple[np.ndarray, np.ndarray, str]:
    if split == "search":
        return (*read_idx_pair(BUNDLED_FASHION_MNIST, "search"), f"bundled:{BUNDLED_FASHION_MNIST}")
    prefix = "train" if split == "train" else "t10k"
    raw = root / "FashionMNIST" / "raw"
    for suffix in ("", ".gz"):  # torchvision's files, read as it reads them (without importing it: seconds)
        files = [raw / f"{prefix}-{kind}-idx{d}-ubyte{suffix}" for kind, d in (("images", 3), ("labels", 1))]
        if not download and all(f.is_file() for f in files):
            return read_idx(files[0])[..., None], read_idx(files[1]).astype(np.int64), f"torchvision:{root}"
    if download or raw.is_dir():
        from torchvision import datasets

        try:
            ds = datasets.FashionMNIST(str(root), train=split == "train", download=download)
        except NO_CONNECTION as err:
            raise DataNotFoundError(offline_message("fashion_mnist", root, "FashionMNIST", err)) from None
        return ds.data.numpy()[..., None], ds.targets.numpy(), f"torchvision:{root}"
    for folder, source in ((DEBIAN_FASHION_MNIST, "debian"), (BUNDLED_FASHION_MNIST, "bundled")):
        if (folder / f"{prefix}-images-idx3-ubyte.gz").is_file():
            return (*read_idx_pair(folder, prefix), f"{source}:{folder}")
    raise DataNotFoundError(
        f"Fashion-MNIST {split} split not found. Install Debian's package (apt-get install "
        f"dataset-fashion-mnist, files in {DEBIAN_FASHION_MNIST}), or pass root= / set $INSTANAS_DATA "
        f"with download=True to let torchvision fetch it."
    )


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST format, optionally gzip'd) of unsigned bytes."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = data[0] * 256 + data[1], data[2], data[3]
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(data) != 4 + 4 * ndim + int(np.prod(dims)):
        raise ValueError(f"{path} is a damaged IDX file: its header promises {dims} bytes, it holds "
                         f"{len(data) - 4 - 4 * ndim}")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims).copy()


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip'd when the name ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def read_idx_pair(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")[..., None]
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return images, labels


# ---- augmentation ------------------------------------------------------------------------------
def augment(images: torch.Tensor, spec: DatasetSpec, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop with zero padding, horizontal flip and cutout, per image, on a uint8 NCHW batch."""
    import torch

    n, _, h, w = images.shape
    out = images
    if spec.crop_padding:
        p = spec.crop_padding
        padded = torch.nn.functional.pad(images, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n, 1, 1), generator=generator)
        dx = torch.randint(0, 2 * p + 1, (n, 1, 1), generator=generator)
        rows = torch.arange(h).view(1, h, 1) + dy
        cols = torch.arange(w).view(1, 1, w) + dx
        out = padded[torch.arange(n).view(n, 1, 1), :, rows, cols].permute(0, 3, 1, 2)
    if spec.flip:
        flip = torch.rand(n, generator=generator) < 0.5
        out = torch.where(flip.view(n, 1, 1, 1), out.flip(3), out)
    if spec.cutout:
        cy = torch.randint(0, h, (n, 1, 1), generator=generator)
        cx = torch.randint(0, w, (n, 1, 1), generator=generator)
        top, left = cy - spec.cutout // 2, cx - spec.cutout // 2
        ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
        hole = (ys >= top) & (ys < top + spec.cutout) & (xs >= left) & (xs < left + spec.cutout)
        out = out.masked_fill(hole.unsqueeze(1), 0)
    return out.contiguous()
