"""Compare REINFORCE, PPO, A2C, a random policy and the MobileNetV2 mask on one environment.

    python examples/compare_agents.py --seeds 0 1 2 --total-steps 16000 --out runs/compare

Writes OUT/curves.csv, OUT/summary.csv, OUT/curves.png (mean reward vs env steps, band over seeds)
and OUT/summary.md; prints the table. Same seeds, same numbers.
"""

from __future__ import annotations

import argparse

from rich.console import Console

from agents.compare import AGENTS, CompareConfig, compare_agents
from agents.report import results_table


def main() -> None:
    d = CompareConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default=d.env_id)
    p.add_argument("--agents", nargs="+", default=list(d.agents), choices=AGENTS)
    p.add_argument("--seeds", nargs="+", type=int, default=list(d.seeds))
    p.add_argument("--total-steps", type=int, default=d.total_steps, help="env steps per run")
    p.add_argument("--num-envs", type=int, default=d.num_envs)
    p.add_argument("--no-anneal", action="store_true")
    p.add_argument("--upper-end-frac", type=float, default=0.5,
                   help="the latency upper bound anneals to this x MobileNetV2-path latency (cells, ms)")
    p.add_argument("--reinforce-lr", type=float, default=d.reinforce_lr, help="REINFORCE's Adam learning rate")
    p.add_argument("--alpha", type=float, default=d.alpha, help="REINFORCE's encouragement bound")
    p.add_argument("--measure", type=int, default=d.measure, help="test images timed on the clock")
    p.add_argument("--eval-limit", type=int, default=None, help="test images evaluated (default all)")
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--out", default=d.out)
    a = p.parse_args()
    cfg = CompareConfig(a.env, {"upper_end_frac": a.upper_end_frac}, tuple(a.agents), tuple(a.seeds), a.total_steps,
                        a.num_envs, not a.no_anneal, a.reinforce_lr, a.alpha, a.measure, a.eval_limit, a.threads,
                        a.out)
    summary = compare_agents(cfg)
    Console().print(results_table(summary, f"{cfg.env_id}: test split, mean over {len(cfg.seeds)} seeds"))
    print(f"wrote {cfg.out}/curves.csv, summary.csv, curves.png, summary.md")


if __name__ == "__main__":
    main()
