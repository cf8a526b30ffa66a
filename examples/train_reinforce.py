"""Train an InstaNAS controller with REINFORCE and compare it on the test split.

    python examples/train_reinforce.py                           # bundled Fashion-MNIST, a few minutes
    python examples/train_reinforce.py --env InstaNAS-CIFAR10-v0 --total-steps 200000

Ends with a table: test accuracy, LUT latency and measured latency of the learned policy against
the MobileNetV2 path and all ops. Logs to OUT/log.csv; the controller is saved as OUT/controller.pt.
"""

from __future__ import annotations

import argparse

from rich.console import Console

from agents.evaluation import controller_policy, evaluate_policy, reference_policies, bandit_on_test_split
from agents.reinforce import ReinforceConfig, train_reinforce
from agents.report import results_table


def parse_args() -> tuple[ReinforceConfig, int]:
    d = ReinforceConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default=d.env_id, help="environment id")
    p.add_argument("--data-root", default=None, help="data folder (CIFAR); default $INSTANAS_DATA")
    p.add_argument("--supernet", default=None, help="supernet checkpoint (default: bundled / cache)")
    p.add_argument("--latency-table", default=None, help="latency table JSON (default: bundled / cache)")
    p.add_argument("--total-steps", type=int, default=d.total_steps, help="env steps (images)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per update")
    p.add_argument("--lr", type=float, default=1e-2,
                   help="Adam learning rate (the paper's 1e-3 needs a far longer search than this demo's budget)")
    p.add_argument("--alpha", type=float, default=d.alpha, help="encouragement bound")
    p.add_argument("--entropy-coef", type=float, default=d.entropy_coef)
    p.add_argument("--no-anneal", action="store_true", help="keep the latency upper bound fixed")
    p.add_argument("--reward-shape", choices=["parabola", "monotone"], default="parabola")
    p.add_argument("--upper-start-frac", type=float, default=0.7,
                   help="latency upper bound starts at this x all-ops latency (cells, ms)")
    p.add_argument("--upper-end-frac", type=float, default=0.5,
                   help="... and anneals to this x MobileNetV2-path latency (cells, ms)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads")
    p.add_argument("--measure", type=int, default=200, help="test images whose masks are timed (0: none)")
    p.add_argument("--out", default=d.out)
    a = p.parse_args()
    env_kwargs = {k: v for k, v in {"data_root": a.data_root, "supernet": a.supernet,
                                     "latency_table": a.latency_table}.items() if v is not None}
    env_kwargs |= {"reward_shape": a.reward_shape, "upper_start_frac": a.upper_start_frac,
                   "upper_end_frac": a.upper_end_frac}
    cfg = ReinforceConfig(
        env_id=a.env, env_kwargs=env_kwargs, total_steps=a.total_steps, batch_size=a.batch_size, lr=a.lr,
        alpha=a.alpha, entropy_coef=a.entropy_coef, anneal_upper=not a.no_anneal, seed=a.seed,
        threads=a.threads, out=a.out,
    )
    return cfg, a.measure


def main() -> None:
    cfg, measure = parse_args()
    console = Console()
    controller, _ = train_reinforce(cfg, console)
    bandit = bandit_on_test_split(cfg.env_id, cfg.env_kwargs)
    if cfg.anneal_upper:
        bandit.reward.anneal(1.0)  # judge with the bounds the training ended on
    policies = {"InstaNAS (REINFORCE)": controller_policy(controller, cfg.alpha), **reference_policies()}
    with console.status("evaluating on the test split"):
        results = {name: evaluate_policy(pol, bandit, measure=measure) for name, pol in policies.items()}
    console.print(results_table(results, f"{cfg.env_id}: test split ({bandit.num_images} images)"))
    console.print(f"controller saved to {cfg.out}/controller.pt, log in {cfg.out}/log.csv")


if __name__ == "__main__":
    main()
