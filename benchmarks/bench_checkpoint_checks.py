"""What the integrity checks add to loading a supernet checkpoint (the bundled one by default).

Times, interleaved in one run (median of ``--repeats`` of each, ms of this process's CPU time, one
torch thread, so that other jobs on the machine change them little): the unchecked load
(torch.load with weights_only, then building the supernet), the checked load (``load_supernet``:
the zip's CRC-32s, finite weights, possible normalisation, then the same build), and the two checks
alone. Prints each time and the checked / unchecked ratio.

    python benchmarks/bench_checkpoint_checks.py --repeats 30
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from instanas_gym.model.checkpoint import build_supernet, load_supernet
from instanas_gym.utils.files import check_weights, zip_damage
from instanas_gym.utils.paths import BUNDLED_SUPERNET


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=BUNDLED_SUPERNET)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = args.checkpoint
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    runs: dict[str, Callable[[], object]] = {
        "unchecked load + build": lambda: build_supernet(torch.load(path, map_location="cpu", weights_only=True), path),
        "checked load + build (load_supernet)": lambda: load_supernet(path),
        "zip CRC-32 check alone": lambda: zip_damage(path),
        "finite-weights check alone": lambda: check_weights(path, state, "checkpoint"),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run()  # warm the page cache and torch
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.process_time()
            run()
            times[name].append(1e3 * (time.process_time() - start))
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"{path} ({path.stat().st_size / 2**20:.1f} MiB), median of {args.repeats}, CPU ms")
    for name, ms in median.items():
        print(f"  {name:38s} {ms:8.1f}")
    base, checked = median["unchecked load + build"], median["checked load + build (load_supernet)"]
    print(f"checked / unchecked: {checked / base:.3f} (+{checked - base:.1f} ms)")


if __name__ == "__main__":
    main()
