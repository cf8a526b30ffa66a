"""Train an instance-aware InstaNAS controller with REINFORCE on the bundled Fashion-MNIST
environment (a few minutes on 2 CPU cores) and judge it on the test split against the static
frontier of single architectures: per image it picks one of the bundled family's architectures
(a categorical policy, several sampled arms per image with a leave-one-out baseline, stepped in
lookup mode), and the table puts it beside the frontier and the best single architecture at its
end-to-end latency.

    python examples/train_reinforce.py                                    # the bundled family
    python examples/train_reinforce.py --env.reward.upper-end-frac 1.0    # a tighter latency band
    python examples/train_reinforce.py --family runs/router/router.pt     # another family
    python examples/train_reinforce.py --help                             # every argument

The same as ``instanas-gym train-family``; the defaults and why: ``instanas_gym.agents.family_reinforce``.
The paper's 85-bit controller: ``python examples/train_reinforce_masks.py``.
"""

import sys

from instanas_gym.cli import main

if __name__ == "__main__":
    main(["train-family", *sys.argv[1:]])
