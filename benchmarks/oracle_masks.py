"""How much could per-image mask choice pay? An oracle over masks near a search's greedy mask.

    python benchmarks/oracle_masks.py runs/search_A2 [--masks 12] [--flip 0.05] [--limit N]

On the test split, with the searched supernet: the accuracy of the controller's greedy mask (the
mask of the first test image; searches that collapse use one mask for all), then of ``--masks``
masks with a share ``--flip`` of its bits flipped (their LUT latency of the 17 cells beside), and of
an oracle that picks, per image, any of these masks that classifies it right. The oracle reads the
labels, so it is an upper bound on what instance-aware choice among these masks could reach, not a
result a controller can get.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from instanas_gym.agents.policy import controller_policy
from instanas_gym.agents.search import load_search
from instanas_gym.envs.bandit import InstaNASBandit
from instanas_gym.model.outcomes import correct_per_image
from instanas_gym.space.data import ImageSet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="a finished search (instanas-gym search --out)")
    p.add_argument("--masks", type=int, default=12, help="perturbed masks")
    p.add_argument("--flip", type=float, default=0.05, help="share of the 85 bits flipped per mask")
    p.add_argument("--limit", type=int, default=None, help="first N test images only")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model, controller, cfg = load_search(a.folder)
    bandit = InstaNASBandit(cfg.get("dataset", "fashion_mnist"), "test", supernet=model,
                            latency_table=cfg.get("latency_table"), data_root=cfg.get("data_root"))
    n = bandit.num_images if a.limit is None else min(a.limit, bandit.num_images)
    data = ImageSet(bandit.data.images[:n], bandit.data.labels[:n], bandit.data.spec, "test", bandit.data.source)
    greedy = controller_policy(controller)(bandit.data.images[:1])[0].astype(bool)
    rng = np.random.default_rng(a.seed)
    masks = [greedy] + [greedy ^ (rng.random(greedy.shape) < a.flip) for _ in range(a.masks)]
    right = np.stack([correct_per_image(model, data, m.astype(np.uint8), batch_size=500) for m in masks])

    table = Table(title=f"{a.folder}: greedy mask and {a.masks} masks with {a.flip:.0%} of bits flipped, {n} test images")
    for col in ("mask", "LUT cells (ms)", "test acc (%)"):
        table.add_column(col, justify="right")
    for i, (m, r) in enumerate(zip(masks, right)):
        table.add_row("greedy" if i == 0 else f"flipped {i}", f"{bandit.table.cells_ms(m.astype(np.uint8)):.3f}",
                      f"{100 * r.mean():.2f}")
    table.add_row("oracle over all", "-", f"{100 * right.any(0).mean():.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
