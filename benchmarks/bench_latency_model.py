"""Which latency model the ONNX Runtime table should fit: per (cell, op) costs plus a fixed cost, or
those plus per-cell terms (a cost wherever a cell runs an op, another where it runs two or more;
:func:`instanas_gym.latency.onnx.fit_costs`). Both are fitted on the same timed masks, in one run,
and checked on fresh masks, on the 18 probes, on the bundled family and cascade family, each by
sparsity (mean ops per cell).

    python benchmarks/bench_latency_model.py --passes 300 --fresh 150 --repeats 30

Pause background jobs while it runs (``kill -STOP``): it times the machine.
"""

from __future__ import annotations

import argparse

import numpy as np

from instanas_gym.latency.onnx import fit_costs, measure_onnx_masks
from instanas_gym.latency.table import LatencyTable
from instanas_gym.latency.validation import compare
from instanas_gym.model.checkpoint import load_supernet
from instanas_gym.space.family import load_family, probe_masks
from instanas_gym.space.masks import spread_masks
from instanas_gym.utils.paths import BUNDLED_CASCADE_FAMILY, BUNDLED_FAMILY, BUNDLED_SUPERNET, default_latency_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--supernet", default=str(BUNDLED_SUPERNET))
    p.add_argument("--passes", type=int, default=300, help="masks timed for the fits")
    p.add_argument("--fresh", type=int, default=150, help="fresh masks timed to check the fits")
    p.add_argument("--repeats", type=int, default=30, help="timed runs per mask (median)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    model, _ = load_supernet(a.supernet)
    space = model.space
    fit_masks = space.effective_mask(spread_masks(np.random.default_rng(0), a.passes))
    checks = {"fresh": space.effective_mask(spread_masks(np.random.default_rng(1), a.fresh)),
              "probes": space.effective_mask(np.stack([m for _, m in probe_masks(LatencyTable.load(
                  default_latency_table("fashion_mnist")), 0)]))}
    for name, path in (("family", BUNDLED_FAMILY), ("cascade family", BUNDLED_CASCADE_FAMILY)):
        if path.is_file():
            checks[name] = space.effective_mask(load_family(path).masks)
    measured = measure_onnx_masks(model, fit_masks, a.threads, a.repeats)
    timed = {name: measure_onnx_masks(model, m, a.threads, a.repeats) for name, m in checks.items()}
    for cell_terms in (False, True):
        ops, fixed, cells, merges = fit_costs(fit_masks, measured, cell_terms)
        table = LatencyTable(ops, fixed, space.opens_stage.copy(), {}, {}, cells, merges)
        print(f"\n{'with' if cell_terms else 'without'} per-cell terms (fitted on {a.passes} masks):")
        for name, masks in [("fit", fit_masks), *checks.items()]:
            truth = measured if name == "fit" else timed[name]
            pred = np.asarray(table.network_ms(masks))
            density = masks.sum(-1).mean(-1)
            v = compare(pred, truth)
            sparse = density < 0.6
            bias = 100 * np.mean(pred[sparse] / truth[sparse] - 1) if sparse.any() else float("nan")
            print(f"  {name:<15} n={len(masks):>3}: Spearman {v['spearman']:.3f}, MAPE {v['mape_pct']:.2f}%, "
                  f"{v['within_10pct']:.1f}% within +-10%; sparse masks (< 0.6 ops/cell, n={int(sparse.sum())}): "
                  f"mean error {bias:+.1f}%")


if __name__ == "__main__":
    main()
