"""The InstaNAS search after pre-training: alternating controller / supernet epochs, then
fine-tuning (the same as ``instanas-gym search``).

    python examples/search.py --run.out runs/search                   # bundled Fashion-MNIST
    python examples/search.py --run.out runs/search --resume          # continue a killed search
    python examples/search.py --env.reward.upper-end-frac 0.8 --run.out runs/search_B   # another latency target
    python examples/search.py --view family --run.out runs/search_family      # over the bundled family

Writes OUT/search.pt (resumable), and at the end OUT/supernet.pt, OUT/policy.pt and the logs;
``python examples/evaluate_search.py --folders OUT`` then judges the result on the test split. The
paper-scale commands and their cost are in benchmarks/README.md.
"""

import sys

from instanas_gym.cli import main

if __name__ == "__main__":
    main(["search", *sys.argv[1:]])
