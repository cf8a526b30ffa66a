"""Pre-train a one-shot InstaNAS supernet.

    python examples/train_supernet.py --dataset fashion_mnist --epochs 10 --out runs/supernet
    torchrun --nproc-per-node 2 examples/train_supernet.py --dataset cifar10 --data-root ~/data

Writes ``OUT/last.pt`` (resumable with ``--resume``); the environment loads it with
``gymnasium.make("InstaNAS-CIFAR10-v0", supernet=OUT/last.pt)``.
"""

from __future__ import annotations

import argparse
import dataclasses

from instanas_gym.training import TrainConfig, train_supernet


def parse_args() -> TrainConfig:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.type in ("bool", bool):
            parser.add_argument(flag, action="store_true", default=field.default)
        else:
            kind = {"int": int, "float": float}.get(str(field.type).split(" ")[0], str)
            parser.add_argument(flag, type=kind, default=field.default)
    return TrainConfig(**vars(parser.parse_args()))


if __name__ == "__main__":
    train_supernet(parse_args())
