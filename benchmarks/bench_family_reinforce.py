"""REINFORCE over a family against the supervised router, at the same reward, over seeds.

    python benchmarks/bench_family_reinforce.py [--fracs 1.0 1.5] [--seeds 0 1 2] [--anneal] [--entropy-coef 2.0] [--steps 48000]

For each final upper bound (``--fracs``: UB = frac x the MobileNetV2 path's cells) it trains the
categorical REINFORCE of ``instanas-gym train-family`` on the bundled family (lookup mode, the
search split) once per seed, under that bound throughout (``--anneal``: the bound annealed from
the paper's 0.7 x all ops to it instead; ``--entropy-coef``: another entropy bonus), and fits the
router of ``instanas-gym compare`` (each arm's correctness on the whole search split, 8 epochs)
that routes each image to the arm of highest expected reward at the same bound. Both are judged by
their greedy choice on the 10,000 test images from the family's test-split outcomes (computed once
into ``--out``): mean reward at the final bound, accuracy, the network's table latency, the gain
over the family's own static frontier at that latency (points; the controller's cost is not
counted here: ``train-family`` judges it end to end against the 18 probes), the architectures used
and the share of each.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from instanas_gym.agents.family_reinforce import FamilyPGConfig, FamilyReinforceConfig, train_family_reinforce

import instanas_gym  # noqa: F401
from instanas_gym.agents.router import Router, expected_rewards, predict_correct, train_router
from instanas_gym.envs.config import EnvConfig
from instanas_gym.envs.lookup import FamilyLookup
from instanas_gym.envs.reward import RewardConfig
from instanas_gym.judge.frontier import gain_over_frontier, static_frontier
from instanas_gym.judge.information import mutual_information_bits
from instanas_gym.model.outcomes import outcomes_path
from instanas_gym.utils.paths import BUNDLED_FAMILY


def judge(arms: np.ndarray, test: FamilyLookup) -> dict[str, float | str]:
    """Greedy arms (N,) on the test split: the figures of the module docstring."""
    correct = test.outcomes["correct"]
    n = correct.shape[1]
    out = test.evaluate_arms(np.arange(n), arms)
    net = np.asarray(test.arm_figures()["network_latency_ms"], dtype=np.float64).reshape(-1)
    acc, lat = float(out["correct"].mean()), float(net[arms].mean())
    share = np.bincount(arms, minlength=len(net)) / n
    used = np.argsort(-share)
    return {"reward": float(out["reward"].mean()), "acc": 100 * acc, "ms": lat,
            "gain": gain_over_frontier(static_frontier(net, correct.mean(1)), lat, acc)["points"],
            "archs": int((share > 0).sum()), "mi": mutual_information_bits(arms, test.data.labels),
            "shares": ", ".join(f"{test.family.names[k]} {100 * share[k]:.1f}" for k in used if share[k] >= 0.005)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fracs", type=float, nargs="+", default=[1.0, 1.5])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=48_000, help="training images per REINFORCE run")
    p.add_argument("--anneal", action="store_true", help="anneal UB from 0.7 x all ops to the final bound")
    p.add_argument("--entropy-coef", type=float, default=FamilyPGConfig().entropy_coef, help="the entropy bonus")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/bench_family_reinforce")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    family = out / BUNDLED_FAMILY.name  # a copy, so the test split's outcomes are stored beside it
    shutil.copy(BUNDLED_FAMILY, family)
    if not outcomes_path(family, "search").is_file():
        shutil.copy(outcomes_path(BUNDLED_FAMILY, "search"), outcomes_path(family, "search"))
    rows = []
    for frac in a.fracs:
        reward = RewardConfig(upper_end_frac=frac, anneal=a.anneal)
        test = FamilyLookup(family, dataset="fashion_mnist", split="test", reward=reward)
        test.reward.anneal(1.0)
        for seed in a.seeds:
            cfg = replace(FamilyReinforceConfig(), env=EnvConfig(reward=reward), family=str(family), total_steps=a.steps,
                          pg=FamilyPGConfig(entropy_coef=a.entropy_coef), seed=seed, threads=a.threads,
                          out=str(out / f"ub{frac}_seed{seed}"))
            start = time.perf_counter()
            router, _, _ = train_family_reinforce(cfg)
            with torch.no_grad():
                arms = router(torch.from_numpy(test.data.images)).argmax(1).numpy()
            rows.append({"UB": frac, "policy": f"REINFORCE-family seed {seed}", **judge(arms, test),
                         "s": time.perf_counter() - start})
            print(rows[-1], flush=True)
        search = FamilyLookup(family, dataset="fashion_mnist", split="search", reward=reward)
        start = time.perf_counter()
        router = Router(FamilyReinforceConfig().controller, search.data.spec.image_shape[2], search.family.k)
        train_router(router, search.data.images, search.outcomes["correct"], 8, seed=0)
        cells = np.asarray(test.arm_figures()["latency_ms"], dtype=np.float64).reshape(-1)
        probs = predict_correct(router, test.data.images)
        arms = np.argmax(expected_rewards(probs, test.reward.arch_reward(cells), test.reward.correct_reward), axis=1)
        rows.append({"UB": frac, "policy": "router (supervised)", **judge(arms, test), "s": time.perf_counter() - start})
        print(rows[-1], flush=True)
    print(f"\nfinal UB = frac x MobileNetV2 cells, {'annealed' if a.anneal else 'fixed'}; entropy bonus {a.entropy_coef}; "
          f"{a.steps} images per REINFORCE run")
    print("| UB frac | policy | R | acc % | net ms | gain pt | archs | MI cls | shares % | time s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['UB']} | {r['policy']} | {r['reward']:+.2f} | {r['acc']:.2f} | {r['ms']:.3f} | {r['gain']:+.2f} | "
              f"{r['archs']} | {r['mi']:.2f} | {r['shares']} | {r['s']:.0f} |")


if __name__ == "__main__":
    main()
