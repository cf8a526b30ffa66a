"""Train an instance-aware REINFORCE policy on the bundled Fashion-MNIST environment (a few minutes on
2 CPU cores) and judge it on the test split against the static frontier of single architectures.

Per image the policy picks one of the bundled family's architectures (a categorical policy, several
arms sampled per image with a leave-one-out baseline, stepped in lookup mode); the table at the end
puts it beside the frontier, the best single architecture within its latency, the MobileNetV2 path
and the label-reading oracle.

    python examples/train_reinforce.py                                    # the bundled family
    python examples/train_reinforce.py --env.reward.upper-end-frac 1.0    # a tighter latency band
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
    judge_saved(load_policy(out / "policy.pt"), cfg.env, out, cfg.run, cfg.judge_limit, console)


if __name__ == "__main__":
    main(tyro.cli(ReinforceConfig, default=preset("family")))
