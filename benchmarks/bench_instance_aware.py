"""Is a per-image policy instance-aware? Its gain over the static frontier of single architectures.

    python benchmarks/bench_instance_aware.py --controller runs/reinforce/controller.pt --out runs/ia
    python benchmarks/bench_instance_aware.py --random-mixture --limit 2000 --out runs/ia_null

A random per-image mixture of architectures A and B lies, in expectation, on the straight line
between them in (latency, accuracy), so the null a policy must beat is the upper concave envelope
of single architectures (``instanas_gym.agents.instance_aware.static_frontier``). The family: the
18 probe masks of ``instanas_gym.sandwich.probe_masks(table, seed=0)`` and every distinct
architecture the policy uses, each run alone on the same test images and placed at its latency
table ms (whole network, batch 1). The policy is placed at its end-to-end latency: the table's
network ms plus its controller's median ms at batch 1 in the table's runtime and thread count.

``--controller`` judges a controller saved by ``instanas-gym train-reinforce``; ``--random-mixture``
judges the null itself, the two adjacent frontier probes with the largest accuracy step mixed 50/50
at random per image: its gain should be about 0 (within the binomial noise of ``--limit`` images).

Writes to ``--out``: report.json (every figure, per-architecture and per-image arrays),
instance_aware.png (the frontier plot) and hardest_easiest.png (the easiest and hardest images by
the all-ops loss, with the architecture each got). Prints an 80-column summary.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from instanas_gym.agents.controller import load_controller
from instanas_gym.agents.evaluation import Policy, controller_latency_ms, controller_policy
from instanas_gym.agents.instance_aware import (
    instance_awareness,
    random_mixture_policy,
    score_architectures,
    static_frontier,
)
from instanas_gym.bandit import InstaNASBandit
from instanas_gym.data import ImageSet
from instanas_gym.plots import hardest_easiest_plot, instance_aware_plot
from instanas_gym.sandwich import probe_masks


def mixture_pair(bandit: InstaNASBandit, masks: np.ndarray, limit: int | None) -> tuple[int, int]:
    """Indices of the two adjacent static-frontier vertices among ``masks`` with the largest accuracy
    step on the first ``limit`` images (the faster first)."""
    n = bandit.num_images if limit is None else min(limit, bandit.num_images)
    data = ImageSet(bandit.data.images[:n], bandit.data.labels[:n], bandit.data.spec, bandit.data.split,
                    bandit.data.source)
    correct, latency = score_architectures(bandit.model, data, bandit.table, masks)
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
    controller, _ = load_controller(a.controller)
    meta = bandit.table.meta
    ms = controller_latency_ms(controller, bandit.data.spec.image_shape, runtime=meta.get("runtime", "torch"),
                               threads=int(meta.get("threads", 1)))
    return controller_policy(controller), ms, f"controller {a.controller}"


def family_names(bandit: InstaNASBandit, names: tuple[str, ...], probes: np.ndarray, family: np.ndarray) -> list[str]:
    """A name per family member: the first probe of that effective mask, else ``policy_<k>`` in order."""
    eff = bandit.model.space.effective_mask(probes)
    out, k = [], 0
    for member in family.astype(bool):
        hit = [n for n, e in zip(names, eff) if (e == member).all()]
        out.append(hit[0] if hit else f"policy_{k}")
        k += not hit
    return out


def jsonable(value: Any) -> Any:
    """``value`` with numpy arrays and scalars as lists and Python numbers (nan as None)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and np.isnan(value) else value


def print_summary(r: dict, what: str) -> None:
    """The figures that answer the question, 80 columns at most."""
    gain, oracle = r["gain"], r["oracle"]
    print(f"{what}"[:80])
    print(f"{r['images']} images, family of {len(r['family_latency_ms'])} architectures "
          f"({r['references']} probes + the policy's)")
    print(f"accuracy {100 * r['accuracy']:.2f}%, e2e {r['e2e_ms']:.3f} ms (network {r['network_ms']:.3f} "
          f"+ controller {r['controller_ms']:.3f})")
    print(f"distinct architectures {r['distinct_archs']}, most used serves {100 * r['arch_share'][0]:.1f}% "
          f"of the images")
    print(f"gain over the static frontier: {gain['points']:+.2f} points at equal latency, "
          f"{gain['latency_pct']:+.1f}% latency")
    print(f"MI(arch; class)      {r['mi_class_bits']:.3f} bits (labels shuffled: {r['mi_class_null_bits']:.3f})")
    print(f"MI(arch; difficulty) {r['mi_difficulty_bits']:.3f} bits (labels shuffled: "
          f"{r['mi_difficulty_null_bits']:.3f})")
    print(f"oracle over the family (reads the labels): {100 * oracle['accuracy']:.2f}% at "
          f"{oracle['latency_ms']:.3f} ms")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--controller", default=None, help="a controller saved by `instanas-gym train-reinforce`")
    which.add_argument("--random-mixture", action="store_true", help="judge the null: two probes mixed per image")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--data-root", default=None, help="data folder (default: the environment's)")
    p.add_argument("--supernet", default=None, help="checkpoint (default: the environment's)")
    p.add_argument("--latency-table", default=None, help="latency table JSON (default: the environment's)")
    p.add_argument("--limit", type=int, default=None, help="judge on the first N test images only")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="of the random mixture's draws")
    p.add_argument("--out", default="runs/instance_aware", help="folder for report.json and the plots")
    a = p.parse_args(argv)
    bandit = InstaNASBandit(a.dataset, split="test", data_root=a.data_root, supernet=a.supernet,
                            latency_table=a.latency_table, threads=a.threads)
    names, masks = zip(*probe_masks(bandit.table, seed=0))
    masks = np.stack(masks)
    policy, controller_ms, what = build_policy(a, bandit, masks)
    report = instance_awareness(policy, bandit, masks, controller_ms=controller_ms, limit=a.limit)
    report["family_names"] = family_names(bandit, names, masks, report["family_masks"])
    report["policy"] = what
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(jsonable(report)))
    instance_aware_plot(report, out / "instance_aware.png")
    hardest_easiest_plot(bandit.data.images[: report["images"]], report["loss"], report["arch"], report["labels"],
                         out / "hardest_easiest.png")
    print_summary(report, what)
    return report


if __name__ == "__main__":
    main()
