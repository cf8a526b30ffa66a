"""Rebuild the stored test assets in ``tests/assets/`` (run from the repository root:
``python -m tests.make_assets``); the suite reads them instead of training for minutes each run.

* ``tiny_supernet_trained.pt``: a width-0.1 supernet trained on the synthetic Fashion-MNIST of
  :func:`tests.fixtures.write_fashion_mnist` (512 training and 256 test images, seed 0) for 6 epochs
  (batch 32, lr 0.05, one thread, seed 0), without resume state, its weights stored as float16
  (:func:`tests.conftest.trained_assets` restores float32).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from instanas_gym.model.checkpoint import load_checkpoint
from instanas_gym.space.data import DataConfig, SubsetConfig
from instanas_gym.training.config import TrainConfig
from instanas_gym.training.trainer import train_supernet
from instanas_gym.utils.files import atomic_save
from instanas_gym.utils.run import RunConfig
from tests.fixtures import write_fashion_mnist

ASSETS = Path(__file__).resolve().parent / "assets"
TRAINED = ASSETS / "tiny_supernet_trained.pt"
KEEP = ("format", "space", "dataset", "mean", "std", "model", "metrics")


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_fashion_mnist(Path(tmp) / "fmnist", n_train=512, n_test=256)
        out = Path(tmp) / "run"
        train_supernet(TrainConfig(data=DataConfig(str(root)), run=RunConfig(threads=1, out=str(out)), width_mult=0.1,
                                   epochs=6, batch_size=32, subset=SubsetConfig(512, 64), lr=0.05))
        ckpt = load_checkpoint(out / "last.pt")
    ckpt["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    atomic_save({k: ckpt[k] for k in KEEP}, TRAINED)
    print(f"wrote {TRAINED}: {ckpt['metrics']['test_acc_all_ops']:.3f} all ops on 64 test images")


if __name__ == "__main__":
    main()
