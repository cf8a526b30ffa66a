"""Train the paper's InstaNAS controller (85 Bernoulli bits, one per cell and op) with REINFORCE on
the bundled Fashion-MNIST environment (a few minutes on 2 CPU cores) and judge it on the test split
against the MobileNetV2 path and all ops.

    python examples/train_reinforce_masks.py                                  # the demo preset
    python examples/train_reinforce_masks.py --env.env-id InstaNAS-CIFAR10-v0 --total-steps 200000
    python examples/train_reinforce_masks.py --help                           # every argument

The same as ``instanas-gym train-reinforce``; the preset and why it departs from the paper's
defaults: ``instanas_gym.agents.reinforce.DEMO``.
"""

import sys

from instanas_gym.cli import main

if __name__ == "__main__":
    main(["train-reinforce", *sys.argv[1:]])
