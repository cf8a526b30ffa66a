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

import numpy as np
import torch
import torch.nn.functional as F

from instanas_gym.space.masks import (
    validate_mask,
)


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










