"""Where an eval forward pass of the supernet spends its time, under per-image masks vs one shared mask.

    python benchmarks/profile_supernet.py --batch 32 --threads 1 --fold-bn --channels-last

Prints ms per forward pass (dynamic execution) for per-image masks of the chosen family and for
the MobileNetV2 path given to every image (same MACs as one op per cell), then torch.profiler's
table of the ops that took the most time under the per-image masks.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from timing import rate
from torch.profiler import profile

from instanas_gym.model.batchnorm import fold_batchnorm
from instanas_gym.model.checkpoint import load_supernet
from instanas_gym.space.masks import mobilenetv2_mask, one_op_masks, random_masks
from instanas_gym.utils.paths import BUNDLED_SUPERNET
from instanas_gym.utils.runtime import tune_allocator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--supernet", default=str(BUNDLED_SUPERNET))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--masks", choices=("one_op", "bernoulli"), default="one_op")
    p.add_argument("--fold-bn", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--seconds", type=float, default=2.0, help="timing per mask kind (s)")
    a = p.parse_args()
    tune_allocator()
    torch.set_num_threads(a.threads)
    model, _ = load_supernet(a.supernet)
    model = fold_batchnorm(model) if a.fold_bn else model.eval()
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
    rng = np.random.default_rng(0)
    x = torch.rand(a.batch, model.space.in_channels, model.space.input_size, model.space.input_size)
    per_image = one_op_masks(rng, a.batch) if a.masks == "one_op" else random_masks(rng, a.batch, 0.5)
    masks = {a.masks: torch.from_numpy(per_image).bool(), "MobileNetV2 path": torch.from_numpy(
        np.broadcast_to(mobilenetv2_mask(), per_image.shape).copy()).bool()}
    with torch.inference_mode():
        for name, m in masks.items():
            ms = 1000 / rate(lambda: model(x, m), 1, a.seconds)
            print(f"{name}: {ms:.2f} ms per forward pass of {a.batch} images")
        with profile() as prof:
            for _ in range(20):
                model(x, masks[a.masks])
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
