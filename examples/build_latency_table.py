"""Measure a latency lookup table on this machine and check it against the clock (``instanas-gym
build-latency-table`` does the same). Close other programs first: the table is a measurement.

    python examples/build_latency_table.py --supernet runs/fmnist/last.pt --run.out runs/fmnist
    python examples/build_latency_table.py --backend torch --table.passes 500 --run.out runs/torch_table

Writes the JSON table (``latency_onnxruntime.json``, ``latency.json`` with ``--backend torch``), with
its validation figures, and a PNG scatter plot of table against clock beside it; the environments
take it as ``latency_table=``.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

from instanas_gym.judge.plots import latency_scatter
from instanas_gym.latency.config import TableConfig
from instanas_gym.latency.onnx import build_onnx_table, measure_onnx_masks
from instanas_gym.latency.validation import build_validated_table, compare, validation_masks
from instanas_gym.model.checkpoint import load_supernet
from instanas_gym.utils.paths import BUNDLED_SUPERNET
from instanas_gym.utils.run import RunConfig


@dataclass(frozen=True)
class Args:
    supernet: str = str(BUNDLED_SUPERNET)
    """The supernet whose architectures are timed (a table times architectures, not weights)."""
    backend: Literal["onnxruntime", "torch"] = "onnxruntime"
    """ONNX Runtime (the deployed model, the environments' default) or eager PyTorch."""
    table: TableConfig = field(default_factory=TableConfig)
    """How many masks are timed for the fit, how often, on how many threads, and how many for the check."""
    run: RunConfig = field(default_factory=lambda: RunConfig(out="runs/latency"))
    """Seed of the timed masks and the output folder."""


def main(args: Args) -> None:
    model, _ = load_supernet(args.supernet)
    out = Path(args.run.out) / ("latency.json" if args.backend == "torch" else "latency_onnxruntime.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.backend == "onnxruntime":  # exported sub-networks timed, fitted per (cell, op), checked on fresh masks
        table = build_onnx_table(model, args.table, args.run.seed)
        masks = validation_masks(model.space, args.table.validate_masks, args.run.seed + 1)
        measured = measure_onnx_masks(model, masks, args.table.timed_threads, args.table.n_repeats("onnxruntime"))
        predicted = {"whole-network fit": np.asarray(table.network_ms(masks))}
        table.validation["onnxruntime"] = check = compare(predicted["whole-network fit"], measured)
    else:  # eager PyTorch, timed in place twice, against the ops timed one by one
        table, measured, predicted = build_validated_table(model, args.table, args.run.seed)
        check = table.validation["in_place"]
    table.save(out)
    title = f"{args.backend} table vs clock, {len(measured)} masks"
    latency_scatter(measured, predicted, out.with_suffix(".png"), title)
    print(f"wrote {out}: Spearman {check['spearman']:.3f}, MAPE {check['mape_pct']:.2f}% on {check['n_masks']} "
          f"fresh masks; gymnasium.make(ID, latency_table='{out}')")


if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__.split("\n\n")[0]))
