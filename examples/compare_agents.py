"""Every agent on one environment, several seeds, the same budget, judged on the test split against
the static frontier (``instanas-gym compare``): REINFORCE, PPO and A2C over masks and over a family's
arms, VW, the supervised router, a random policy, the MobileNetV2 mask, the best single arm and the
cascade agents (``--agents`` picks some; ``--env.family``, ``--env.lookup/--env.no-lookup``).

    python examples/compare_agents.py --seeds 0 1 2 --total-steps 16000 --run.out runs/compare
    python examples/compare_agents.py --agents REINFORCE PPO random --seeds 0 --run.out runs/compare_3

Writes OUT/curves.csv, OUT/summary.csv, OUT/curves.png and OUT/summary.md, and prints the table;
an agent x seed already finished in OUT (same settings, same files) is read back, not trained again.
"""

import tyro
from rich.console import Console

from instanas_gym.judge.compare import NOTE, compare_agents
from instanas_gym.judge.config import CompareConfig
from instanas_gym.utils.display import results_table


def main(cfg: CompareConfig) -> None:
    console = Console()
    summary = compare_agents(cfg)  # each agent x seed trained, judged on the test split, its curve logged
    console.print(results_table(summary, f"{cfg.env.env_id}: test split, mean over {len(cfg.seeds)} seeds"))
    console.print(NOTE, style="dim")  # what "gain" means: points above the static frontier at equal latency
    best = max(summary, key=lambda name: summary[name].get("gain_points", float("-inf")))
    console.print(f"highest gain: {best}; every figure in {cfg.run.out}/summary.md")


if __name__ == "__main__":
    main(tyro.cli(CompareConfig, description=__doc__.split("\n\n")[0]))
