"""Every agent on one environment, several seeds, the same budget, judged on the test split and
against the static frontier (the same as ``instanas-gym compare``): REINFORCE, PPO and A2C over
masks and over a family's arms, VW, the supervised router, a random policy, the MobileNetV2 mask,
the best single arm and the cascade agents (``--agents`` picks some; ``--env.family``,
``--env.lookup/--env.no-lookup``).

    python examples/compare_agents.py --seeds 0 1 2 --total-steps 16000 --run.out runs/compare

Writes OUT/curves.csv, OUT/summary.csv, OUT/curves.png and OUT/summary.md; prints the table.
"""

import sys

from instanas_gym.cli import main

if __name__ == "__main__":
    main(["compare", *sys.argv[1:]])
