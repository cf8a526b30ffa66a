"""Masked vs dynamic execution of the supernet: img/s side by side, against the ideal from MACs.

    python benchmarks/bench_supernet.py [--supernet PATH] [--threads 2] [--seconds 3]
    python benchmarks/bench_supernet.py --width 1.0     # an untrained supernet of another width
    python benchmarks/bench_supernet.py --fold-bn       # eval rows on the BatchNorm-folded copy
    python benchmarks/bench_supernet.py --workers 2     # eval rows also on a 2-process ProcessPool

For each mask family (MobileNetV2 path, one random op per cell, Bernoulli(0.5) per image), batch
size (1, 64) and phase (eval forward, training step) it prints img/s of both modes, the measured
speed-up dynamic/masked, and the ideal speed-up: MACs of all ops (what masked runs) over MACs of the
masks (what dynamic runs). Target: dynamic >= 0.8 x ideal at batch 64, and never slower than masked.

With ``--workers N`` every batch-64 row is also timed on N single-thread processes: eval rows on an
``instanas_gym.model.parallel.ProcessPool``, training rows under DistributedDataParallel (``ddp_timing.py``).
The speed-up then compares each mode's faster way of using the cores (intra-op threads or
processes), so neither mode is judged by the set-up that suits it worse.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from ddp_timing import ddp_train_rates
from rich.console import Console
from rich.table import Table
from timing import interleaved_rates

from instanas_gym.model.batchnorm import fold_batchnorm
from instanas_gym.model.checkpoint import load_supernet
from instanas_gym.model.parallel import ProcessPool
from instanas_gym.model.supernet import Supernet
from instanas_gym.space.data import get_spec
from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask, one_op_masks, random_masks
from instanas_gym.space.search_space import SearchSpace
from instanas_gym.utils.paths import BUNDLED_SUPERNET
from instanas_gym.utils.runtime import allocator, tune_allocator


def pooled(pool: ProcessPool, x: torch.Tensor, masks: torch.Tensor):
    """One eval forward of the batch spread over ``pool``'s processes."""
    return lambda: pool(x, masks)


def step(model, mode: str, phase: str, x: torch.Tensor, masks: torch.Tensor, y: torch.Tensor):
    """One eval forward or one training step of ``model`` in execution ``mode``."""

    def fn() -> None:
        model.mode = mode
        if phase == "eval":
            with torch.inference_mode():
                model(x, masks)
        else:
            loss = F.cross_entropy(model(x, masks), y)
            model.zero_grad(set_to_none=True)
            loss.backward()

    return fn


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--supernet", default=str(BUNDLED_SUPERNET))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=3.0, help="timing per mode and row of the table (s)")
    p.add_argument("--channels-last", action="store_true", help="run the model in channels_last")
    p.add_argument("--fold-bn", action="store_true",
                   help="run the eval rows of both modes on fold_batchnorm(supernet) (training rows keep BatchNorm)")
    p.add_argument("--workers", type=int, default=0,
                   help="also time the batch-64 rows on this many 1-thread processes: ProcessPool (eval), DDP (train); 0: don't")
    p.add_argument("--width", type=float, default=None,
                   help="time an untrained Fashion-MNIST-shaped supernet of this width instead (speed does not "
                        "depend on the weights)")
    a = p.parse_args()
    tune_allocator()
    torch.set_num_threads(a.threads)
    if a.width is None:
        model, _ = load_supernet(a.supernet)
    else:
        spec = get_spec("fashion_mnist")
        model = Supernet(SearchSpace(a.width, 28, 1, spec.num_classes), spec.mean, spec.std)
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    folded = fold_batchnorm(model).to(memory_format=fmt) if a.fold_bn else model
    space = model.space
    rng = np.random.default_rng(0)
    all_macs = space.macs(all_ops_mask())
    pools = {mode: ProcessPool(folded, a.workers, mode=mode) for mode in ("masked", "dynamic")} if a.workers else {}
    table = Table(title=f"supernet execution, width {space.width_mult}, {a.threads} threads"
                        f"{', channels_last' if a.channels_last else ''}{', eval BatchNorm-folded' if a.fold_bn else ''}, allocator {allocator()} (img/s, median of 5 alternating rounds)")
    pool_cols = (f"masked, {a.workers} proc", f"dynamic, {a.workers} proc") if a.workers else ()
    for col in ("masks", "batch", "phase", "masked", "dynamic", *pool_cols, "speed-up", "ideal", "of ideal"):
        table.add_column(col, justify="right")
    families = {
        "MobileNetV2 path": lambda b: np.broadcast_to(mobilenetv2_mask(), (b, 17, 5)),
        "one op per cell": lambda b: one_op_masks(rng, b),
        "Bernoulli(0.5)": lambda b: random_masks(rng, b, 0.5),
    }
    rows = []  # (family, batch, images, masks, labels), drawn in table order
    for name, make in families.items():
        for batch in (1, 64):
            masks = torch.from_numpy(np.array(make(batch), dtype=bool))
            x = torch.rand(batch, space.in_channels, space.input_size, space.input_size).contiguous(memory_format=fmt)
            rows.append((name, batch, x, masks, torch.randint(0, space.num_classes, (batch,))))
    ddp = ddp_train_rates(model, {r[0]: r[2:] for r in rows if r[1] == 64}, a.workers, a.seconds) if a.workers else {}
    for name, batch, x, masks, y in rows:
        ideal = all_macs / float(np.mean(space.macs(masks.numpy())))
        for phase in ("eval", "train"):
            net = model.train() if phase == "train" else folded.eval()
            fns = {mode: step(net, mode, phase, x, masks, y) for mode in ("masked", "dynamic")}
            if phase == "eval":
                fns |= {f"{mode} pool": pooled(pool, x, masks) for mode, pool in pools.items()}
            speeds = interleaved_rates(fns, batch, a.seconds)
            if phase == "train" and batch == 64:
                speeds |= {f"{mode} pool": v for mode, v in ddp.get(name, {}).items()}
            best = {mode: max(v for k, v in speeds.items() if k.startswith(mode)) for mode in ("masked", "dynamic")}
            up = best["dynamic"] / best["masked"]
            procs = [f"{speeds[k]:.0f}" if k in speeds else "-" for k in ("masked pool", "dynamic pool")]
            table.add_row(name, str(batch), phase, f"{speeds['masked']:.0f}", f"{speeds['dynamic']:.0f}",
                          *procs[: len(pool_cols)], f"{up:.2f}x", f"{ideal:.2f}x", f"{up / ideal:.2f}")
    for pool in pools.values():
        pool.close()
    Console().print(table)


if __name__ == "__main__":
    main()
