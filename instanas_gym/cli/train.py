"""Commands that make the parts: ``train-supernet``, ``build-latency-table``, ``prepare`` and
``export-supernet``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from rich.console import Console

from instanas_gym.cli.parse import parse, reported
from instanas_gym.envs.config import EnvConfig
from instanas_gym.latency.config import TableConfig
from instanas_gym.training.config import PrepareConfig, TrainConfig
from instanas_gym.utils.run import RunConfig


@dataclass(frozen=True)
class LatencyTableConfig:
    """Settings of ``instanas-gym build-latency-table``. Close other programs first: the table is a
    measurement of this machine."""

    env: EnvConfig = field(default_factory=EnvConfig)
    """The supernet measured (env.supernet; unset, the data set's own)."""
    run: RunConfig = field(default_factory=lambda: RunConfig(device="cpu", out="runs/latency"))
    """Seed of the timed masks, the device timed (ONNX Runtime tables time the CPU) and the output folder."""
    backend: Literal["onnxruntime", "torch"] = "onnxruntime"
    """The runtime the table describes: ONNX Runtime (deployment, the environment's default) or eager torch."""
    table: TableConfig = field(default_factory=TableConfig)
    """How the table is measured."""

    def __post_init__(self) -> None:
        self.table.check_backend(self.backend)
        if self.backend == "onnxruntime" and self.run.device not in ("cpu", "auto"):
            raise ValueError(f"run.device is {self.run.device!r}, but ONNX Runtime tables describe the CPU; "
                             "use --backend torch to time a GPU")

    @property
    def out_file(self) -> Path:
        """``run.out/latency_onnxruntime.json`` or ``run.out/latency.json`` (torch): the names the
        environments look for."""
        name = "latency.json" if self.backend == "torch" else f"latency_{self.backend}.json"
        return Path(self.run.out or "runs/latency") / name


@dataclass(frozen=True)
class ExportConfig:
    """Settings of ``instanas-gym export-supernet``."""

    src: str
    """Training checkpoint to strip (last.pt of train-supernet)."""
    dest: str
    """File to write: the supernet without the optimizer and resume state."""


def run_train_supernet(argv: list[str], prog: str, description: str) -> None:
    cfg = parse(TrainConfig, argv, prog, description)
    from instanas_gym.training.trainer import train_supernet

    with reported(prog, TrainConfig, argv):
        train_supernet(cfg, console=Console())
    out = Path(cfg.run.out or "runs/supernet") / "last.pt"
    Console().print(f"wrote {out}; use it with gymnasium.make(ID, supernet='{out}')")


def run_build_latency_table(argv: list[str], prog: str, description: str) -> None:
    cfg = parse(LatencyTableConfig, argv, prog, description)
    console = Console()
    with reported(prog, LatencyTableConfig, argv):
        from instanas_gym.model.checkpoint import load_supernet
        from instanas_gym.utils.devices import resolve_device
        from instanas_gym.utils.paths import default_supernet

        model, _ = load_supernet(cfg.env.supernet or default_supernet(cfg.env.dataset))
        device = resolve_device(cfg.run.device, "run.device")
        cfg.out_file.parent.mkdir(parents=True, exist_ok=True)
        if cfg.backend == "onnxruntime":
            _onnx_table(model, cfg, console)
        else:
            _torch_table(model.to(device), cfg, device.type == "cuda", console)


def _onnx_table(model, cfg: LatencyTableConfig, console: Console) -> None:
    """The ONNX Runtime table: fit on exported masks, checked on fresh ones."""
    from instanas_gym.judge.plots import latency_scatter
    from instanas_gym.latency.onnx import build_onnx_table, measure_onnx_masks
    from instanas_gym.latency.validation import compare, validation_masks
    from instanas_gym.utils.runlog import progress_bar

    t, seed, out = cfg.table, cfg.run.seed, cfg.out_file
    passes, repeats = t.n_passes("onnxruntime"), t.n_repeats("onnxruntime")
    with progress_bar(console) as progress:
        task = progress.add_task("export, time, fit", total=passes, stats="")
        table = build_onnx_table(model, t, seed, progress=lambda done, _t: progress.update(task, completed=done))
        masks = validation_masks(model.space, t.validate_masks, seed + 1)
        check = progress.add_task("validation (clock)", total=len(masks), stats="")
        measured = measure_onnx_masks(model, masks, t.timed_threads, repeats,
                                      lambda done, _t: progress.update(check, completed=done))
    predicted = np.asarray(table.network_ms(masks))
    table.validation["onnxruntime"] = compare(predicted, measured)
    table.save(out)
    png = out.with_suffix(".png")
    latency_scatter(measured, {"whole-network fit": predicted}, png,
                    f"LUT vs ONNX Runtime ({len(measured)} fresh masks, {t.timed_threads} thread(s))")
    v = table.validation["onnxruntime"]
    console.print(f"ONNX Runtime table: Spearman {v['spearman']:.3f}, MAPE {v['mape_pct']:.2f}%, "
                  f"{v['within_10pct']:.1f}% within +-10% on {v['n_masks']} fresh masks; fixed {table.fixed_ms:.3f} ms; "
                  f"wrote {out} and {png}")


def _torch_table(model, cfg: LatencyTableConfig, cuda: bool, console: Console) -> None:
    """The eager PyTorch table, validated against the clock."""
    from instanas_gym.judge.plots import latency_scatter
    from instanas_gym.latency.validation import build_validated_table
    from instanas_gym.utils.display import validation_table
    from instanas_gym.utils.runlog import progress_bar

    t, out = cfg.table, cfg.out_file
    with progress_bar(console) as progress:

        def bar(name: str, total: int) -> Callable[[int, int], None]:
            task = progress.add_task(name, total=total, stats="")
            return lambda done, _total: progress.update(task, completed=done)

        table, measured, predicted = build_validated_table(model, t, cfg.run.seed, progress=bar)
    table.save(out)
    png = out.with_suffix(".png")
    where = f"{table.meta['device_name']}" if cuda else f"{t.timed_threads} thread(s)"
    latency_scatter(measured, predicted, png, f"LUT vs clock ({len(measured)} masks, {where})")
    console.print(validation_table(table.validation, f"latency table {out}"))
    console.print(f"rebuild vs first: MAPE {table.validation['rebuild_vs_first_mape_pct']:.2f}% of predictions; "
                  f"fixed {table.fixed_ms:.3f} ms; wrote {out} and {png}")


def run_prepare(argv: list[str], prog: str, description: str) -> None:
    cfg = parse(PrepareConfig, argv, prog, description)
    from instanas_gym.training.prepare import prepare

    with reported(prog, PrepareConfig, argv):
        prepare(cfg, Console())


def run_export_supernet(argv: list[str], prog: str, description: str) -> None:
    cfg = parse(ExportConfig, argv, prog, description)
    from instanas_gym.model.checkpoint import export_supernet

    with reported(prog, ExportConfig, argv):
        export_supernet(cfg.src, cfg.dest)
    Console().print(f"wrote {cfg.dest}")
