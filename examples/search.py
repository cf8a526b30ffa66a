"""The InstaNAS search after pre-training, phases 2 and 3: controller and supernet epochs in turn, then
fine-tuning (``instanas-gym search``), and the result judged on the test split.

    python examples/search.py --run.out runs/search                   # bundled Fashion-MNIST
    python examples/search.py --run.out runs/search --resume          # continue a killed search
    python examples/search.py --env.reward.upper-end-frac 0.8 --run.out runs/search_B   # another latency target
    python examples/search.py --view family --run.out runs/search_family      # over the bundled family

Writes OUT/search.pt (resumable), and at the end OUT/supernet.pt, OUT/policy.pt, the logs and
OUT/report.md (the searched policy beside the MobileNetV2 path, on the test split). The
paper-scale commands and their cost are in benchmarks/README.md.
"""

import tyro
from rich.console import Console

from instanas_gym.agents.config import SearchConfig
from instanas_gym.agents.search import search
from instanas_gym.judge.search_report import evaluate_search, write_report
from instanas_gym.utils.display import results_table


def main(cfg: SearchConfig) -> None:
    console = Console()
    out = search(cfg, console)  # phase 2 (controller, then supernet, per epoch), phase 3 (fine-tuning)
    with console.status(f"judging {out} on the test split"):
        ev = evaluate_search(out, measure=0, data_root=cfg.env.data.root, device=cfg.run.device)
    console.print(results_table(ev["results"], f"{out}: test split ({len(ev['labels'])} images)"))
    console.print(f"report: {write_report(out, ev)}")


if __name__ == "__main__":
    main(tyro.cli(SearchConfig, description=__doc__.split("\n\n")[0]))
