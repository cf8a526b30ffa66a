"""How fast the command line answers before doing any work: ``instanas-gym --help``, each command's
``--help`` and a refused value, against a bare Python start, as the user runs them (a new process).

    python benchmarks/cli_help.py --runs 7

Prints per case the median over ``--runs`` of the wall-clock seconds and of the CPU seconds (user +
system) of the process, and the wall time as a multiple of the bare start's; CPU time changes less
than wall time when other jobs share the machine. Times this checkout's package.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's package, as the timed processes (run in ROOT) import it

from instanas_gym.cli import COMMANDS  # noqa: E402

CLI = [sys.executable, "-m", "instanas_gym.cli"]


def timed(argv: list[str], runs: int) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of ``argv`` run ``runs`` times (after one unmeasured run)."""
    subprocess.run(argv, capture_output=True, cwd=ROOT)
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, cwd=ROOT)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    cases = {"python -c pass (a bare start)": [sys.executable, "-c", "pass"], "instanas-gym --help": [*CLI, "--help"]}
    cases |= {f"instanas-gym {name} --help": [*CLI, name, "--help"] for name in COMMANDS}
    cases["instanas-gym search --run.seed -1 (refused)"] = [*CLI, "search", "--run.seed", "-1"]
    base = None
    print(f"{'case':<52} {'wall s':>7} {'cpu s':>7} {'x bare':>7}")
    for name, argv in cases.items():
        wall, cpu = timed(argv, args.runs)
        base = base or wall
        print(f"{name:<52} {wall:7.3f} {cpu:7.3f} {wall / base:7.1f}")


if __name__ == "__main__":
    main()
