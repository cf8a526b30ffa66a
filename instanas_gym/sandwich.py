"""Sandwich-rule supernet training with in-place distillation, a probe set of architectures, and
BatchNorm statistics re-estimated per architecture.

Sandwich rule (slimmable networks, Yu & Huang 2019; BigNAS, Yu et al. 2020; Once-for-All, Cai et
al. 2020): every training step runs the largest network (all ops), the smallest valid one (the
cheapest op or the empty cell in each cell, :func:`fastest_mask`) and a few random ones on the same
batch, and takes one optimizer step on the sum of their gradients. With in-place distillation the
largest network learns from the true labels and every other one from the largest network's soft
predictions, detached (:func:`distillation_loss`).

The random members come from three families (:data:`FAMILIES`), drawn uniformly:

* ``"single_op"``: one uniformly random op in every cell;
* ``"uniform_op"``: the same op in every cell (the MobileNetV2 path, the basic-block-only path, ...);
* ``"bernoulli"``: every op kept with a probability drawn from U(0.15, 0.7) per mask, empty cells
  allowed (the identity, or the fallback basic block in a stage-opening cell).

Masks are numpy uint8 ``(17, 5)`` (cells x ops); each network runs one mask on the whole batch.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from instanas_gym.data import ImageSet
from instanas_gym.latency import LatencyTable
from instanas_gym.masks import all_ops_mask, mobilenetv2_mask, single_op_mask, validate_mask
from instanas_gym.samplers import one_op_masks, random_masks
from instanas_gym.search_space import FALLBACK_OP, MASK_SHAPE, NUM_OPS, SearchSpace
from instanas_gym.supernet import Supernet

#: Families of the random sandwich members (see the module docstring).
FAMILIES = ("single_op", "uniform_op", "bernoulli")
#: Range of the per-mask keep probability of the "bernoulli" family.
BERNOULLI_KEEP = (0.15, 0.7)
#: Keep probabilities of the probe set's Bernoulli masks (two masks each).
PROBE_KEEP = (0.15, 0.3, 0.45, 0.6, 0.7)


# ---- masks ---------------------------------------------------------------------------------------
def fastest_mask(ops_cost: np.ndarray, empty_cost: np.ndarray) -> np.ndarray:
    """The cheapest valid mask, uint8 (17, 5): per cell the cheaper of the empty cell and its
    cheapest op (ties go to the empty cell).

    Args:
        ops_cost: (17, 5) cost of each op (any unit: ms, MACs).
        empty_cost: (17,) cost of an empty cell in the same unit (0 for the identity, the fallback
            basic block's cost in a stage-opening cell).
    """
    ops_cost, empty_cost = np.asarray(ops_cost), np.asarray(empty_cost)
    if ops_cost.shape != MASK_SHAPE or empty_cost.shape != MASK_SHAPE[:1]:
        raise ValueError(f"ops_cost must be {MASK_SHAPE} and empty_cost ({MASK_SHAPE[0]},), "
                         f"got {ops_cost.shape} and {empty_cost.shape}")
    mask = np.zeros(MASK_SHAPE, dtype=np.uint8)
    cheapest = ops_cost.argmin(1)
    use_op = ops_cost.min(1) < empty_cost
    mask[np.flatnonzero(use_op), cheapest[use_op]] = 1
    return mask


def mac_costs(space: SearchSpace) -> tuple[np.ndarray, np.ndarray]:
    """(ops_cost (17, 5), empty_cost (17,)) in MACs at batch 1, for :func:`fastest_mask`."""
    ops = space.op_macs
    return ops, np.where(space.opens_stage, ops[:, FALLBACK_OP], 0)


def family_mask(rng: np.random.Generator, family: str) -> np.ndarray:
    """One random uint8 (17, 5) mask of ``family`` (one of :data:`FAMILIES`)."""
    if family == "single_op":
        return one_op_masks(rng, 1)[0]
    if family == "uniform_op":
        return single_op_mask(int(rng.integers(NUM_OPS)))
    if family == "bernoulli":
        return random_masks(rng, 1, float(rng.uniform(*BERNOULLI_KEEP)))[0]
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


def sandwich_masks(rng: np.random.Generator, smallest: np.ndarray, n_random: int) -> list[np.ndarray]:
    """The networks of one sandwich step: ``[all ops, smallest, n_random random ones]``, uint8 (17, 5)
    each; every random one from a family drawn uniformly from :data:`FAMILIES`."""
    if n_random < 0:
        raise ValueError(f"n_random must be >= 0, got {n_random}")
    randoms = [family_mask(rng, FAMILIES[rng.integers(len(FAMILIES))]) for _ in range(n_random)]
    return [all_ops_mask(), validate_mask(smallest), *randoms]


def probe_masks(table: LatencyTable, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """A fixed set of 18 named masks spanning the latency range, the same for the same ``seed``:
    MobileNetV2 path, all ops, basic-block-only, the fastest valid mask by ``table``'s ms, four
    single-op random masks and two Bernoulli masks per keep probability in :data:`PROBE_KEEP`."""
    rng = np.random.default_rng(seed)
    probes = [
        ("mobilenetv2", mobilenetv2_mask()),
        ("all_ops", all_ops_mask()),
        ("basic_only", single_op_mask(FALLBACK_OP)),
        ("fastest", fastest_mask(table.ops_ms, table.empty_ms)),
    ]
    probes += [(f"single_op_{i}", m) for i, m in enumerate(one_op_masks(rng, 4))]
    for p in PROBE_KEEP:
        probes += [(f"bernoulli_{p:.2f}_{i}", m) for i, m in enumerate(random_masks(rng, 2, p))]
    return probes


# ---- training ------------------------------------------------------------------------------------
def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) x T^2, averaged over the batch (scalar).

    ``student``, ``teacher``: logits (B, classes). The teacher is detached here: no gradient reaches it.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    target = F.log_softmax(teacher.detach() / temperature, dim=1)
    log_p = F.log_softmax(student / temperature, dim=1)
    return F.kl_div(log_p, target, reduction="batchmean", log_target=True) * temperature**2


def sandwich_step(
    net: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    masks: list[np.ndarray],
    distill: bool = True,
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
) -> tuple[list[float], torch.Tensor]:
    """Forward and backward every network of one sandwich step on the same batch; gradients add up
    in ``.grad`` (the caller zeroes them before and steps the optimizer after).

    Args:
        net: the supernet (or a wrapper taking ``(images, mask)``), in training mode.
        images: (B, C, H, W) batch; labels: int64 (B,).
        masks: (17, 5) masks, the teacher (largest network) first, as :func:`sandwich_masks` gives.
        distill: the other networks learn the teacher's soft predictions (:func:`distillation_loss`)
            instead of the labels.
        label_smoothing: of the cross-entropy on labels (the teacher's, and every one's without distill).
        temperature: of the distillation.

    Returns:
        (the loss of each network in ``masks`` order, the teacher's logits (B, classes) detached).
    """
    if not masks:
        raise ValueError("masks must hold at least the teacher's mask")
    losses, teacher = [], None
    for mask in masks:
        logits = net(images, torch.from_numpy(validate_mask(mask)).bool())
        if teacher is not None and distill:
            loss = distillation_loss(logits, teacher, temperature)
        else:
            loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
        loss.backward()
        losses.append(loss.item())
        teacher = logits.detach() if teacher is None else teacher
    return losses, teacher


# ---- BatchNorm statistics ------------------------------------------------------------------------
def batch_norms(model: torch.nn.Module) -> list[torch.nn.BatchNorm2d]:
    """Every BatchNorm2d of ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]


@torch.no_grad()
def estimate_bn(
    model: Supernet, data: ImageSet, masks: list[np.ndarray], batch_size: int = 128, seed: int = 0
) -> None:
    """Re-estimate ``model``'s BatchNorm running statistics in place as the plain average over one
    batch of ``batch_size`` training images (drawn with replacement, seeded by ``seed``, not
    augmented) per mask in ``masks``, each mask run on its whole batch; ``model`` is left in eval mode.
    BatchNorms that no mask runs are reset (mean 0, variance 1)."""
    if batch_size < 1 or not masks:
        raise ValueError(f"batch_size must be >= 1 and masks non-empty, got {batch_size} and {len(masks)} masks")
    norms = batch_norms(model)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    images, _ = data.tensors()
    gen = torch.Generator().manual_seed(seed)
    for mask in masks:
        model(images[torch.randint(0, len(images), (batch_size,), generator=gen)].to(model.mean.device),
              torch.from_numpy(validate_mask(mask)).bool())
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


def shared_bn_masks(rng: np.random.Generator, smallest: np.ndarray, batches: int) -> list[np.ndarray]:
    """``batches`` masks for :func:`estimate_bn` of the shared statistics: sandwich members in
    turn (all ops, the smallest network, random ones of :data:`FAMILIES`)."""
    masks: list[np.ndarray] = []
    while len(masks) < batches:
        masks += sandwich_masks(rng, smallest, 2)
    return masks[:batches]


def freeze_bn(model: torch.nn.Module) -> None:
    """Put every BatchNorm of ``model`` in eval mode (normalise with the running statistics, leave
    them unchanged) while the rest may train; the affine weights still learn."""
    for m in batch_norms(model):
        m.eval()


def recalibrate_bn(
    model: Supernet, data: ImageSet, mask: np.ndarray, batches: int = 20, batch_size: int = 128, seed: int = 0
) -> Supernet:
    """A copy of ``model`` in eval mode whose BatchNorm running statistics are re-estimated for one
    architecture, as Once-for-All does; ``model`` itself is left untouched.

    The statistics of the BatchNorms that ``mask`` runs become the plain average over ``batches``
    batches of ``batch_size`` images of ``data`` (:func:`estimate_bn`); every other BatchNorm keeps
    the shared statistics.
    """
    if batches < 1:
        raise ValueError(f"batches must be >= 1, got {batches}")
    calibrated = copy.deepcopy(model)
    estimate_bn(calibrated, data, [mask] * batches, batch_size, seed)
    for m, original in zip(batch_norms(calibrated), batch_norms(model)):
        if m.num_batches_tracked.item() == 0:  # not run under this mask: keep the shared statistics
            m.load_state_dict(original.state_dict())
    return calibrated
