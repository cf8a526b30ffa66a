"""Judge InstaNAS searches on the test split: table, Pareto plot, mask embedding, latency histogram
and report.md in each folder; without ``--folders``, the bundled router (the same as
``instanas-gym evaluate``).

    python examples/evaluate_search.py --folders runs/search
    python examples/evaluate_search.py --folders runs/search_A runs/search_B --run.out runs/family
    python examples/evaluate_search.py --folders runs/search --reference "alone=runs/mbv2/last.pt"
"""

import sys

from instanas_gym.cli import main

if __name__ == "__main__":
    main(["evaluate", *sys.argv[1:]])
