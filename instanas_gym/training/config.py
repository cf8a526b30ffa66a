"""The settings of a supernet training run (:class:`TrainConfig`, ``instanas-gym train-supernet``),
which of them a resumed run may change, and those of ``instanas-gym prepare`` (:class:`PrepareConfig`).

Light on purpose: the command line imports this module to parse its flags (each field's docstring is
its flag's help, one plain sentence), so it imports no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from instanas_gym.latency.config import TableConfig
from instanas_gym.space.data import DataConfig, SubsetConfig, get_spec
from instanas_gym.utils.checks import check_int, check_number
from instanas_gym.utils.files import FileFormatError
from instanas_gym.utils.paths import cache_dir, data_root
from instanas_gym.utils.run import RunConfig, flat_settings

MaskSampling = Literal["paper", "mixed", "mobilenetv2", "fixed", "sandwich"]
MASK_SAMPLING = ("paper", "mixed", "mobilenetv2", "fixed", "sandwich")
#: Settings that may differ between a run and its resume; every other one must match.
RESUMABLE_CHANGES = ("resume", "run.out", "run.threads", "run.device", "checkpoint_every", "subset.eval",
                     "eval_batch_size", "data.root", "data.download", "probe_images", "probe_table",
                     "teacher", "teacher_mask")  # the teacher's file and architecture are checked by content
#: Where settings of older checkpoints (flat) live now.
MOVED = {"seed": "run.seed", "threads": "run.threads", "device": "run.device", "precision": "run.precision",
         "out": "run.out", "data_root": "data.root", "download": "data.download", "channels_last": "run.channels_last",
         "train_subset": "subset.train", "eval_subset": "subset.eval"}


@dataclass
class TrainConfig:
    """Arguments of :func:`train_supernet` (``instanas-gym train-supernet`` exposes each as a flag)."""

    dataset: Literal["fashion_mnist", "cifar10", "cifar100"] = "fashion_mnist"
    """The data set the supernet learns."""
    data: DataConfig = field(default_factory=DataConfig)
    """Where the images are."""
    subset: SubsetConfig = field(default_factory=SubsetConfig)
    """The first N images of each split only (quick runs); unset, all of them."""
    run: RunConfig = field(default_factory=lambda: RunConfig(out="runs/supernet"))
    """Seed, threads, device, precision, memory format and the output folder (last.pt, the checkpoint)."""
    width_mult: float = 0.25
    """Width multiplier of every channel count (1.0: MobileNetV2's)."""
    cell_merge: Literal["mean", "sum"] = "mean"
    """How a cell merges the outputs of its ops."""
    epochs: int = 10
    """Passes over the training images."""
    batch_size: int = 128
    """Images per step and process."""
    lr: float = 0.1
    """Peak SGD learning rate, cosine to 0 per step."""
    momentum: float = 0.9
    """SGD momentum (Nesterov)."""
    weight_decay: float = 4e-5
    """SGD weight decay."""
    label_smoothing: float = 0.0
    """Label smoothing of the cross-entropy loss (0: none)."""
    min_keep_prob: float = 0.5
    """The "paper" schedule: the keep probability of each op at its end."""
    mask_sampling: MaskSampling = "paper"
    """Which architectures the batches train: the paper's schedule, mixed masks, one path, a fixed mask or
    the sandwich rule."""
    sandwich_random: int = 2
    """Sandwich rule: random networks per step besides the largest and the smallest."""
    distill: bool = True
    """Sandwich: every network but the largest learns the largest's soft predictions (or, with a
    teacher, every network the teacher's), not the labels."""
    teacher: str | None = None
    """Sandwich: a fixed teacher, a supernet checkpoint whose teacher-mask architecture was trained
    alone; every sampled network learns its soft predictions (KL), the largest also the labels (by
    label-weight); it runs in eval mode without gradients, and its path and file SHA-256 join the
    checkpoint, so a resume with another teacher file is refused; unset, in-place distillation."""
    teacher_mask: str | None = None
    """Mask file of the teacher's architecture; None: the mask the teacher checkpoint was trained on
    alone if it stores one, else its MobileNetV2 path."""
    distill_temperature: float = 1.0
    """Temperature of the distillation (KL of softened predictions, x T^2)."""
    label_weight: float = 0.5
    """With a teacher, the largest network's loss: label_weight x CE(labels) + (1 - label_weight) x KL(teacher)."""
    bn_stats: Literal["batch", "frozen"] = "batch"
    """BatchNorm while training: "batch" statistics, or "frozen" shared statistics estimated once at the start."""
    bn_batches: int = 200
    """Batches the frozen BatchNorm statistics are estimated on."""
    grad_clip: float = 0.0
    """Clip the gradients' global norm to this before each step (0: no clipping)."""
    fixed_mask: str | None = None
    """Mask file for --mask-sampling fixed (a JSON mask, see instanas_gym.space.masks.save_mask)."""
    init_from: str | None = None
    """Start from this checkpoint's weights (fine-tuning); unset, from random weights."""
    eval_batch_size: int = 256
    """Images per batch of the final evaluation."""
    probe_images: int = 0
    """After every epoch, score the probe architectures (instanas_gym.space.family.probe_masks) and
    per-image Bernoulli(0.5) masks on the first N test images, shared statistics: logged, kept in the
    checkpoint's history and in probes.csv in the output folder (0: no probes)."""
    probe_table: str | None = None
    """Latency table whose fastest mask joins the probes; None: the dataset's default eager-PyTorch table."""
    checkpoint_every: int = 200
    """Steps between checkpoints (one is also written at every epoch's end)."""
    resume: bool = False
    """Continue from last.pt in the output folder if it is there (the same settings are required)."""

    def __post_init__(self) -> None:
        get_spec(self.dataset)
        for name in ("epochs", "batch_size", "eval_batch_size", "checkpoint_every", "bn_batches"):
            check_int(name, getattr(self, name))
        check_int("sandwich_random", self.sandwich_random, minimum=0)
        for name in ("lr", "width_mult"):
            check_number(name, getattr(self, name), low=0, low_open=True)
        check_number("grad_clip", self.grad_clip, low=0)
        for name in ("momentum", "weight_decay", "label_smoothing"):
            check_number(name, getattr(self, name), low=0, high=1, high_open=True)
        check_number("min_keep_prob", self.min_keep_prob, low=0, high=1, low_open=True)
        if self.mask_sampling not in MASK_SAMPLING:
            raise ValueError(f"mask_sampling must be one of {MASK_SAMPLING}, got {self.mask_sampling!r}")
        if self.bn_stats not in ("batch", "frozen"):
            raise ValueError(f"bn_stats must be 'batch' or 'frozen', got {self.bn_stats!r}")
        if (self.mask_sampling == "fixed") != (self.fixed_mask is not None):
            raise ValueError("mask_sampling='fixed' and fixed_mask (a mask file) go together")
        check_int("probe_images", self.probe_images, minimum=0)
        check_number("distill_temperature", self.distill_temperature, low=0, low_open=True)
        check_number("label_weight", self.label_weight, low=0, high=1)
        if self.teacher is not None and (self.mask_sampling != "sandwich" or not self.distill):
            raise ValueError(f"teacher: a fixed teacher teaches the sandwich's networks; it needs "
                             f"mask_sampling='sandwich' and distill=True, got {self.mask_sampling!r}, {self.distill}")
        if self.teacher_mask is not None and self.teacher is None:
            raise ValueError("teacher_mask chooses the teacher's architecture: give teacher (a checkpoint) too")


def check_resume(cfg: TrainConfig, path: Path) -> None:
    """Refuse to resume the checkpoint at ``path`` with settings that change the run."""
    from instanas_gym.model.checkpoint import load_checkpoint  # torch: only when there is a run to resume

    saved, now = load_checkpoint(path).get("config"), flat_settings(asdict(cfg))
    if not isinstance(saved, dict):
        raise FileFormatError(f"{path} holds no training settings to resume from; start a new run in another --run.out")
    saved = {MOVED.get(k, k): v for k, v in flat_settings(saved).items()}
    defaults = flat_settings(asdict(TrainConfig()))
    saved = {k: saved.get(k, defaults[k]) for k in now}  # older files lack newer settings
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved[k] != now[k])
    if changed:
        detail = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {now[k]!r}" for k in changed)
        raise ValueError(f"{path} was written with other settings ({detail}); resume with the same ones, or "
                         f"start a new run in another --run.out")



@dataclass(frozen=True)
class PrepareConfig:
    """Arguments of ``instanas-gym prepare DATASET`` (:mod:`instanas_gym.training.prepare`): data,
    supernet (sandwich rule with distillation, then frozen BatchNorm statistics), latency table, all
    installed in $INSTANAS_CACHE/<dataset>/. Resumable: rerun the same command after a kill."""

    dataset: Annotated[Literal["cifar10", "cifar100", "fashion-mnist"], tyro.conf.Positional]
    """The data set to prepare."""
    data: DataConfig = field(default_factory=lambda: DataConfig(download=True))
    """Where the images are (downloaded when missing); the folder is recorded in prepared.json."""
    subset: SubsetConfig = field(default_factory=SubsetConfig)
    """The first N images of each split only, in both stages (quick runs); unset, all of them."""
    run: RunConfig = field(default_factory=RunConfig)
    """Seed, threads, device and memory format of training, and the work folder; unset,
    $INSTANAS_CACHE/<dataset>/prepare."""
    width_mult: float = 1.0
    """Width multiplier of the supernet's channels (1.0: MobileNetV2's)."""
    batch_size: int = 128
    """Images per training step, in both stages."""
    epochs: int = 200
    """Epochs of the sandwich stage (the defaults cost an estimated 2-12 GPU-hours; try --epochs 10
    --width-mult 0.5 first)."""
    lr: float = 0.1
    """Peak learning rate of the sandwich stage, cosine to 0."""
    frozen_epochs: int = 10
    """Epochs of fine-tuning with the BatchNorm statistics frozen."""
    frozen_lr: float = 0.005
    """Peak learning rate of the frozen stage."""
    frozen_bn_batches: int = 200
    """Batches the frozen stage estimates its BatchNorm statistics on."""
    frozen_grad_clip: float = 2.0
    """Gradient-norm clip of the frozen stage."""
    table: TableConfig = field(default_factory=lambda: TableConfig(repeats=30))
    """How the ONNX Runtime latency table is measured."""
    torch_table: bool = False
    """Also build the eager PyTorch table (latency.json) on run.device."""

    def __post_init__(self) -> None:
        get_spec(self.name)
        for name in ("epochs", "frozen_epochs", "batch_size", "frozen_bn_batches"):
            check_int(name, getattr(self, name))
        for name in ("lr", "frozen_lr", "width_mult"):
            check_number(name, getattr(self, name), low=0, low_open=True)
        check_number("frozen_grad_clip", self.frozen_grad_clip, low=0)
        self.table.check_backend("onnxruntime")

    @property
    def name(self) -> str:
        """The data set's name in the package ("fashion_mnist" for "fashion-mnist")."""
        return self.dataset.replace("-", "_")

    @property
    def work_dir(self) -> Path:
        return Path(self.run.out) if self.run.out else cache_dir() / self.name / "prepare"

    @property
    def root(self) -> Path:
        return data_root(self.data.root)

    def train_config(self, stage: str) -> TrainConfig:
        """The trainer's settings of the ``supernet`` or ``frozen`` stage (resumable)."""
        out = self.work_dir / ("sandwich" if stage == "supernet" else "frozen")
        common: dict[str, Any] = {
            "dataset": self.name, "data": DataConfig(str(self.root)), "run": replace(self.run, out=str(out)),
            "width_mult": self.width_mult, "batch_size": self.batch_size, "mask_sampling": "sandwich",
            "distill": True, "subset": self.subset, "resume": True}
        if stage == "supernet":
            return TrainConfig(**common, epochs=self.epochs, lr=self.lr)
        return TrainConfig(**common, epochs=self.frozen_epochs, lr=self.frozen_lr, bn_stats="frozen",
                           bn_batches=self.frozen_bn_batches, grad_clip=self.frozen_grad_clip,
                           init_from=str(self.work_dir / "sandwich" / "last.pt"))
