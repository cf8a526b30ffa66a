"""One command per data set: data, supernet, latency table, installed where the environment looks.

``instanas-gym prepare cifar10`` (or ``cifar100``, ``fashion-mnist``) runs five stages, each in the
work folder (default ``$INSTANAS_CACHE/<dataset>/prepare``):

1. ``data``: both splits loaded through torchvision (downloaded when missing and ``download``);
2. ``supernet``: the sandwich rule with in-place distillation (``mask_sampling="sandwich"``), from scratch;
3. ``frozen``: fine-tuning with the shared BatchNorm statistics frozen (``bn_stats="frozen"``), the
   bundled supernet's last step (README, "The bundled supernet");
4. ``table``: the ONNX Runtime latency table of this machine, checked against the clock on fresh
   masks (and, with ``torch_table``, the eager PyTorch one on ``device``);
5. ``install``: ``last.pt`` (without resume state), ``latency_onnxruntime.json`` (``latency.json``)
   and ``prepared.json`` (the data root) in ``$INSTANAS_CACHE/<dataset>/``, so that
   ``gymnasium.make(ID)`` needs no argument.

``prepare.json`` in the work folder lists the stages done and the settings they ran with; a rerun
(after a kill at any point) skips the done stages and the training stages continue from their last
checkpoint. A rerun with settings that change the result is refused.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from rich.console import Console

from instanas_gym.latency.onnx import build_onnx_table, validate_onnx
from instanas_gym.latency.validation import build_validated_table
from instanas_gym.model.checkpoint import export_supernet, load_supernet
from instanas_gym.space.data import DataNotFoundError, load_split
from instanas_gym.training.config import PrepareConfig as PrepareConfig  # its settings, re-exported
from instanas_gym.training.trainer import train_supernet
from instanas_gym.utils.devices import resolve_device
from instanas_gym.utils.files import FileFormatError, atomic_write_json, load_json
from instanas_gym.utils.paths import PREPARED_FILE, cache_dir
from instanas_gym.utils.run import flat_settings
from instanas_gym.utils.runlog import progress_bar

STAGES = ("data", "supernet", "frozen", "table", "install")
#: Settings a rerun may change: they do not change what the stages produce.
RESUMABLE_CHANGES = ("run.device", "run.threads", "run.out", "data.download")
STATE_FILE = "prepare.json"


class Preparation:
    """The stages of one ``prepare`` run and the state file that records which are done."""

    def __init__(self, cfg: PrepareConfig, console: Console) -> None:
        self.cfg, self.console = cfg, console
        self.work = cfg.work_dir
        self.state_path = self.work / STATE_FILE
        self.done: list[str] = []
        self.seconds: dict[str, float] = {}
        if self.state_path.is_file():
            self._load()

    def _load(self) -> None:
        state = load_json(self.state_path, "prepare state", f"delete {self.work} to start over")
        saved, now = state.get("config"), flat_settings(asdict(self.cfg))
        if not isinstance(saved, dict) or not isinstance(state.get("done"), list):
            raise FileFormatError(f"{self.state_path} is not a prepare state; delete {self.work} to start over")
        saved = flat_settings(saved)
        changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k])
        if changed:
            detail = ", ".join(f"{k}: before {saved.get(k)!r} vs now {now[k]!r}" for k in changed)
            raise ValueError(f"{self.state_path} was written with other settings ({detail}); rerun with the same "
                             f"ones, or pass another --run.out (or delete {self.work}) to start over")
        self.done, self.seconds = list(state["done"]), dict(state.get("seconds", {}))

    def _mark(self, stage: str, seconds: float, **record: Any) -> None:
        self.done.append(stage)
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
        state = {"config": asdict(self.cfg), "done": self.done, "seconds": self.seconds}
        previous = load_json(self.state_path, "prepare state") if self.state_path.is_file() else {}
        atomic_write_json(self.state_path, {**previous, **state, **record})

    # ---- stages --------------------------------------------------------------------------------
    def data(self) -> dict[str, Any]:
        """Both splits under the data root, downloaded when missing (and allowed)."""
        cfg = self.cfg
        sizes = {}
        for split in ("train", "test"):
            try:
                images = load_split(cfg.name, split, cfg.root)
            except DataNotFoundError:
                if not cfg.data.download:
                    raise
                with self.console.status(f"downloading {cfg.name} to {cfg.root}"):
                    images = load_split(cfg.name, split, cfg.root, download=True)
            sizes[split] = len(images)
        self.console.print(f"{cfg.name}: {sizes['train']} training and {sizes['test']} test images under {cfg.root}")
        return {"data_root": str(cfg.root.resolve()), "images": sizes}

    def train(self, stage: str) -> dict[str, Any]:
        metrics = train_supernet(self.cfg.train_config(stage), console=self.console)
        return {f"{stage}_metrics": metrics}

    def table(self) -> dict[str, Any]:
        """The ONNX Runtime table (and the torch one), validated, in the work folder."""
        cfg = self.cfg
        model, _ = load_supernet(self.work / "frozen" / "last.pt")
        with progress_bar(self.console) as progress:
            fit = progress.add_task("ONNX Runtime table: export, time, fit", total=cfg.table.n_passes("onnxruntime"), stats="")
            table = build_onnx_table(model, cfg.table, cfg.run.seed, progress=lambda done, _t: progress.update(fit, completed=done))
            check = progress.add_task("ONNX Runtime table: validation", total=cfg.table.validate_masks, stats="")
            table.validation["onnxruntime"] = validate_onnx(
                table, model, cfg.table.validate_masks, cfg.run.seed + 1, cfg.table.n_repeats("onnxruntime"),
                lambda done, _t: progress.update(check, completed=done))
            table.save(self.work / "latency_onnxruntime.json")
            record = {"onnxruntime": table.validation["onnxruntime"]}
            if cfg.torch_table:
                model.to(resolve_device(cfg.run.device))

                def bar(name: str, total: int) -> Callable[[int, int], None]:
                    task = progress.add_task(f"torch table: {name}", total=total, stats="")
                    return lambda done, _total: progress.update(task, completed=done)

                torch_table, *_ = build_validated_table(model, cfg.table, cfg.run.seed, progress=bar)
                torch_table.save(self.work / "latency.json")
                record["torch"] = torch_table.validation
        v = record["onnxruntime"]
        self.console.print(f"ONNX Runtime table: Spearman {v['spearman']:.3f}, MAPE {v['mape_pct']:.2f}%, "
                           f"{v['within_10pct']:.1f}% within +-10% on {v['n_masks']} fresh masks")
        return {"tables": record}

    def install(self) -> dict[str, Any]:
        """Supernet, table(s) and prepared.json into ``cache_dir()/<dataset>/``; prepared.json last."""
        cfg = self.cfg
        dest = cache_dir() / cfg.name
        dest.mkdir(parents=True, exist_ok=True)
        export_supernet(self.work / "frozen" / "last.pt", dest / "last.pt")
        files = {"supernet": str(dest / "last.pt")}
        for name in ("latency_onnxruntime.json", "latency.json"):
            if (self.work / name).is_file():
                tmp = dest / f".{name}.tmp"
                shutil.copyfile(self.work / name, tmp)
                tmp.replace(dest / name)
                files[name] = str(dest / name)
        state = load_json(self.state_path, "prepare state")
        record = {"dataset": cfg.name, "data_root": state["data_root"], "files": files, "work": str(self.work),
                  "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "metrics": state.get("frozen_metrics", {}), "tables": state.get("tables", {})}
        atomic_write_json(dest / PREPARED_FILE, record)
        return {"installed": str(dest)}

    def run(self) -> dict[str, Any]:
        """Every stage not done yet, in order; returns the state (also in ``work/prepare.json``)."""
        self.work.mkdir(parents=True, exist_ok=True)
        runners = {"data": self.data, "supernet": lambda: self.train("supernet"),
                   "frozen": lambda: self.train("frozen"), "table": self.table, "install": self.install}
        for i, stage in enumerate(STAGES, start=1):
            title = f"[{i}/{len(STAGES)}] {stage}"
            if stage in self.done:
                self.console.rule(f"{title}: done ({self.seconds.get(stage, 0):.0f} s)", style="dim")
                continue
            self.console.rule(title)
            t0 = time.perf_counter()
            record = runners[stage]()
            self._mark(stage, time.perf_counter() - t0, **record)
        total = sum(self.seconds.values())
        times = ", ".join(f"{s} {self.seconds[s]:.0f} s" for s in STAGES)
        self.console.print(f"prepared {self.cfg.name} in {total:.0f} s ({times}): "
                           f"gymnasium.make(...) now loads {cache_dir() / self.cfg.name}")
        return load_json(self.state_path, "prepare state")


def prepare(cfg: PrepareConfig, console: Console | None = None) -> dict[str, Any]:
    """Run (or continue) ``instanas-gym prepare``; returns the state of ``work/prepare.json``."""
    return Preparation(cfg, console or Console()).run()

