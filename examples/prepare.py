"""Data, supernet and latency table for one data set, installed where the environment looks (the
same as ``instanas-gym prepare``); rerun the same command to continue after a kill.

    python examples/prepare.py cifar10                       # paper-scale budget, on the GPU when present
    python examples/prepare.py cifar100 --data.root ~/data --epochs 50 --run.precision bf16
    python examples/prepare.py fashion-mnist --width-mult 0.25 --torch-table

Afterwards ``gymnasium.make("InstaNAS-CIFAR10-v0")`` needs no argument.
"""

import sys

from instanas_gym.cli import main

if __name__ == "__main__":
    main(["prepare", *sys.argv[1:]])
