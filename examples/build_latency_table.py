"""Build a latency lookup table in place and check it against the clock (the same as
``instanas-gym build-latency-table``).

    python examples/build_latency_table.py --env.supernet runs/fmnist/last.pt --run.out runs/fmnist

Writes the JSON table (``latency_onnxruntime.json``; ``latency.json`` with ``--backend torch``), with
its validation figures, and a PNG scatter plot beside it.
"""

import sys

from instanas_gym.cli import main

if __name__ == "__main__":
    main(["build-latency-table", *sys.argv[1:]])
