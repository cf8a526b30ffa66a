"""The settings of a supernet training run (:class:`TrainConfig`, ``instanas-gym train-supernet``)
and which of them a resumed run may change."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from instanas_gym.model.checkpoint import load_checkpoint
from instanas_gym.space.data import DataConfig, get_spec
from instanas_gym.utils.checks import check_int, check_number
from instanas_gym.utils.files import FileFormatError
from instanas_gym.utils.run import RunConfig, flat_settings

MaskSampling = Literal["paper", "mixed", "mobilenetv2", "fixed", "sandwich"]
MASK_SAMPLING = ("paper", "mixed", "mobilenetv2", "fixed", "sandwich")
#: Settings that may differ between a run and its resume; every other one must match.
RESUMABLE_CHANGES = ("resume", "run.out", "run.threads", "run.device", "checkpoint_every", "eval_subset",
                     "eval_batch_size", "data.root", "data.download", "probe_images", "probe_table",
                     "teacher", "teacher_mask")  # the teacher's file and architecture are checked by content
#: Where settings of older checkpoints (flat) live now.
MOVED = {"seed": "run.seed", "threads": "run.threads", "device": "run.device", "precision": "run.precision",
         "out": "run.out", "data_root": "data.root", "download": "data.download"}


@dataclass
class TrainConfig:
    """Arguments of :func:`train_supernet` (``instanas-gym train-supernet`` exposes each as a flag)."""

    dataset: str = "fashion_mnist"
    """"fashion_mnist", "cifar10" or "cifar100"."""
    data: DataConfig = field(default_factory=DataConfig)
    """Where the images are."""
    run: RunConfig = field(default_factory=lambda: RunConfig(out="runs/supernet"))
    """Seed, threads, device, precision and the output folder (last.pt, the checkpoint)."""
    width_mult: float = 0.25
    """Width multiplier of every channel count."""
    cell_merge: Literal["mean", "sum"] = "mean"
    """How a cell merges its ops' outputs."""
    epochs: int = 10
    batch_size: int = 128
    """Images per step and process."""
    lr: float = 0.1
    """Peak SGD learning rate (cosine to 0 per step)."""
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.0
    min_keep_prob: float = 0.5
    """Per-op keep probability at the end of the "paper" schedule."""
    mask_sampling: MaskSampling = "paper"
    """Which masks the batches run under (see the module docstring)."""
    sandwich_random: int = 2
    """Random networks per sandwich step (mask_sampling="sandwich")."""
    distill: bool = True
    """Sandwich: every network but the largest learns the largest's soft predictions (or, with a
    teacher, every network the teacher's), not the labels."""
    teacher: str | None = None
    """Sandwich: a supernet checkpoint whose architecture ``teacher_mask`` (trained alone) is a fixed
    teacher: every sampled network learns its soft predictions (KL), the largest also the labels
    (``label_weight``); it runs in eval mode without gradients, and only its path and file SHA-256
    join the checkpoint (a resume with another teacher file is refused). None: in-place distillation."""
    teacher_mask: str | None = None
    """Mask file of the teacher's architecture; None: the mask the teacher checkpoint was trained on
    alone if it stores one, else its MobileNetV2 path."""
    distill_temperature: float = 1.0
    """Temperature of the distillation (KL of softened predictions, x T^2)."""
    label_weight: float = 0.5
    """With a teacher, the largest network's loss: label_weight x CE(labels) + (1 - label_weight) x KL(teacher)."""
    bn_stats: Literal["batch", "frozen"] = "batch"
    """"batch": BatchNorm normalises with batch statistics while training (its running statistics
    average whatever masks ran); "frozen": the shared running statistics are re-estimated once at
    the start over ``bn_batches`` batches of sandwich members and then held fixed, and the weights
    learn to work with them, as every per-image mask is run at inference (fine-tuning, with init_from)."""
    bn_batches: int = 200
    """Batches (of batch_size) of the statistics estimate of bn_stats="frozen"."""
    grad_clip: float = 0.0
    """Clip the global gradient norm to this before each step (0: no clipping)."""
    fixed_mask: str | None = None
    """Mask file (instanas_gym.space.masks.load_mask) for mask_sampling="fixed"."""
    init_from: str | None = None
    """Start from this checkpoint's weights (fine-tuning)."""
    train_subset: int | None = None
    """First N training images only (tests, quick runs)."""
    eval_subset: int | None = None
    """First N test images only in the final evaluation."""
    eval_batch_size: int = 256
    probe_images: int = 0
    """After every epoch, score the probe architectures (instanas_gym.space.family.probe_masks) and
    per-image Bernoulli(0.5) masks on the first N test images, shared statistics: logged, kept in the
    checkpoint's history and in ``out/probes.csv`` (0: no probes)."""
    probe_table: str | None = None
    """Latency table whose fastest mask joins the probes; None: the dataset's default eager-PyTorch table."""
    channels_last: bool = True
    """channels_last memory format (~1.7x faster training on CPU)."""
    checkpoint_every: int = 200
    """Steps between checkpoints (also at every epoch end)."""
    resume: bool = False
    """Continue from out/last.pt if it exists (same settings required)."""

    def __post_init__(self) -> None:
        get_spec(self.dataset)
        for name in ("epochs", "batch_size", "eval_batch_size", "checkpoint_every", "bn_batches"):
            check_int(name, getattr(self, name))
        check_int("sandwich_random", self.sandwich_random, minimum=0)
        for name in ("train_subset", "eval_subset"):
            check_int(name, getattr(self, name), optional=True)
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

