"""Train an instance-aware REINFORCE policy on the bundled Fashion-MNIST environment (a few minutes on
2 CPU cores) and judge it on the test split against the static frontier of single architectures.

The policy runs a cascade (the cascade view, InstaNAS-FashionMNIST-Cascade-v0): it runs one of the
bundled cascade family's architectures, looks at its answer (top-1 probability, margin, entropy) and
either stops or runs another, at most three; latency is the sum of what ran. It learns, stepped in
lookup mode, when a cheap network's answer is good enough. The report at the end puts it beside the
static frontier (18 probes, its family and a searched pool of 300 static masks), with a bootstrap
interval, the latency saved, and how many images stop at each stage.

    python examples/train_reinforce.py                                    # the bundled cascade family
    python examples/train_reinforce.py --env.reward.upper-end-frac 30     # latency priced higher
    python examples/train_reinforce.py --help                             # every argument
"""

from pathlib import Path

import tyro
from rich.console import Console

from instanas_gym.agents.config import ReinforceConfig, preset
from instanas_gym.agents.policy import load_policy
from instanas_gym.agents.reinforce import train_reinforce
from instanas_gym.judge.saved import judge_saved


def main(cfg: ReinforceConfig) -> None:
    console = Console()
    train_reinforce(cfg, console)  # writes run.out/log.csv and run.out/policy.pt
    out = Path(cfg.run.out)
    judge_saved(load_policy(out / "policy.pt"), cfg.env, out, cfg.run, cfg.judge, console)


if __name__ == "__main__":
    main(tyro.cli(ReinforceConfig, default=preset("cascade")))
