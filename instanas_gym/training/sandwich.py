"""Sandwich-rule supernet training with in-place distillation or distillation from a fixed teacher.

Sandwich rule (slimmable networks, Yu & Huang 2019; BigNAS, Yu et al. 2020; Once-for-All, Cai et
al. 2020): every training step runs the largest network (all ops), the smallest valid one (the
cheapest op or the empty cell in each cell, :func:`fastest_mask`) and a few random ones on the same
batch, and takes one optimizer step on the sum of their gradients. With in-place distillation the
largest network learns from the true labels and every other one from the largest network's soft
predictions, detached (:func:`distillation_loss`). With a fixed teacher (a network trained alone,
:mod:`instanas_gym.training.teacher`) every network learns the teacher's soft predictions instead,
and the largest the labels too (:func:`member_loss`).

The random members come from three families (:data:`FAMILIES`), drawn uniformly:

* ``"single_op"``: one uniformly random op in every cell;
* ``"uniform_op"``: the same op in every cell (the MobileNetV2 path, the basic-block-only path, ...);
* ``"bernoulli"``: every op kept with a probability drawn from U(0.15, 0.7) per mask, empty cells
  allowed (the identity, or the fallback basic block in a stage-opening cell).

Masks are numpy uint8 ``(17, 5)`` (cells x ops); each network runs one mask on the whole batch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from instanas_gym.space.masks import validate_mask


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


def member_loss(
    logits: torch.Tensor, labels: torch.Tensor, target: torch.Tensor | None, largest: bool, teacher_fixed: bool,
    label_smoothing: float = 0.0, temperature: float = 1.0, label_weight: float = 0.5,
) -> torch.Tensor:
    """The loss of one sandwich member with logits ``logits`` (B, classes).

    * ``target`` None (no distillation): the cross-entropy on ``labels``;
    * in-place distillation (``teacher_fixed`` False, ``target`` the largest network's logits): the
      largest network learns the labels, every other one :func:`distillation_loss` to ``target``;
    * a fixed teacher (``teacher_fixed``, ``target`` its logits): every member learns the teacher's
      soft targets, and the largest network the labels too: ``label_weight`` x CE(labels) +
      (1 - label_weight) x KL(teacher). At temperature 1 and ``label_weight`` 0.5 that is a
      cross-entropy against the mean of the one-hot label and the teacher's probabilities (up to a
      constant): the labels correct the teacher's mistakes, the teacher gives the similarities between
      classes, and the largest network's gradient has the scale of every other member's.
    """
    if target is None or (largest and not teacher_fixed):
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    soft = distillation_loss(logits, target, temperature)
    if largest:
        return label_weight * F.cross_entropy(logits, labels, label_smoothing=label_smoothing) + (1 - label_weight) * soft
    return soft


def sandwich_step(
    net: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    masks: list[np.ndarray],
    distill: bool = True,
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
    teacher: torch.Tensor | None = None,
    label_weight: float = 0.5,
) -> tuple[list[float], torch.Tensor]:
    """Forward and backward every network of one sandwich step on the same batch; gradients add up
    in ``.grad`` (the caller zeroes them before and steps the optimizer after).

    Args:
        net: the supernet (or a wrapper taking ``(images, mask)``), in training mode.
        images: (B, C, H, W) batch; labels: int64 (B,).
        masks: (17, 5) masks, the largest network first, as :func:`sandwich_masks` gives.
        distill: the other networks learn soft predictions (:func:`member_loss`) instead of the labels.
        label_smoothing: of the cross-entropy on labels.
        temperature: of the distillation.
        teacher: a fixed teacher's logits (B, classes) on ``images``; None: in-place distillation
            from the largest network. Detached here: no gradient reaches the teacher.
        label_weight: the labels' share of the largest network's loss under a fixed teacher.

    Returns:
        (the loss of each network in ``masks`` order, the largest network's logits (B, classes) detached).
    """
    if not masks:
        raise ValueError("masks must hold at least the largest network's mask")
    fixed = teacher.detach() if teacher is not None else None
    losses, largest = [], None
    for mask in masks:
        logits = net(images, torch.from_numpy(validate_mask(mask)).bool())
        target = (fixed if fixed is not None else largest) if distill else None
        loss = member_loss(logits, labels, target, largest is None, fixed is not None, label_smoothing, temperature,
                           label_weight)
        loss.backward()
        losses.append(loss.item())
        largest = logits.detach() if largest is None else largest
    assert largest is not None
    return losses, largest
