"""Quality of a supernet's architectures, and the training cost of the sandwich rule.

    python benchmarks/bench_supernet_quality.py [--supernet PATH] [--threads 1] [--json out.json]
    python benchmarks/bench_supernet_quality.py --limit 2000 --train-seconds 0   # 2,000 test images, no timing

Scores the probe set of ``instanas_gym.sandwich.probe_masks`` (fixed, seeded: MobileNetV2 path, all
ops, basic-block-only, the fastest valid mask, single-op and Bernoulli masks) on the test split, each
mask once with the shared BatchNorm statistics and once with statistics re-estimated for that mask
alone on ``--recal-batches`` training batches (``sandwich.recalibrate_bn``, as Once-for-All does).
Rows are sorted by the latency table's network ms (batch 1).

Training cost: images/s of one sandwich step (all ops, the smallest network and ``--sandwich-random``
random ones, in-place distillation, one SGD step) against a single-path step (one random op per
cell for the whole batch, cross-entropy, one SGD step), alternated in one run on a copy of the
supernet in channels_last, as the trainer runs it. Both count the training images consumed per second.
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

from instanas_gym.checkpoint import load_supernet
from instanas_gym.data import ImageSet, augment, load_split
from instanas_gym.latency import LatencyTable
from instanas_gym.paths import BUNDLED_LATENCY_TABLE, BUNDLED_SUPERNET
from instanas_gym.runtime import tune_allocator
from instanas_gym.samplers import one_op_masks
from instanas_gym.sandwich import fastest_mask, mac_costs, probe_masks, recalibrate_bn, sandwich_masks, sandwich_step
from instanas_gym.supernet import Supernet
from instanas_gym.training.evaluation import evaluate


def score_probes(
    model: Supernet, table: LatencyTable, train: ImageSet, test: ImageSet, a: argparse.Namespace
) -> list[dict]:
    """One row per probe mask: name, mask, LUT ms, MACs, test accuracy (0-1) shared / recalibrated BN."""
    rows = []
    for name, mask in probe_masks(table, a.seed):
        calibrated = recalibrate_bn(model, train, mask, a.recal_batches, a.recal_batch_size, a.seed)
        rows.append({
            "name": name,
            "mask": mask.tolist(),
            "lut_ms": round(float(table.network_ms(mask)), 4),
            "macs": int(model.space.macs(mask)),
            "acc_shared": evaluate(model, test, mask, a.batch_size),
            "acc_recal": evaluate(calibrated, test, mask, a.batch_size),
        })
        print(f"  {name}: {100 * rows[-1]['acc_shared']:.2f}% / {100 * rows[-1]['acc_recal']:.2f}%", flush=True)
    return sorted(rows, key=lambda r: r["lut_ms"])


def training_rates(model: Supernet, train: ImageSet, a: argparse.Namespace) -> dict:
    """img/s of a sandwich step and of a single-path step at ``--train-batch``, side by side."""
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

    def sandwich() -> None:
        x, y = batch()
        optimizer.zero_grad(set_to_none=True)
        sandwich_step(net, x, y, sandwich_masks(rng, smallest, a.sandwich_random))
        optimizer.step()

    rates = interleaved_rates({"single_path": single_path, "sandwich": sandwich}, a.train_batch, a.train_seconds)
    return {"batch_size": a.train_batch, "sandwich_networks": 2 + a.sandwich_random,
            "single_path_img_s": rates["single_path"], "sandwich_img_s": rates["sandwich"],
            "sandwich_over_single_path": rates["sandwich"] / rates["single_path"]}


def print_table(rows: list[dict], training: dict | None, header: str) -> None:
    """The probe table, 80 columns at most."""
    print(header)
    print(f"{'mask':<20}{'LUT ms':>8}{'MMACs':>8}{'shared BN':>11}{'recal. BN':>11}{'gain':>8}")
    for r in rows:
        shared, recal = 100 * r["acc_shared"], 100 * r["acc_recal"]
        print(f"{r['name']:<20}{r['lut_ms']:>8.3f}{r['macs'] / 1e6:>8.2f}{shared:>10.2f}%{recal:>10.2f}%"
              f"{recal - shared:>+8.2f}")
    if training:
        print(f"training, batch {training['batch_size']}: single-path step {training['single_path_img_s']:.0f} img/s, "
              f"sandwich step ({training['sandwich_networks']} networks)\n  {training['sandwich_img_s']:.0f} img/s "
              f"= {training['sandwich_over_single_path']:.2f}x the single-path rate")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--supernet", default=str(BUNDLED_SUPERNET))
    p.add_argument("--latency-table", default=str(BUNDLED_LATENCY_TABLE))
    p.add_argument("--data-root", default=None, help="Fashion-MNIST root (default: Debian's package, else bundled)")
    p.add_argument("--seed", type=int, default=0, help="of the probe masks and the recalibration batches")
    p.add_argument("--limit", type=int, default=None, help="score on the first N test images only")
    p.add_argument("--recal-batches", type=int, default=20)
    p.add_argument("--recal-batch-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=256, help="evaluation batch")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-batch", type=int, default=128)
    p.add_argument("--sandwich-random", type=int, default=2)
    p.add_argument("--train-seconds", type=float, default=20.0, help="timing per contender (s); 0: skip")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    a = p.parse_args()
    tune_allocator()
    torch.set_num_threads(a.threads)
    model, ckpt = load_supernet(a.supernet)
    table = LatencyTable.load(a.latency_table, model.space)
    dataset = ckpt["dataset"]
    train, test = load_split(dataset, "train", a.data_root), load_split(dataset, "test", a.data_root)
    if a.limit:
        test = ImageSet(test.images[: a.limit], test.labels[: a.limit], test.spec, "test", test.source)
    rows = score_probes(model, table, train, test, a)
    training = training_rates(model, train, a) if a.train_seconds > 0 else None
    print_table(rows, training, f"{Path(a.supernet).name}: {len(test)} test images, BN re-estimated on "
                                f"{a.recal_batches} x {a.recal_batch_size} training images, {a.threads} thread(s)")
    if a.json:
        out = {"supernet": a.supernet, "latency_table": a.latency_table, "dataset": dataset, "seed": a.seed,
               "test_images": len(test), "recal_batches": a.recal_batches, "recal_batch_size": a.recal_batch_size,
               "threads": a.threads, "probes": rows, "training": training}
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
