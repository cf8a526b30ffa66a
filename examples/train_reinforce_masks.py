"""Train the paper's controller with REINFORCE: a mask of 85 bits (17 cells x 5 ops) per image, on
the bundled Fashion-MNIST environment, then judge it on the test split against the static frontier
of single architectures. Its defaults depart from the paper's where a budget of minutes on the
bundled supernet needs it (``instanas_gym.agents.config.preset``, reasons in ``instanas_gym.agents.reinforce``).

    python examples/train_reinforce_masks.py
    python examples/train_reinforce_masks.py --pg.alpha 0.8 --total-steps 32000    # the paper's alpha
"""

from pathlib import Path

import tyro
from rich.console import Console

from instanas_gym.agents.config import ReinforceConfig, preset
from instanas_gym.agents.policy import load_policy
from instanas_gym.agents.reinforce import train_reinforce
from instanas_gym.judge.awareness import judge_policy, print_judgement


def main(cfg: ReinforceConfig) -> None:
    console = Console()
    train_reinforce(cfg, console)  # writes run.out/log.csv and run.out/policy.pt
    out = Path(cfg.run.out)
    policy = load_policy(out / "policy.pt")
    with console.status("judging the greedy policy on the test split"):
        # a mask per image can mean many architectures: the most used (cfg.judge.own_archs) join the probes
        report = judge_policy(policy, cfg.env, out, cfg.run, cfg.judge)
    print_judgement(report, f"{cfg.env.env_id}: test split ({report['images']} images)", out, console)


if __name__ == "__main__":
    main(tyro.cli(ReinforceConfig, default=preset("masks")))
