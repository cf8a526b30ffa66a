"""Mean vs sum merging of a cell's ops: test accuracy of sub-networks after the same one-shot training.

    python benchmarks/bench_cell_merge.py [--width 0.1] [--epochs 4] [--train-subset 10000]

Trains two supernets with the same schedule (the paper's keep-probability schedule), data and seed,
one merging the selected ops' outputs by mean, one by sum, and prints the Fashion-MNIST test
accuracy of the MobileNetV2 path, one random op per cell, Bernoulli(0.5) masks and all ops.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
from rich.console import Console
from rich.table import Table

from instanas_gym.model.checkpoint import load_supernet
from instanas_gym.space.data import SubsetConfig, load_split
from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask, one_op_masks, random_masks
from instanas_gym.training.config import TrainConfig
from instanas_gym.training.evaluation import evaluate
from instanas_gym.training.trainer import train_supernet
from instanas_gym.utils.run import RunConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--subset.train", type=int, default=10_000)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    test = load_split("fashion_mnist", "test")
    table = Table(title=f"Fashion-MNIST test accuracy (%), width {a.width}, {a.epochs} epochs on {a.train_subset} images")
    for col in ("cell merge", "MobileNetV2 path", "one op per cell", "Bernoulli(0.5)", "all ops"):
        table.add_column(col, justify="right")
    for merge in ("mean", "sum"):
        with tempfile.TemporaryDirectory() as out:
            cfg = TrainConfig(width_mult=a.width, cell_merge=merge, epochs=a.epochs, subset=SubsetConfig(train=a.train_subset),
                              run=RunConfig(threads=a.threads, out=out), checkpoint_every=10**9)
            train_supernet(cfg, console=Console(quiet=True))
            model, _ = load_supernet(f"{out}/last.pt")
        rng = np.random.default_rng(0)
        accs = [
            evaluate(model, test, mobilenetv2_mask()),
            evaluate(model, test, lambda n: one_op_masks(rng, n)),
            evaluate(model, test, lambda n: random_masks(rng, n, 0.5)),
            evaluate(model, test, all_ops_mask()),
        ]
        table.add_row(merge, *(f"{100 * x:.2f}" for x in accs))
    Console().print(table)


if __name__ == "__main__":
    main()
