"""The time of ``instanas-gym prepare`` at its default (paper-scale) budget, estimated from what this
machine measures: CPU images/s of the trainer's sandwich step and the MACs of the networks it trains.

    python benchmarks/prepare_estimate.py --threads 1 --steps 6
    python benchmarks/prepare_estimate.py --dataset cifar100 --gpu-tflops 2 8

Measures, on a synthetic CIFAR in the real layout (``instanas_gym.testing``; speed does not depend
on the pixels), with the settings ``prepare`` trains with (width 1.0, batch 128, sandwich rule with
distillation, channels_last, fp32, CPU):

* images/s of ``--steps`` trainer steps (after 2 warm-up steps), and the multiply-accumulates per
  image of the sandwich members those steps ran (all ops, the smallest network, 2 random ones);
* ms per mask of the ONNX Runtime table (export, building its InferenceSession, ``prepare``'s 30 timed runs) on 5 masks.

Prints the arithmetic: training FLOPs per image = sum over members of 3 (forward + backward) x 2 x
MACs; the CPU's effective FLOP/s follows from the measured images/s; each stage's CPU time from
the measured rates, and its GPU time from the FLOPs at each ``--gpu-tflops`` *assumed* effective
rate (not a measurement: no GPU here). The table stage runs on the CPU on every machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from instanas_gym.latency.onnx import measure_onnx_masks
from instanas_gym.space.data import DataConfig
from instanas_gym.space.masks import sandwich_masks, spread_masks
from instanas_gym.training.config import PrepareConfig, TrainConfig
from instanas_gym.training.trainer import SupernetTrainer
from instanas_gym.utils.run import RunConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.fixtures import skip_cifar_checksums, write_cifar  # noqa: E402  (data in CIFAR's real layout)

TRAIN_IMAGES = 50_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="cifar10", choices=("cifar10", "cifar100"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--gpu-tflops", type=float, nargs="+", default=[1.0, 5.0],
                    help="assumed effective TFLOP/s of the GPU on these small depthwise networks")
    args = ap.parse_args()
    prep = PrepareConfig(args.dataset)  # the defaults: epochs, frozen epochs, batch, width, table budget
    with tempfile.TemporaryDirectory() as tmp:
        n = prep.batch_size * (args.steps + 2)
        write_cifar(tmp, args.dataset, n_train=n, n_test=10)
        cfg = TrainConfig(dataset=args.dataset, data=DataConfig(tmp), width_mult=prep.width_mult,
                          batch_size=prep.batch_size, mask_sampling="sandwich", sandwich_random=prep.sandwich_random,
                          run=RunConfig(threads=args.threads, device="cpu", out=f"{tmp}/run"))
        with skip_cifar_checksums():
            t = SupernetTrainer(cfg, Console(quiet=True))
        t.net.train()
        state = t.mask_rng.bit_generator.state
        members = [m for _ in range(args.steps) for m in sandwich_masks(t.mask_rng, t.smallest, prep.sandwich_random)]
        t.mask_rng.bit_generator.state = state  # the steps below draw these same members
        space = t.model.space
        order = torch.randperm(n)
        for b in range(2):
            t.train_step(order[b * prep.batch_size:(b + 1) * prep.batch_size], b)
        t.mask_rng.bit_generator.state = state
        t0 = time.perf_counter()
        for b in range(2, args.steps + 2):
            t.train_step(order[b * prep.batch_size:(b + 1) * prep.batch_size], b)
        ips = args.steps * prep.batch_size / (time.perf_counter() - t0)
        macs = np.array([space.macs(m) for m in members], dtype=float).reshape(args.steps, -1).sum(1).mean()
        masks = space.effective_mask(spread_masks(np.random.default_rng(0), 5))
        t1 = time.perf_counter()
        measure_onnx_masks(t.model.eval(), masks, 1, prep.table_repeats)
        mask_s = (time.perf_counter() - t1) / len(masks)
    flops = 3 * 2 * macs  # per training image, all members
    print(f"{args.dataset}, width {prep.width_mult}, batch {prep.batch_size}, {args.threads} CPU thread(s) "
          f"({torch.get_num_threads()} torch threads), {time.strftime('%Y-%m-%d')}")
    print(f"measured: sandwich step {ips:.1f} img/s; members' MACs per image {macs / 1e6:.0f} M "
          f"-> training FLOPs per image 3 x 2 x {macs / 1e6:.0f} M = {flops / 1e9:.2f} GFLOP; "
          f"CPU effective {ips * flops / 1e9:.1f} GFLOP/s")
    print(f"measured: ONNX Runtime table {mask_s:.2f} s per mask (export + InferenceSession + {prep.table_repeats} runs)")
    images = {"supernet": prep.epochs * TRAIN_IMAGES, "frozen": prep.frozen_epochs * TRAIN_IMAGES}
    for stage, imgs in images.items():
        cpu_h = imgs / ips / 3600
        gpu = ", ".join(f"{imgs * flops / (tf * 1e12) / 3600:.1f} h at {tf:g} TFLOP/s" for tf in args.gpu_tflops)
        print(f"{stage}: {imgs:,} images x {flops / 1e9:.2f} GFLOP = {imgs * flops:.2e} FLOP; "
              f"CPU {cpu_h:.0f} h at {ips:.1f} img/s; GPU (assumed rates) {gpu}")
    table_masks = prep.table_passes + prep.validate_masks
    print(f"table: ({prep.table_passes} + {prep.validate_masks}) masks x {mask_s:.2f} s = "
          f"{table_masks * mask_s / 60:.0f} min on the CPU (any machine)")


if __name__ == "__main__":
    main()
