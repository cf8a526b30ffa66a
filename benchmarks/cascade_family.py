"""Choose the family a cascade runs: candidates from the supernet's static frontier, chosen on the
search split, written as a family file (the bundled default's is instanas_gym/assets/cascade_family_fashion_mnist.json).

Candidates: the vertices of the static frontier of a pool of 300 static masks (the 18 probes, the
five same-op paths, sampled single-op and Bernoulli masks; :func:`instanas_gym.judge.pool.pool_frontier`,
scored on 2,000 search images) -- the best single architectures near each latency. Each is then
scored on the whole search split, and :func:`instanas_gym.judge.routing.choose_cascade_family`
keeps the ``--k`` that most raise the accuracy of the best threshold cascade over a range of budgets.

    python benchmarks/cascade_family.py --k 4 --out instanas_gym/assets/cascade_family_fashion_mnist.json
"""

from __future__ import annotations

import argparse

import numpy as np

from instanas_gym.envs.config import EnvConfig
from instanas_gym.judge.pool import pool_frontier
from instanas_gym.judge.routing import choose_cascade_family
from instanas_gym.space.family import ArchitectureFamily, save_family
from instanas_gym.utils.run import RunConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--k", type=int, default=4, help="architectures in the family")
    p.add_argument("--stages", type=int, default=3, help="the cascade's stages T")
    p.add_argument("--supernet", default=None, help="supernet checkpoint (default: the bundled one)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True, help="family file to write")
    a = p.parse_args()
    env = EnvConfig(supernet=a.supernet)
    search = env.bandit(env.train_split, RunConfig(threads=a.threads))
    names, masks = pool_frontier(search)
    outcomes = search.outcome_store().get(masks)
    ms = np.asarray(search.table.network_ms(masks), dtype=np.float64)
    confidence = outcomes.confidence.astype(np.float16).astype(np.float64)
    print("candidates (the pool's frontier on 2,000 search images), on the whole search split:")
    for name, m, acc in zip(names, ms, outcomes.correct.mean(1)):
        print(f"  {name:<20} {m:.3f} ms  {100 * acc:.2f}%")
    chosen = choose_cascade_family(outcomes.prediction, confidence, ms, outcomes.labels, a.k, a.stages)
    family = ArchitectureFamily(masks[chosen], tuple(names[i] for i in chosen), ms[chosen], search.dataset,
                                str(a.supernet) if a.supernet else None,
                                {"chosen_by": "benchmarks/cascade_family.py", "k": a.k, "stages": a.stages,
                                 "latency_table": search.table.meta.get("runtime", "torch")})
    save_family(a.out, family)
    print(f"chose {', '.join(family.names)}; wrote {a.out}")


if __name__ == "__main__":
    main()
