"""Is a per-image policy instance-aware? Its gain over the static frontier of single architectures.

    python benchmarks/bench_instance_aware.py --controller runs/reinforce/controller.pt --out runs/ia
    python benchmarks/bench_instance_aware.py --random-mixture --limit 2000 --out runs/ia_null

A random per-image mixture of architectures A and B lies, in expectation, on the straight line
between them in (latency, accuracy), so the null a policy must beat is the upper concave envelope
of single architectures (``instanas_gym.judge.frontier.static_frontier``). The family: the
18 probe masks of ``instanas_gym.space.family.probe_masks(table, seed=0)`` and every distinct
architecture the policy uses, each run alone on the same test images and placed at its latency
table ms (whole network, batch 1). The policy is placed at its end-to-end latency: the table's
network ms plus its controller's median ms at batch 1 in the table's runtime and thread count.

``--controller`` judges a controller saved by ``instanas-gym train-reinforce`` or ``search``, or a
router file (``train-family``, ``search --family``, ``compare``'s REINFORCE-family, the bundled router); ``--random-mixture``
judges the null itself, the two adjacent frontier probes with the largest accuracy step mixed 50/50
at random per image: its gain should be about 0 (within the binomial noise of ``--limit`` images).

Writes to ``--out``: instance_aware.json (every figure, per-architecture and per-image arrays),
instance_aware.png (the frontier plot) and hardest_easiest.png (the easiest and hardest images by
the all-ops loss, with the architecture each got). Prints an 80-column summary.
``instanas-gym evaluate --instance-aware`` writes the same for a search.
"""

from __future__ import annotations

import argparse

import numpy as np

from instanas_gym.agents.policy import Policy, controller_policy
from instanas_gym.demo.model import load_any_controller
from instanas_gym.envs.bandit import InstaNASBandit
from instanas_gym.judge.awareness import judge_instance_awareness, random_mixture_policy, summary_lines
from instanas_gym.judge.frontier import static_frontier
from instanas_gym.latency.onnx import controller_latency_ms
from instanas_gym.model.outcomes import OutcomeStore
from instanas_gym.space.data import ImageSet
from instanas_gym.space.family import probe_masks


def mixture_pair(bandit: InstaNASBandit, masks: np.ndarray, limit: int | None) -> tuple[int, int]:
    """Indices of the two adjacent static-frontier vertices among ``masks`` with the largest accuracy
    step on the first ``limit`` images (the faster first)."""
    n = bandit.num_images if limit is None else min(limit, bandit.num_images)
    data = ImageSet(bandit.data.images[:n], bandit.data.labels[:n], bandit.data.spec, bandit.data.split,
                    bandit.data.source)
    correct = OutcomeStore(bandit.model, bandit.supernet_path, data, tag=f"first{n}").get(masks).correct
    latency = np.asarray(bandit.table.network_ms(masks), dtype=np.float64)
    accuracy = correct.mean(1)
    front_ms, front_acc = static_frontier(latency, accuracy)
    if len(front_ms) < 2:
        raise SystemExit("the probes' static frontier has a single vertex: there is no mixture of two to judge")
    k = int(np.argmax(np.diff(front_acc)))
    vertex = [int(np.flatnonzero((latency == front_ms[j]) & (accuracy == front_acc[j]))[0]) for j in (k, k + 1)]
    return vertex[0], vertex[1]


def build_policy(a: argparse.Namespace, bandit: InstaNASBandit, masks: np.ndarray) -> tuple[Policy, float, str]:
    """The policy, its controller's ms (0 for the random mixture) and its description."""
    if a.random_mixture:
        i, j = mixture_pair(bandit, masks, a.limit)
        return random_mixture_policy(masks[i], masks[j], seed=a.seed), 0.0, f"random 50/50 mixture of probes {i}, {j}"
    controller = load_any_controller(a.controller).module
    meta = bandit.table.meta
    ms = controller_latency_ms(controller, bandit.data.spec.image_shape, runtime=meta.get("runtime", "torch"),
                               threads=int(meta.get("threads", 1)))
    return controller_policy(controller), ms, f"controller {a.controller}"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--controller", default=None, help="a controller file: of `instanas-gym train-reinforce` or "
                       "`search`, or a router file (`train-family`, `search --family`, the bundled router)")
    which.add_argument("--random-mixture", action="store_true", help="judge the null: two probes mixed per image")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--data-root", default=None, help="data folder (default: the environment's)")
    p.add_argument("--supernet", default=None, help="checkpoint (default: the environment's)")
    p.add_argument("--latency-table", default=None, help="latency table JSON (default: the environment's)")
    p.add_argument("--limit", type=int, default=None, help="judge on the first N test images only")
    p.add_argument("--own-limit", type=int, default=None,
                   help="score only the policy's N most used architectures beside the probes (default: all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="of the random mixture's draws")
    p.add_argument("--out", default="runs/instance_aware", help="folder for report.json and the plots")
    a = p.parse_args(argv)
    bandit = InstaNASBandit(a.dataset, split="test", data_root=a.data_root, supernet=a.supernet,
                            latency_table=a.latency_table, threads=a.threads)
    _, masks = zip(*probe_masks(bandit.table, seed=0))
    policy, controller_ms, what = build_policy(a, bandit, np.stack(masks))
    report = judge_instance_awareness(policy, bandit, controller_ms, a.out, what, a.limit, a.own_limit)
    print("\n".join(summary_lines(report)))
    return report


if __name__ == "__main__":
    main()
