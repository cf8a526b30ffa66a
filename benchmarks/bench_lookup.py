"""The family view's throughput: lookup mode against the live supernet.

    python benchmarks/bench_lookup.py [--family F.json] [--lookup-envs 1024] [--live-envs 64] [--seconds 10] [--threads 2]

Steps per second (one step = one image and one arm) of a K-arm family on the bundled
InstaNAS-FashionMNIST-v0 (search split), arms drawn uniformly at random, in alternating rounds of
this run (median of 5): the live native vector env with the family view
(``FamilyVectorAction``, one supernet call per step) and the lookup env
(``FamilyLookupVectorEnv``, the outcomes computed once beforehand). Without ``--family`` the family
is the 6 single architectures of the reports (one op in every cell, and all ops), written to
``--out``. The time to compute the outcomes (once per family, supernet and split) is printed too.
Target: lookup >= 100,000 steps/s with 1,024 environments.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from timing import interleaved_steps

import instanas_gym  # noqa: F401
from instanas_gym.envs.family import FamilyVectorAction
from instanas_gym.envs.lookup import FamilyLookupVectorEnv
from instanas_gym.model.outcomes import outcomes_path
from instanas_gym.space.family import ArchitectureFamily, load_family, save_family
from instanas_gym.space.masks import fixed_architectures

ENV_ID = "InstaNAS-FashionMNIST-v0"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default=None, help="a family file; default: the 6 single architectures, written to --out")
    p.add_argument("--out", default="runs/bench_lookup", help="folder of the default family and its outcomes")
    p.add_argument("--lookup-envs", type=int, default=1024)
    p.add_argument("--live-envs", type=int, default=64)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.family is None:
        fixed = fixed_architectures()
        family_path = Path(a.out) / "family.json"
        save_family(family_path, ArchitectureFamily(np.stack(list(fixed.values())), tuple(fixed), dataset="fashion_mnist"))
    else:
        family_path = Path(a.family)
    family = load_family(family_path)

    existed = outcomes_path(family_path, "search").is_file()
    start = time.perf_counter()
    lookup = FamilyLookupVectorEnv(a.lookup_envs, family=family_path)
    setup_s = time.perf_counter() - start
    live = FamilyVectorAction(gym.make_vec(ENV_ID, num_envs=a.live_envs, vectorization_mode="vector_entry_point"), family)
    lookup.reset(seed=0)
    live.reset(seed=0)
    rng = np.random.default_rng(0)
    k = family.k
    calls = {
        f"live, family view, {a.live_envs} envs": (lambda: live.step(rng.integers(0, k, a.live_envs)), a.live_envs),
        f"lookup, {a.lookup_envs} envs": (lambda: lookup.step(rng.integers(0, k, a.lookup_envs)), a.lookup_envs),
    }
    results = interleaved_steps(calls, a.seconds)
    base = next(iter(results.values()))
    table = Table(title=f"{ENV_ID}, family of {k} arms, random arms, {a.threads} threads")
    table.add_column("environment")
    table.add_column("steps/s", justify="right")
    table.add_column("vs live", justify="right")
    for name, value in results.items():
        table.add_row(name, f"{value:,.0f}", f"{value / base:.0f}x")
    console = Console()
    console.print(table)
    console.print(f"lookup env set-up (outcomes {'loaded' if existed else 'computed'}, in "
                  f"{lookup.bandit.outcomes_path}): {setup_s:.1f} s")


if __name__ == "__main__":
    main()
