"""Quality of a supernet's architectures against issue 30's targets, and the training cost of the sandwich rule.

    python benchmarks/bench_supernet_quality.py [--supernet PATH] [--teacher PATH] [--family FILE] [--json out.json]
    python benchmarks/bench_supernet_quality.py --limit 2000 --train-seconds 0   # 2,000 test images, no timing

Scores on the test split, each architecture run alone, once with the shared BatchNorm statistics
(what the per-image masks run with) and once with statistics of its own
(:class:`instanas_gym.model.own_statistics.OwnStatistics`: ``--recal-batches`` batches of
``--recal-batch-size`` training images of the environment's learning split, kept beside the supernet,
where the environment's family view with ``env.bn_statistics="own"`` reads them):

* the teacher (``--teacher``: a checkpoint, its architecture ``--teacher-mask`` or the one it was
  trained on alone, as ``train-supernet --teacher`` chooses it);
* the probe set of ``instanas_gym.space.family.probe_masks`` (fixed, seeded: MobileNetV2 path, all
  ops, basic-block-only, the fastest valid mask by the latency table, single-op and Bernoulli masks);
* the family (``--family``: a family or router file; default the bundled family);
* per-image Bernoulli(0.5) masks (every op kept with p = 0.5, at least one per cell, a new mask per
  image, shared statistics: what the environment runs).

The answers come from the supernet's outcomes store (:class:`instanas_gym.model.outcomes.OutcomeStore`,
files beside the checkpoint), so a second run reads them. The frontier's span, per statistics: the
most accurate single architecture (probes, family and the five one-op-everywhere paths) minus the
fastest one above 85% by the latency table (default: the environment's, ONNX Runtime).

Targets (issue 30; 10,000 test images), each printed met or missed with the gap in points:
MobileNetV2 path >= 90% and all ops >= 92.5% (shared statistics); per-image Bernoulli(0.5) masks
>= 90%; every family arm and every probe of >= 8 MMACs >= 88% (own statistics); span >= 4 points.

Training cost (``--train-seconds`` > 0): images/s of a sandwich step (all ops, the smallest network
and ``--sandwich-random`` random ones, in-place distillation, one SGD step), of the same step
distilled from the fixed teacher (its forward included) when ``--teacher`` is given, and of a
single-path step (one random op per cell, cross-entropy), alternated in one run on a copy of the
supernet in channels_last, as the trainer runs them.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timing import interleaved_rates

from instanas_gym.agents.router_file import resolve_family
from instanas_gym.latency.table import LatencyTable
from instanas_gym.model.checkpoint import load_checkpoint, load_supernet
from instanas_gym.model.outcomes import OutcomeStore
from instanas_gym.model.own_statistics import OwnStatistics
from instanas_gym.model.supernet import Supernet
from instanas_gym.space.data import ImageSet, augment, load_split, statistics_split
from instanas_gym.space.family import probe_masks
from instanas_gym.space.masks import (
    fastest_mask,
    fixed_architectures,
    mac_costs,
    one_op_masks,
    random_masks,
    sandwich_masks,
)
from instanas_gym.training.evaluation import evaluate
from instanas_gym.training.sandwich import sandwich_step
from instanas_gym.training.teacher import teacher_mask
from instanas_gym.utils.files import FileFormatError
from instanas_gym.utils.paths import BUNDLED_SUPERNET, default_latency_table
from instanas_gym.utils.runtime import tune_allocator

#: Accuracy (fraction) above which an architecture counts for the frontier's span.
SPAN_FLOOR = 0.85


def score(model: Supernet, checkpoint: str, named: list[tuple[str, str, np.ndarray]], table: LatencyTable | None,
          test: ImageSet, a: argparse.Namespace) -> list[dict]:
    """One row per (group, name, mask): LUT ms (None without a table), MACs, test accuracy (0-1) with
    the shared and with its own statistics, from the checkpoint's outcomes stores."""
    train = load_split(test.spec.name, statistics_split(test.spec.name), a.data_root)
    own = OwnStatistics(model, checkpoint, train, a.recal_batches, a.recal_batch_size, a.seed)
    masks = np.stack([m for _, _, m in named])
    acc = {}
    for statistics, extra in (("shared", {}), ("own", {"own": own})):
        store = OutcomeStore(model, checkpoint, test, statistics, batch_size=a.batch_size, **extra)
        acc[statistics] = store.get(masks, len(test)).correct.mean(1)
    return [{"group": group, "name": name, "mask": mask.tolist(),
             "lut_ms": None if table is None else round(float(table.network_ms(mask)), 4),
             "macs": int(model.space.macs(mask)), "acc_shared": float(acc["shared"][i]), "acc_own": float(acc["own"][i])}
            for i, (group, name, mask) in enumerate(named)]


def teacher_rows(a: argparse.Namespace, table: LatencyTable, test: ImageSet) -> list[dict]:
    """The teacher's row (its own latency table does not apply to another width: ms None then)."""
    if not a.teacher:
        return []
    model, ckpt = load_supernet(a.teacher)
    mask = teacher_mask(load_checkpoint(a.teacher), a.teacher_mask)
    try:
        table.check(model.space, a.latency_table)
        fits = True
    except FileFormatError:  # another width: the table does not describe it
        fits = False
    return score(model, a.teacher, [("teacher", f"teacher ({ckpt['dataset']}, w{model.space.width_mult})", mask)],
                 table if fits else None, test, a)


def span(rows: list[dict], key: str) -> dict:
    """The frontier's span with statistics ``key`` ("acc_shared" / "acc_own"): the most accurate
    architecture's accuracy minus that of the fastest one (by LUT ms) above :data:`SPAN_FLOOR`."""
    best = max(rows, key=lambda r: r[key])
    above = [r for r in rows if r[key] > SPAN_FLOOR]
    if not above:
        return {"span": float("nan"), "best": best["name"], "fastest": None}
    fastest = min(above, key=lambda r: r["lut_ms"])
    return {"span": best[key] - fastest[key], "best": best["name"], "best_acc": best[key],
            "fastest": fastest["name"], "fastest_acc": fastest[key], "fastest_ms": fastest["lut_ms"]}


def check_targets(rows: list[dict], per_image: float, spans: dict[str, dict]) -> list[dict]:
    """Issue 30's targets: each with the measured figure, the target, whether met and the gap (points)."""
    by = {r["name"]: r for r in rows if r["group"] == "probe"}
    alone = [r for r in rows if r["group"] == "family" or (r["group"] == "probe" and r["macs"] >= 8e6)]
    worst = min(alone, key=lambda r: r["acc_own"])
    out = [("MobileNetV2 path, shared statistics", 100 * by["mobilenetv2"]["acc_shared"], 90.0),
           ("all ops, shared statistics", 100 * by["all_ops"]["acc_shared"], 92.5),
           ("per-image Bernoulli(0.5) masks, shared statistics", 100 * per_image, 90.0),
           (f"every family arm and probe of >= 8 MMACs, own statistics (worst: {worst['group']} {worst['name']})",
            100 * worst["acc_own"], 88.0)]
    out += [(f"frontier span, {s} statistics ({v['best']} minus {v['fastest']})", 100 * v["span"], 4.0)
            for s, v in spans.items()]
    return [{"target": t, "measured": m, "needed": n, "met": bool(m >= n), "gap_points": m - n} for t, m, n in out]


def training_rates(model: Supernet, train: ImageSet, teacher: tuple[Supernet, np.ndarray] | None,
                   a: argparse.Namespace) -> dict:
    """img/s of a single-path step, a sandwich step and (with a teacher) a teacher-distilled sandwich step."""
    net = copy.deepcopy(model).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    rng, gen = np.random.default_rng(a.seed), torch.Generator().manual_seed(a.seed)
    images, labels = train.tensors()
    smallest = fastest_mask(*mac_costs(net.space))

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, len(images), (a.train_batch,), generator=gen)
        return augment(images[idx], train.spec, gen).contiguous(memory_format=torch.channels_last), labels[idx]

    def single_path() -> None:
        x, y = batch()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(x, torch.from_numpy(one_op_masks(rng, 1)[0]).bool()), y).backward()
        optimizer.step()

    def sandwich(distilled: bool = False) -> None:
        x, y = batch()
        optimizer.zero_grad(set_to_none=True)
        soft = None
        if distilled and teacher is not None:
            with torch.no_grad():
                soft = teacher[0](x, torch.from_numpy(teacher[1]).bool())
        sandwich_step(net, x, y, sandwich_masks(rng, smallest, a.sandwich_random), teacher=soft)
        optimizer.step()

    fns = {"single_path": single_path, "sandwich": sandwich}
    if teacher is not None:
        teacher[0].to(memory_format=torch.channels_last).eval()
        fns["sandwich_teacher"] = lambda: sandwich(True)
    rates = interleaved_rates(fns, a.train_batch, a.train_seconds)
    return {"batch_size": a.train_batch, "sandwich_networks": 2 + a.sandwich_random,
            **{f"{k}_img_s": v for k, v in rates.items()}}


def print_report(rows: list[dict], per_image: float, spans: dict, targets: list[dict], training: dict | None,
                 header: str) -> None:
    """The table (80 columns), the spans, the targets and the training rates."""
    print(header)
    print(f"{'group':<8}{'architecture':<22}{'LUT ms':>8}{'MMACs':>8}{'shared':>10}{'own':>10}{'gain':>8}")
    for r in sorted(rows, key=lambda r: (r["group"], r["lut_ms"] if r["lut_ms"] is not None else -1)):
        ms = "-" if r["lut_ms"] is None else f"{r['lut_ms']:.3f}"
        shared, own = 100 * r["acc_shared"], 100 * r["acc_own"]
        print(f"{r['group']:<8}{r['name'][:21]:<22}{ms:>8}{r['macs'] / 1e6:>8.2f}{shared:>9.2f}%{own:>9.2f}%"
              f"{own - shared:>+8.2f}")
    print(f"per-image Bernoulli(0.5) masks, shared statistics: {100 * per_image:.2f}%")
    for s, v in spans.items():
        print(f"frontier span, {s} statistics: {100 * v['span']:.2f} points ({v['best']} "
              f"{100 * v.get('best_acc', float('nan')):.2f}% minus {v['fastest']} "
              f"{100 * v.get('fastest_acc', float('nan')):.2f}% at {v.get('fastest_ms')} ms)")
    for t in targets:
        print(f"  [{'met' if t['met'] else 'MISSED'}] {t['target']}: {t['measured']:.2f} vs >= {t['needed']:.1f} "
              f"({t['gap_points']:+.2f} points)")
    if training:
        rates = ", ".join(f"{k[:-6]} {v:.0f} img/s" for k, v in training.items() if k.endswith("_img_s"))
        print(f"training, batch {training['batch_size']}, {training['sandwich_networks']} networks per sandwich step: "
              f"{rates}")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--supernet", default=None, help="checkpoint (default: the bundled supernet)")
    p.add_argument("--teacher", default=None, help="the teacher's checkpoint (train-supernet --teacher)")
    p.add_argument("--teacher-mask", default=None, help="mask file of the teacher's architecture")
    p.add_argument("--family", default=None, help="family or router file (default: the bundled family)")
    p.add_argument("--latency-table", default=None, help="default: the environment's (ONNX Runtime) table")
    p.add_argument("--data-root", default=None, help="Fashion-MNIST root (default: Debian's package, else bundled)")
    p.add_argument("--seed", type=int, default=0, help="of the per-image masks and the statistics' batches")
    p.add_argument("--limit", type=int, default=None, help="score on the first N test images only")
    p.add_argument("--recal-batches", type=int, default=20)
    p.add_argument("--recal-batch-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=256, help="evaluation batch")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-batch", type=int, default=128)
    p.add_argument("--sandwich-random", type=int, default=2)
    p.add_argument("--train-seconds", type=float, default=0.0, help="timing per contender (s); 0: skip")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return p.parse_args()


def main() -> None:
    a = parse()
    tune_allocator()
    torch.set_num_threads(a.threads)
    a.supernet = a.supernet or str(BUNDLED_SUPERNET)
    model, ckpt = load_supernet(a.supernet)
    dataset = ckpt["dataset"]
    a.latency_table = a.latency_table or str(default_latency_table(dataset))
    table = LatencyTable.load(a.latency_table, model.space)
    test = load_split(dataset, "test", a.data_root)
    if a.limit:
        test = ImageSet(test.images[: a.limit], test.labels[: a.limit], test.spec, "test", test.source)
    family, family_file = resolve_family(a.family, dataset)
    named = [("probe", n, m) for n, m in probe_masks(table, 0)]
    named += [("family", n, m) for n, m in zip(family.names or [f"arm {i}" for i in range(family.k)], family.masks)]
    named += [("path", n, m) for n, m in fixed_architectures().items() if n not in ("MobileNetV2 path", "all ops")]
    rows = teacher_rows(a, table, test) + score(model, a.supernet, named, table, test, a)
    rng = np.random.default_rng(a.seed)
    per_image = evaluate(model, test, lambda n: random_masks(rng, n, 0.5, min_ops=1), a.batch_size)
    student = [r for r in rows if r["group"] != "teacher"]
    spans = {s: span(student, f"acc_{s}") for s in ("shared", "own")}
    targets = check_targets(rows, per_image, spans)
    training = None
    if a.train_seconds > 0:
        teacher = None if not a.teacher else (load_supernet(a.teacher)[0],
                                              teacher_mask(load_checkpoint(a.teacher), a.teacher_mask))
        training = training_rates(model, load_split(dataset, "train", a.data_root), teacher, a)
    print_report(rows, per_image, spans, targets, training,
                 f"{Path(a.supernet).name}: {len(test)} test images, own statistics on {a.recal_batches} x "
                 f"{a.recal_batch_size} training images, family {family_file.name}, {a.threads} thread(s)")
    if a.json:
        out = {"supernet": a.supernet, "teacher": a.teacher, "family": str(family_file), "latency_table": a.latency_table,
               "dataset": dataset, "seed": a.seed, "test_images": len(test), "recal_batches": a.recal_batches,
               "recal_batch_size": a.recal_batch_size, "threads": a.threads, "rows": rows,
               "per_image_bernoulli_0.5": per_image, "spans": spans, "targets": targets, "training": training}
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
