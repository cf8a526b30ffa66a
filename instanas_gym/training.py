"""One-shot pre-training of the supernet, resumable, on one process or many (``torchrun``).

Each batch runs under random per-image masks. For the first half of training every op is on; over
the second half each op is kept with a probability falling linearly from 1 to ``min_keep_prob``
(0.5 by default, the paper's drop-path schedule), with at least one op kept in every cell.
That schedule rarely shows the network single-op paths (the MobileNetV2 path among them), which then
stay poor; ``mask_sampling="mixed"`` with ``init_from`` fine-tunes under masks from single-op to
dense (:func:`~instanas_gym.search_space.mixed_masks`).
SGD with Nesterov momentum and a per-step cosine learning rate.

Checkpoints (``last.pt`` in ``out``) hold the weights, search-space config, dataset, position
(epoch, batch), optimizer, scheduler, RNG states and metrics; they are written atomically every
``checkpoint_every`` steps, at each epoch end and on Ctrl-C, so ``resume=True`` continues a killed run
with at most ``checkpoint_every`` steps redone.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from torch.utils.data import DistributedSampler

from .checkpoint import atomic_save, load_checkpoint, supernet_state
from .data import ImageSet, augment, load_split
from .search_space import SearchSpace, all_ops_mask, load_mask, mixed_masks, mobilenetv2_mask, random_masks
from .runtime import tune_allocator
from .supernet import Supernet


MASK_SAMPLING = ("paper", "mixed", "mobilenetv2", "fixed")


@dataclass
class TrainConfig:
    """Arguments of :func:`train_supernet` (``examples/train_supernet.py`` exposes each as a flag)."""

    dataset: str = "fashion_mnist"
    data_root: str | None = None
    download: bool = False
    width_mult: float = 0.25
    cell_merge: str = "mean"  # "sum" to add the ops' outputs instead
    epochs: int = 10
    batch_size: int = 128  # per process
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.0
    min_keep_prob: float = 0.5
    # "paper": the keep-probability schedule; "mixed": mixed_masks (fine-tuning); "mobilenetv2": the
    # MobileNetV2 path only (a plain MobileNetV2 from scratch, or that path fine-tuned with init_from);
    # "fixed": the mask in fixed_mask only (e.g. a search's architecture, retrained alone)
    mask_sampling: str = "paper"
    fixed_mask: str | None = None  # mask file (search_space.load_mask) for mask_sampling="fixed"
    init_from: str | None = None  # start from this checkpoint's weights (fine-tuning)
    train_subset: int | None = None  # first N training images only (tests, quick runs)
    eval_subset: int | None = None
    eval_batch_size: int = 256
    threads: int = 2
    channels_last: bool = True  # ~1.7x faster training on CPU
    seed: int = 0
    out: str = "runs/supernet"
    checkpoint_every: int = 200  # steps
    resume: bool = False


def keep_prob(progress: float, min_keep_prob: float = 0.5) -> float:
    """Per-op keep probability at ``progress`` in [0, 1] of training: 1 in the first half, then linear."""
    if progress < 0.5:
        return 1.0
    return 1.0 - (1.0 - min_keep_prob) * min(1.0, (progress - 0.5) / 0.5)


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises gloo when launched by torchrun with WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


@torch.no_grad()
def correct_per_image(
    model: Supernet, data: ImageSet, masks: np.ndarray | Callable[[int], np.ndarray], batch_size: int = 256
) -> np.ndarray:
    """Bool (N,): which images of ``data`` are classified right under one fixed mask (17, 5) or
    ``masks(n)`` per-image masks (eval mode, restored after)."""
    was_training = model.training
    model.eval()
    images, labels = data.tensors()
    right = []
    for i in range(0, len(labels), batch_size):
        x = images[i : i + batch_size]
        m = masks(len(x)) if callable(masks) else masks
        right.append((model(x, m).argmax(1) == labels[i : i + batch_size]).numpy())
    model.train(was_training)
    return np.concatenate(right)


def evaluate(
    model: Supernet, data: ImageSet, masks: np.ndarray | Callable[[int], np.ndarray], batch_size: int = 256
) -> float:
    """Top-1 accuracy (0-1) on ``data`` under one fixed mask (17, 5) or ``masks(n)`` per-image masks."""
    return float(correct_per_image(model, data, masks, batch_size).mean())


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def train_supernet(
    cfg: TrainConfig, on_step: Callable[[int], None] | None = None, console: Console | None = None
) -> dict:
    """Pre-train a supernet as configured; returns the final metrics. Writes ``out/last.pt``.

    ``on_step(global_step)`` is called after every optimisation step (tests use it to interrupt).
    """
    console = console or Console()
    rank, world = _distributed()
    tune_allocator()
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    ckpt_path = out / "last.pt"

    train = load_split(cfg.dataset, "train", cfg.data_root, cfg.download)
    test = load_split(cfg.dataset, "test", cfg.data_root, cfg.download)
    if cfg.train_subset:
        train = ImageSet(train.images[: cfg.train_subset], train.labels[: cfg.train_subset], train.spec, "train", train.source)
    if cfg.eval_subset:
        test = ImageSet(test.images[: cfg.eval_subset], test.labels[: cfg.eval_subset], test.spec, "test", test.source)
    spec = train.spec
    h, _, c = spec.image_shape
    space = SearchSpace(cfg.width_mult, h, c, spec.num_classes, cfg.cell_merge)

    torch.manual_seed(cfg.seed)
    model = Supernet(space, spec.mean, spec.std, mode="dynamic")
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    if cfg.init_from:
        model.load_state_dict(load_checkpoint(cfg.init_from)["model"])
    model = model.to(memory_format=fmt)
    if cfg.mask_sampling not in MASK_SAMPLING:
        raise ValueError(f"mask_sampling must be one of {MASK_SAMPLING}, got {cfg.mask_sampling!r}")
    if (cfg.mask_sampling == "fixed") != (cfg.fixed_mask is not None):
        raise ValueError("mask_sampling='fixed' and fixed_mask (a mask file) go together")
    fixed = load_mask(cfg.fixed_mask) if cfg.fixed_mask else None
    only = mobilenetv2_mask() if cfg.mask_sampling == "mobilenetv2" else fixed  # one architecture, or None
    net: torch.nn.Module = model
    if world > 1:
        # ops chosen by no image of a batch get no gradient: DDP must expect unused parameters
        net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True
    )
    sampler = DistributedSampler(range(len(train)), num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    steps_per_epoch = math.ceil(len(sampler) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))
    )
    aug_gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    mask_rng = np.random.default_rng([cfg.seed, rank])
    epoch, batch_in_epoch, history = 0, 0, []

    if cfg.resume and ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        epoch, batch_in_epoch, history = ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["metrics"]["history"]
        aug_gen.set_state(ckpt["rng"]["augment"][rank])
        mask_rng.bit_generator.state = ckpt["rng"]["masks"][rank]
        torch.set_rng_state(ckpt["rng"]["torch"])
        if rank == 0:
            console.print(f"resumed from {ckpt_path} at epoch {epoch}, batch {batch_in_epoch}")

    def save() -> None:
        aug_states = [aug_gen.get_state()]
        mask_states = [mask_rng.bit_generator.state]
        if world > 1:  # every rank's RNG state goes into rank 0's checkpoint
            aug_states, mask_states = [None] * world, [None] * world
            dist.all_gather_object(aug_states, aug_gen.get_state())
            dist.all_gather_object(mask_states, mask_rng.bit_generator.state)
        if rank != 0:
            return
        state = supernet_state(
            model,
            cfg.dataset,
            config=asdict(cfg),
            train_mask=None if fixed is None else fixed.tolist(),
            epoch=epoch,
            batch_in_epoch=batch_in_epoch,
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            rng={"augment": aug_states, "masks": mask_states, "torch": torch.get_rng_state()},
            metrics={"history": history},
        )
        atomic_save(state, ckpt_path)

    images, labels = train.tensors()
    progress = _progress(console)
    task = progress.add_task("supernet", total=total_steps, completed=epoch * steps_per_epoch + batch_in_epoch, stats="")
    net.train()
    try:
        with progress if rank == 0 else _Quiet():
            while epoch < cfg.epochs:
                sampler.set_epoch(epoch)
                order = torch.tensor(list(iter(sampler)))
                loss_sum = correct = seen = 0.0
                t0 = time.perf_counter()
                for b in range(batch_in_epoch, steps_per_epoch):
                    idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                    step = epoch * steps_per_epoch + b
                    p = keep_prob(step / total_steps, cfg.min_keep_prob)
                    if cfg.mask_sampling == "mixed":
                        masks = torch.from_numpy(mixed_masks(mask_rng, len(idx))).bool()
                    elif only is not None:  # one architecture: the MobileNetV2 path or the fixed mask
                        masks = torch.from_numpy(only).bool().expand(len(idx), -1, -1)
                    else:
                        masks = torch.from_numpy(random_masks(mask_rng, len(idx), p, min_ops=1)).bool()
                    x = augment(images[idx], spec, aug_gen).contiguous(memory_format=fmt)
                    logits = net(x, masks)
                    loss = F.cross_entropy(logits, labels[idx], label_smoothing=cfg.label_smoothing)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    batch_in_epoch = b + 1
                    loss_sum += loss.item() * len(idx)
                    correct += (logits.argmax(1) == labels[idx]).sum().item()
                    seen += len(idx)
                    ips = seen * world / (time.perf_counter() - t0)
                    progress.update(
                        task,
                        advance=1,
                        stats=f"ep {epoch + 1}/{cfg.epochs} loss {loss_sum / seen:.3f} acc {correct / seen:.3f} "
                        f"keep {p:.2f} lr {scheduler.get_last_lr()[0]:.4f} {ips:.0f} img/s",
                    )
                    if on_step is not None:
                        on_step(step + 1)
                    if (step + 1) % cfg.checkpoint_every == 0:
                        save()
                history.append(
                    {"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1)}
                )
                if rank == 0:
                    progress.console.log(
                        f"epoch {epoch + 1}/{cfg.epochs}: loss {history[-1]['loss']:.4f}, "
                        f"train acc {history[-1]['train_acc']:.4f}, keep prob {p:.2f}"
                    )
                epoch, batch_in_epoch = epoch + 1, 0
                save()
    except KeyboardInterrupt:
        save()
        if rank == 0:
            console.print(f"interrupted: checkpoint saved to {ckpt_path}; rerun with --resume to continue")
        raise

    metrics: dict[str, float] = {}
    if rank == 0:
        metrics = final_evaluation(model, test, cfg.eval_batch_size, cfg.seed, fixed=fixed)
        state = load_checkpoint(ckpt_path)
        state["metrics"] = {"history": history, **metrics}
        atomic_save(state, ckpt_path)
        console.print(metrics_table(metrics, test))
    if world > 1:
        dist.barrier()
    return metrics


@torch.no_grad()
def recalibrate_bn(
    model: Supernet, data: ImageSet, batches: int = 100, batch_size: int = 128, seed: int = 0
) -> None:
    """Re-estimate every BatchNorm's running statistics as the plain average over ``batches`` batches
    of training images under :func:`mixed_masks` (sparse to dense), instead of the moving average of
    the last training steps, whose masks were all drawn at one keep probability."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    images, _ = data.tensors()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = model.training
    model.train()
    for _ in range(batches):
        idx = torch.randint(0, len(images), (batch_size,), generator=gen)
        model(images[idx], torch.from_numpy(mixed_masks(rng, batch_size)).bool())
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


def final_evaluation(
    model: Supernet, test: ImageSet, batch_size: int = 256, seed: int = 0, fixed: np.ndarray | None = None
) -> dict[str, float]:
    """Test accuracy of the MobileNetV2 path, all ops, per-image Bernoulli(0.5) random masks, and
    the ``fixed`` mask trained alone when given."""
    rng = np.random.default_rng(seed)
    out = {
        "test_acc_mobilenetv2": evaluate(model, test, mobilenetv2_mask(), batch_size),
        "test_acc_all_ops": evaluate(model, test, all_ops_mask(), batch_size),
        "test_acc_random": evaluate(model, test, lambda n: random_masks(rng, n, 0.5, min_ops=1), batch_size),
    }
    if fixed is not None:
        out["test_acc_fixed"] = evaluate(model, test, fixed, batch_size)
    return out


def metrics_table(metrics: dict[str, float], test: ImageSet) -> Table:
    table = Table(title=f"supernet test accuracy ({test.spec.name}, {len(test)} images)")
    table.add_column("architecture")
    table.add_column("top-1 accuracy", justify="right")
    names = {"mobilenetv2": "MobileNetV2 path", "all_ops": "all ops", "random": "random masks (p=0.5)",
             "fixed": "the fixed mask it trained"}
    for key, name in names.items():
        if f"test_acc_{key}" in metrics:
            table.add_row(name, f"{100 * metrics[f'test_acc_{key}']:.2f}%")
    return table


class _Quiet:
    """Stands in for the progress display on ranks other than 0."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
