"""REINFORCE, PPO, A2C, a random policy and the MobileNetV2 mask on one environment, several seeds,
the same budget, judged on the test split (the same as ``instanas-gym compare``).

    python examples/compare_agents.py --seeds 0 1 2 --total-steps 16000 --out runs/compare

Writes OUT/curves.csv, OUT/summary.csv, OUT/curves.png and OUT/summary.md; prints the table.
"""

import sys

from instanas_gym.cli import main

if __name__ == "__main__":
    main(["compare", *sys.argv[1:]])
