"""Quality of a supernet's architectures, and the training cost of the sandwich rule.

    python benchmarks/bench_supernet_quality.py [--supernet PATH] [--threads 1] [--json out.json]
    python benchmarks/bench_supernet_quality.py --limit 2000 --train-seconds 0   # 2,000 test images, no timing

Scores the probe set of ``instanas_gym.space.family.probe_masks`` (fixed, seeded: MobileNetV2 path, all
ops, basic-block-only, the fastest valid mask, single-op and Bernoulli masks) on the test split, each
mask once with the shared BatchNorm statistics and once with statistics re-estimated for that mask
alone on ``--recal-batches`` training batches (``sandwich.recalibrate_bn``, as Once-for-All does).
Rows are sorted by the latency table's network ms (batch 1).

Beside the probes: per-image Bernoulli(0.5) masks (every op kept with p = 0.5, at least one per
cell, a new mask per image, shared statistics: what the environment runs), and with
``--alone-epochs E`` two networks trained alone on the same training images for E epochs, the
floor and the ceiling of a sub-network: the MobileNetV2 w0.25 path (``instanas-gym train-supernet
--mask-sampling mobilenetv2``) and a controller-sized CNN (the demo controller's 8/16/32-channel
body on 14 x 14, 0.65 MMACs, with a 10-way linear head; SGD lr 0.1 cosine, the same augmentation).
The targets are checked at the end, with the shared statistics.

Training cost: images/s of one sandwich step (all ops, the smallest network and ``--sandwich-random``
random ones, in-place distillation, one SGD step) against a single-path step (one random op per
cell for the whole batch, cross-entropy, one SGD step), alternated in one run on a copy of the
supernet in channels_last, as the trainer runs it. Both count the training images consumed per second.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timing import interleaved_rates

from instanas_gym.agents.controller import ControllerConfig
from instanas_gym.latency import LatencyTable
from instanas_gym.model.batchnorm import recalibrate_bn
from instanas_gym.model.checkpoint import load_supernet
from instanas_gym.model.supernet import Supernet
from instanas_gym.space.data import ImageSet, augment, load_split
from instanas_gym.space.family import probe_masks
from instanas_gym.space.masks import fastest_mask, mac_costs, one_op_masks, random_masks, sandwich_masks
from instanas_gym.training import TrainConfig, train_supernet
from instanas_gym.training.evaluation import evaluate
from instanas_gym.training.sandwich import sandwich_step
from instanas_gym.utils.paths import BUNDLED_LATENCY_TABLE, BUNDLED_SUPERNET
from instanas_gym.utils.runtime import tune_allocator

#: The controller-sized CNN's body (the demo controller's).
CNN_BODY = ControllerConfig(widths=(8, 16, 32), input_size=14)


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


def train_cnn_alone(train: ImageSet, test: ImageSet, epochs: int, seed: int) -> float:
    """Test accuracy (fraction) of the controller-sized CNN trained alone for ``epochs`` epochs."""
    torch.manual_seed(seed)
    body = CNN_BODY.build(train.spec.image_shape[2])
    head = torch.nn.Linear(CNN_BODY.widths[-1], train.spec.num_classes)
    params = [*body.parameters(), *head.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=4e-5)
    images, labels = train.tensors()
    steps, gen = epochs * math.ceil(len(images) / 128), torch.Generator().manual_seed(seed)
    body.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = 0.05 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randint(0, len(images), (128,), generator=gen)
        x = augment(images[idx], train.spec, gen)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(head(body.embed(x)), labels[idx]).backward()
        optimizer.step()
    body.eval()
    x, y = test.tensors()
    with torch.inference_mode():
        right = sum(int((head(body.embed(x[i:i + 512])).argmax(1) == y[i:i + 512]).sum()) for i in range(0, len(y), 512))
    return right / len(y)


def trained_alone(dataset: str, train: ImageSet, test: ImageSet, a: argparse.Namespace) -> dict:
    """Test accuracies (fractions) of the MobileNetV2 path and the controller-sized CNN, each trained
    alone for ``--alone-epochs`` epochs on the training split."""
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(dataset=dataset, data_root=a.data_root, mask_sampling="mobilenetv2", epochs=a.alone_epochs,
                          threads=a.threads, seed=a.seed, out=out, eval_subset=a.limit)
        mbv2 = train_supernet(cfg)["test_acc_mobilenetv2"]
    return {"epochs": a.alone_epochs, "mobilenetv2_alone": mbv2,
            "cnn_alone": train_cnn_alone(train, test, a.alone_epochs, a.seed)}


def check_targets(rows: list[dict], per_image: float, alone: dict | None) -> list[tuple[str, bool]]:
    """The targets, with the shared statistics: (description with the figure, met)."""
    by = {r["name"]: r["acc_shared"] for r in rows}
    big = [r for r in rows if r["macs"] >= 8e6]
    worst = min(big, key=lambda r: r["acc_shared"])
    out = [
        (f"MobileNetV2 path {100 * by['mobilenetv2']:.2f}% >= 90.0%", by["mobilenetv2"] >= 0.90),
        (f"all ops {100 * by['all_ops']:.2f}% >= 92.0%", by["all_ops"] >= 0.92),
        (f"every probe of >= 8 MMACs >= 88.0% (worst: {worst['name']} {100 * worst['acc_shared']:.2f}%)",
         worst["acc_shared"] >= 0.88),
        (f"per-image Bernoulli(0.5) masks {100 * per_image:.2f}% >= 90.0%", per_image >= 0.90),
    ]
    if alone:
        out.append((f"every probe of >= 8 MMACs beats the CNN trained alone ({100 * alone['cnn_alone']:.2f}%)",
                    worst["acc_shared"] > alone["cnn_alone"]))
    return out


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
    """The probe table, 80 columns at most (targets and references are printed by ``main``)."""
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
    p.add_argument("--alone-epochs", type=int, default=0,
                   help="train MobileNetV2 and the controller-sized CNN alone for this many epochs (0: skip)")
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
    rng = np.random.default_rng(a.seed)
    per_image = evaluate(model, test, lambda n: random_masks(rng, n, 0.5, min_ops=1), a.batch_size)
    training = training_rates(model, train, a) if a.train_seconds > 0 else None
    alone = trained_alone(dataset, train, test, a) if a.alone_epochs > 0 else None
    print_table(rows, training, f"{Path(a.supernet).name}: {len(test)} test images, BN re-estimated on "
                                f"{a.recal_batches} x {a.recal_batch_size} training images, {a.threads} thread(s)")
    print(f"per-image Bernoulli(0.5) masks, shared BN: {100 * per_image:.2f}%")
    if alone:
        print(f"trained alone for {alone['epochs']} epochs: MobileNetV2 w0.25 {100 * alone['mobilenetv2_alone']:.2f}%, "
              f"controller-sized CNN {100 * alone['cnn_alone']:.2f}%")
    targets = check_targets(rows, per_image, alone)
    for text, met in targets:
        print(f"  [{'met' if met else 'MISSED'}] {text}")
    if a.json:
        out = {"supernet": a.supernet, "latency_table": a.latency_table, "dataset": dataset, "seed": a.seed,
               "test_images": len(test), "recal_batches": a.recal_batches, "recal_batch_size": a.recal_batch_size,
               "threads": a.threads, "probes": rows, "per_image_bernoulli_0.5": per_image, "alone": alone,
               "training": training, "targets": [{"target": t, "met": m} for t, m in targets]}
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
