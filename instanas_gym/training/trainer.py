"""One-shot pre-training of the supernet, resumable, on one process or many (``torchrun``).

Each batch runs under random per-image masks (``mask_sampling``):

* ``"paper"``: for the first half of training every op is on; over the second half each op is kept
  with a probability falling linearly from 1 to ``min_keep_prob`` (the paper's drop-path schedule),
  with at least one op kept in every cell. It rarely shows the network single-op paths (the
  MobileNetV2 path among them), which then stay poor;
* ``"mixed"``: masks from single-op to dense (:func:`~instanas_gym.space.masks.mixed_masks`), e.g. to
  fine-tune with ``init_from``;
* ``"mobilenetv2"`` / ``"fixed"``: one architecture only (a plain MobileNetV2, or ``fixed_mask``);
* ``"sandwich"``: the sandwich rule (:mod:`instanas_gym.training.sandwich`): per batch the largest
  network, the smallest and ``sandwich_random`` random ones (single-op, same-op-everywhere and
  Bernoulli masks), one optimizer step on their summed gradients; in-place distillation from the
  largest network, or, with ``teacher``, distillation from a fixed network trained alone
  (:mod:`instanas_gym.training.teacher`; its accuracy, MACs and img/s are logged at the start). Under
  torchrun each rank draws its own members from its own generator and the gradients are averaged
  over the ranks (:func:`~instanas_gym.training.distributed.average_gradients`).

``bn_stats="frozen"`` (for fine-tuning a trained supernet) re-estimates the shared BatchNorm
statistics once over the sandwich's masks and trains the weights with them held fixed: a per-image
mask at inference is normalised exactly as in training, whatever its density, instead of by an
average of dense and sparse masks' statistics that fits neither.

With ``probe_images`` the probe architectures are scored after every epoch (``out/probes.csv``).

SGD with Nesterov momentum and a per-step cosine learning rate. Checkpoints (``last.pt`` in ``out``)
hold the weights, search-space config, dataset, position (epoch, batch), the running sums of the
current epoch, optimizer, scheduler, RNG states and metrics; they are written atomically every
``checkpoint_every`` steps, at each epoch end and on Ctrl-C, so ``resume=True`` continues a killed run
with at most ``checkpoint_every`` steps redone, bit for bit as if it had not stopped. A resume with
settings that change the run (another width, schedule, dataset...) is refused.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch.utils.data import DistributedSampler

from instanas_gym.latency.table import LatencyTable
from instanas_gym.model.batchnorm import estimate_bn, freeze_bn, shared_bn_masks
from instanas_gym.model.checkpoint import load_checkpoint, supernet_state
from instanas_gym.model.supernet import Supernet
from instanas_gym.space.data import ImageSet, augment, load_split
from instanas_gym.space.family import probe_masks
from instanas_gym.space.masks import (
    fastest_mask,
    load_mask,
    mac_costs,
    mixed_masks,
    mobilenetv2_mask,
    random_masks,
    sandwich_masks,
)
from instanas_gym.space.search_space import SearchSpace
from instanas_gym.training import distributed
from instanas_gym.training.config import TrainConfig, check_resume
from instanas_gym.training.evaluation import final_evaluation, probe_accuracies
from instanas_gym.training.sandwich import sandwich_step
from instanas_gym.training.teacher import Teacher, check_resumed_teacher
from instanas_gym.utils.devices import autocast, resolve_device, to_device
from instanas_gym.utils.display import metrics_table
from instanas_gym.utils.files import atomic_save
from instanas_gym.utils.paths import default_latency_table
from instanas_gym.utils.runlog import progress_bar, write_csv
from instanas_gym.utils.runtime import tune_allocator


def keep_prob(progress: float, min_keep_prob: float = 0.5) -> float:
    """Per-op keep probability at ``progress`` in [0, 1] of training: 1 in the first half, then linear."""
    if progress < 0.5:
        return 1.0
    return 1.0 - (1.0 - min_keep_prob) * min(1.0, (progress - 0.5) / 0.5)


def _subset(data: ImageSet, n: int | None) -> ImageSet:
    return data if n is None else ImageSet(data.images[:n], data.labels[:n], data.spec, data.split, data.source)


class SupernetTrainer:
    """The state of one supernet training run and its named steps; :func:`train_supernet` drives it."""

    def __init__(self, cfg: TrainConfig, console: Console) -> None:
        self.cfg, self.console = cfg, console
        self.device = resolve_device(cfg.run.device)
        self.rank, self.world = distributed.init_distributed(self.device)
        tune_allocator()
        torch.set_num_threads(cfg.run.threads)
        self.ckpt_path = Path(cfg.run.out) / "last.pt"
        self.train = _subset(load_split(cfg.dataset, "train", cfg.data.root, cfg.data.download), cfg.subset.train)
        test = load_split(cfg.dataset, "test", cfg.data.root, cfg.data.download)
        self.test, self.probe_test = _subset(test, cfg.subset.eval), _subset(test, cfg.probe_images)
        self.fixed = load_mask(cfg.fixed_mask) if cfg.fixed_mask else None
        self.model = self._build_model()
        self.probe_table = None if not cfg.probe_images else LatencyTable.load(
            cfg.probe_table or default_latency_table(cfg.dataset, "torch"), self.model.space)
        self.smallest = fastest_mask(*mac_costs(self.model.space))  # the sandwich's smallest network
        self.teacher = None if cfg.teacher is None else Teacher(cfg.teacher, cfg.teacher_mask, cfg.dataset,
                                                                self.model.space, self.device, self.memory_format)
        self.teacher_record: dict[str, Any] | None = None
        if cfg.mask_sampling == "sandwich":  # several networks per step: gradients averaged after all of them
            distributed.broadcast_module(self.model, self.world)
            self.net: torch.nn.Module = self.model
        else:
            self.net = distributed.wrap(self.model, self.world, self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay, nesterov=True)
        self.sampler = DistributedSampler(range(len(self.train)), num_replicas=self.world, rank=self.rank,
                                          shuffle=True, seed=cfg.run.seed)
        self.steps_per_epoch = math.ceil(len(self.sampler) / cfg.batch_size)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        total = self.total_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
        )
        self.aug_gen = torch.Generator().manual_seed(cfg.run.seed * 1000 + self.rank)
        self.mask_rng = np.random.default_rng([cfg.run.seed, self.rank])
        self.epoch, self.batch_in_epoch = 0, 0
        self.sums = {"loss": 0.0, "correct": 0.0, "seen": 0.0}  # of the current epoch, on this rank
        self.history: list[dict[str, float]] = []
        self.images, self.labels = self.train.tensors()

    # ---- setup -----------------------------------------------------------------------------------
    def _build_model(self) -> Supernet:
        cfg, spec = self.cfg, self.train.spec
        h, _, c = spec.image_shape
        torch.manual_seed(cfg.run.seed)
        model = Supernet(SearchSpace(cfg.width_mult, h, c, spec.num_classes, cfg.cell_merge), spec.mean, spec.std)
        if cfg.init_from:
            model.load_state_dict(load_checkpoint(cfg.init_from)["model"])
        return model.to(self.device, memory_format=self.memory_format)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.cfg.run.channels_last else torch.contiguous_format

    # ---- checkpoints -----------------------------------------------------------------------------
    def save(self) -> None:
        """Write ``out/last.pt`` with every rank's RNG state (rank 0 writes)."""
        aug_states = distributed.gather(self.aug_gen.get_state(), self.world)
        mask_states = distributed.gather(self.mask_rng.bit_generator.state, self.world)
        sums = distributed.gather(dict(self.sums), self.world)
        if self.rank != 0:
            return
        state = supernet_state(
            self.model, self.cfg.dataset, config=asdict(self.cfg),
            train_mask=None if self.fixed is None else self.fixed.tolist(),
            epoch=self.epoch, batch_in_epoch=self.batch_in_epoch, epoch_sums=sums,
            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
            rng={"augment": aug_states, "masks": mask_states, "torch": torch.get_rng_state()},
            metrics={"history": self.history}, teacher=self.teacher_record,
        )
        atomic_save(state, self.ckpt_path)

    def resume(self) -> None:
        """Continue from ``out/last.pt`` (its settings checked by :func:`check_resume`): restore every state."""
        ckpt = load_checkpoint(self.ckpt_path)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.epoch, self.batch_in_epoch = ckpt["epoch"], ckpt["batch_in_epoch"]
        self.history = ckpt["metrics"]["history"]
        self.sums = dict(ckpt["epoch_sums"][self.rank])
        self.aug_gen.set_state(ckpt["rng"]["augment"][self.rank])
        self.mask_rng.bit_generator.state = ckpt["rng"]["masks"][self.rank]
        torch.set_rng_state(ckpt["rng"]["torch"])
        check_resumed_teacher(ckpt.get("teacher"), self.teacher, self.ckpt_path)
        self.teacher_record = ckpt.get("teacher")
        if self.rank == 0:
            self.console.print(f"resumed from {self.ckpt_path} at epoch {self.epoch}, batch {self.batch_in_epoch}")
            self.log_teacher("recorded at the start of the run")

    def estimate_shared_bn(self) -> None:
        """bn_stats="frozen", at the start of a run: the shared BatchNorm statistics from
        ``bn_batches`` batches of sandwich members (:func:`~instanas_gym.model.batchnorm.shared_bn_masks`)."""
        rng = np.random.default_rng([self.cfg.run.seed, 1])
        with autocast(self.device, self.cfg.run.precision):
            estimate_bn(self.model, self.train, shared_bn_masks(rng, self.smallest, self.cfg.bn_batches),
                        self.cfg.batch_size, self.cfg.run.seed)

    def record_teacher(self) -> None:
        """At the start of a new run (rank 0): the teacher's record (accuracy on the test split, MACs,
        file hash), kept in every checkpoint, and its log line."""
        if self.teacher is not None and self.rank == 0:
            with autocast(self.device, self.cfg.run.precision):
                self.teacher_record = self.teacher.record(self.test, self.cfg.eval_batch_size)
            self.log_teacher("at the start of the run")

    def log_teacher(self, when: str) -> None:
        """Log the teacher's record and the img/s of its forward at the training batch size, measured now."""
        if self.teacher is None or self.teacher_record is None:
            return
        r, images = self.teacher_record, self.images[: self.cfg.batch_size].to(self.device)
        with autocast(self.device, self.cfg.run.precision):
            ips = self.teacher.images_per_second(images.contiguous(memory_format=self.memory_format))
        self.console.log(f"teacher {r['path']} (SHA-256 {r['sha256'][:12]}...), {when}: test accuracy "
                         f"{100 * r['test_acc']:.2f}% on {r['test_images']} images, {r['macs'] / 1e6:.2f} MMACs, "
                         f"{ips:.0f} img/s forward at batch {len(images)}, {self.cfg.run.threads} thread(s)")

    # ---- one step --------------------------------------------------------------------------------
    def sample_masks(self, step: int, n: int) -> torch.Tensor:
        """Bool masks (n, 17, 5) for the batch of global ``step``, as ``mask_sampling`` says."""
        cfg = self.cfg
        if cfg.mask_sampling == "mixed":
            return torch.from_numpy(mixed_masks(self.mask_rng, n)).bool()
        if cfg.mask_sampling in ("mobilenetv2", "fixed"):
            only = mobilenetv2_mask() if cfg.mask_sampling == "mobilenetv2" else self.fixed
            return torch.from_numpy(only).bool().expand(n, -1, -1)
        p = keep_prob(step / self.total_steps, cfg.min_keep_prob)
        return torch.from_numpy(random_masks(self.mask_rng, n, p, min_ops=1)).bool()

    def train_step(self, idx: torch.Tensor, step: int) -> tuple[float, int]:
        """One SGD step on the images ``idx``; returns (summed loss, correct predictions), of the
        largest network for the sandwich rule."""
        cfg = self.cfg
        masks = None if cfg.mask_sampling == "sandwich" else self.sample_masks(step, len(idx))
        x = augment(self.images[idx], self.train.spec, self.aug_gen)
        x = to_device(x, self.device).contiguous(memory_format=self.memory_format)
        y = to_device(self.labels[idx], self.device)
        self.optimizer.zero_grad(set_to_none=True)
        if cfg.bn_stats == "frozen":
            freeze_bn(self.model)
        if masks is None:
            members = sandwich_masks(self.mask_rng, self.smallest, cfg.sandwich_random)
            with autocast(self.device, cfg.run.precision):
                soft = None if self.teacher is None else self.teacher(x)
                losses, logits = sandwich_step(self.net, x, y, members, cfg.distill, cfg.label_smoothing,
                                               cfg.distill_temperature, soft, cfg.label_weight)
            distributed.average_gradients(self.model, self.world)
            loss = losses[0]
        else:
            with autocast(self.device, cfg.run.precision):
                logits = self.net(x, masks)
                loss_t = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            loss_t.backward()
            loss = loss_t.item()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return loss * len(idx), int((logits.argmax(1) == y).sum().item())

    # ---- epochs ----------------------------------------------------------------------------------
    def run_epoch(self, on_step: Callable[[int], None] | None, advance: Callable[[str], None]) -> None:
        """The rest of the current epoch, from ``batch_in_epoch``; ends with its history row and a checkpoint."""
        cfg = self.cfg
        self.sampler.set_epoch(self.epoch)
        order = torch.tensor(list(iter(self.sampler)))
        t0, seen0 = time.perf_counter(), self.sums["seen"]
        for b in range(self.batch_in_epoch, self.steps_per_epoch):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            step = self.epoch * self.steps_per_epoch + b
            loss_sum, correct = self.train_step(idx, step)
            self.batch_in_epoch = b + 1
            self.sums["loss"] += loss_sum
            self.sums["correct"] += correct
            self.sums["seen"] += len(idx)
            ips = (self.sums["seen"] - seen0) * self.world / (time.perf_counter() - t0)
            advance(self._stats_text(step, ips))
            if on_step is not None:
                on_step(step + 1)
            if (step + 1) % cfg.checkpoint_every == 0:
                self.save()
        self._end_epoch()

    def _stats_text(self, step: int, ips: float) -> str:
        s = self.sums
        return (f"ep {self.epoch + 1}/{self.cfg.epochs} loss {s['loss'] / s['seen']:.3f} acc {s['correct'] / s['seen']:.3f} "
                f"keep {keep_prob(step / self.total_steps, self.cfg.min_keep_prob):.2f} "
                f"lr {self.scheduler.get_last_lr()[0]:.4f} {ips:.0f} img/s")

    def _end_epoch(self) -> None:
        seen = max(self.sums["seen"], 1)
        self.history.append({"epoch": self.epoch + 1, "loss": self.sums["loss"] / seen,
                             "train_acc": self.sums["correct"] / seen})
        if self.rank == 0:
            row = self.history[-1]
            self.console.log(f"epoch {row['epoch']}/{self.cfg.epochs}: loss {row['loss']:.4f}, "
                             f"train acc {row['train_acc']:.4f}")
        self._score_probes(self.history[-1])
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        self.sums = {"loss": 0.0, "correct": 0.0, "seen": 0.0}
        self.save()

    def _score_probes(self, row: dict[str, Any]) -> None:
        """With ``probe_images``: the probes' test accuracy (each rank scores its share) into the epoch's
        history ``row``, the log and ``out/probes.csv`` (evaluation only: the random streams are untouched)."""
        if self.probe_table is None:
            return
        distributed.broadcast_module(self.model, self.world, parameters=False)  # rank 0's running statistics
        with autocast(self.device, self.cfg.run.precision):
            mine = probe_accuracies(self.model, self.probe_test, self.probe_table, self.cfg.eval_batch_size,
                                    self.cfg.run.seed, (self.rank, self.world))
        parts = distributed.gather(mine, self.world)
        order = [name for name, _ in probe_masks(self.probe_table, 0)] + ["per_image_0.5"]
        row["probes"] = p = {name: part[name] for name in order for part in parts if name in part}
        if self.rank != 0:
            return
        worst = min(p, key=p.get)
        self.console.log(f"probes on {len(self.probe_test)} test images, shared statistics: MobileNetV2 path "
                         f"{100 * p['mobilenetv2']:.2f}%, all ops {100 * p['all_ops']:.2f}%, per-image Bernoulli(0.5) "
                         f"{100 * p['per_image_0.5']:.2f}%, mean {100 * np.mean(list(p.values())):.2f}%, "
                         f"worst {worst} {100 * p[worst]:.2f}%")
        write_csv([{k: v for k, v in r.items() if k != "probes"} | r.get("probes", {}) for r in self.history],
                  self.ckpt_path.parent / "probes.csv")

    def finish(self) -> dict[str, float]:
        """Test-split evaluation (rank 0), stored in the checkpoint and printed; returns the metrics."""
        metrics: dict[str, float] = {}
        if self.rank == 0:
            with autocast(self.device, self.cfg.run.precision):
                metrics = final_evaluation(self.model, self.test, self.cfg.eval_batch_size, self.cfg.run.seed,
                                           fixed=self.fixed)
            if self.teacher_record is not None:
                metrics["test_acc_teacher"] = self.teacher_record["test_acc"]
            state = load_checkpoint(self.ckpt_path)
            state["metrics"] = {"history": self.history, **metrics}
            atomic_save(state, self.ckpt_path)
            self.console.print(metrics_table(metrics, f"supernet test accuracy ({self.test.spec.name}, {len(self.test)} images)"))
        distributed.barrier(self.world)
        return metrics


def train_supernet(
    cfg: TrainConfig, on_step: Callable[[int], None] | None = None, console: Console | None = None
) -> dict[str, Any]:
    """Pre-train a supernet as configured; returns the final test metrics (fractions). Writes ``out/last.pt``.

    ``on_step(global_step)`` is called after every optimisation step (tests use it to interrupt).
    """
    resuming = cfg.resume and (Path(cfg.run.out) / "last.pt").is_file()
    if resuming:
        check_resume(cfg, Path(cfg.run.out) / "last.pt")
    t = SupernetTrainer(cfg, console or Console())
    if resuming:
        t.resume()
    else:
        t.record_teacher()
        if cfg.bn_stats == "frozen":
            t.estimate_shared_bn()
    progress = progress_bar(t.console, disable=t.rank != 0)
    task = progress.add_task("supernet", total=t.total_steps,
                             completed=t.epoch * t.steps_per_epoch + t.batch_in_epoch, stats="")
    t.net.train()
    try:
        with progress:
            while t.epoch < cfg.epochs:
                t.run_epoch(on_step, lambda stats: progress.update(task, advance=1, stats=stats))
    except KeyboardInterrupt:
        t.save()
        if t.rank == 0:
            t.console.print(f"interrupted: checkpoint saved to {t.ckpt_path}; rerun with --resume to continue")
        raise
    return t.finish()
