"""An inference-only copy of the supernet with BatchNorm folded into the convolutions.

``fold_batchnorm(supernet)`` returns a deep copy in eval mode in which every convolution + BatchNorm
(+ ReLU6) of the stem, the head and every op becomes one convolution with a bias (+ an in-place
ReLU6), run through ``torch.nn.functional`` without a module call per layer. Outputs match the
original in eval mode to float rounding (tested, <= 1e-4); the copy runs both execution modes, and
fewer, cheaper calls matter most where per-call cost dominates: small sub-batches in dynamic
execution at small widths (see ``benchmarks/bench_supernet.py --fold-bn``).

The copy can't train (BatchNorm is gone; a forward in training mode raises) and does not follow later changes to
the original's weights: fold again after training. The latency table is measured on the unfolded
supernet, so the environment keeps using that one.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from instanas_gym.model.supernet import Supernet
from instanas_gym.space.data import ImageSet
from instanas_gym.space.masks import (
    sandwich_masks,
    validate_mask,
)


class FoldedConvs(nn.Module):
    """A chain of ``conv_bn`` blocks as folded convolutions: ``conv(x, w, b)`` then ReLU6 where the block had one."""

    def __init__(self, blocks: list[nn.Sequential]) -> None:
        super().__init__()
        self.layers: list[tuple[tuple[int, ...], tuple[int, ...], int, bool]] = []
        for i, block in enumerate(blocks):
            conv, bn = block[0], block[1]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                raise TypeError(f"expected Conv2d + BatchNorm2d, got {type(conv).__name__} + {type(bn).__name__}")
            fused = fuse_conv_bn_eval(conv.eval(), bn.eval())
            self.register_buffer(f"weight{i}", fused.weight.detach().clone())
            self.register_buffer(f"bias{i}", fused.bias.detach().clone())
            self.layers.append((fused.stride, fused.padding, fused.groups, isinstance(block[-1], nn.ReLU6)))
        self.train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError(
                "a BatchNorm-folded supernet is for inference only; train the original and fold it again"
            )
        buffers = self._buffers
        for i, (stride, padding, groups, act) in enumerate(self.layers):
            x = F.conv2d(x, buffers[f"weight{i}"], buffers[f"bias{i}"], stride, padding, 1, groups)
            if act:
                x = F.hardtanh_(x, 0.0, 6.0)
        return x


def fold_batchnorm(model: Supernet) -> Supernet:
    """An eval-only deep copy of ``model`` with every conv + BatchNorm folded (see module docstring)."""
    folded = copy.deepcopy(model).eval()
    folded.stem = FoldedConvs([folded.stem])
    folded.head = FoldedConvs([folded.head])
    for cell in folded.cells:
        cell.ops = nn.ModuleList(FoldedConvs(list(op)) for op in cell.ops)
    return folded


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

def own_bn_state(
    work: Supernet, data: ImageSet, mask: np.ndarray, batches: int = 20, batch_size: int = 128, seed: int = 0
) -> dict[str, torch.Tensor]:
    """BatchNorm statistics of one architecture alone, as Once-for-All estimates them: the running
    statistics (state-dict name -> CPU tensor: ``running_mean``, ``running_var``,
    ``num_batches_tracked``) of every BatchNorm that ``mask`` runs, each the plain average over
    ``batches`` batches of ``batch_size`` images of ``data`` (:func:`estimate_bn`, seeded by ``seed``).

    ``work``'s running statistics are overwritten (pass a copy of the supernet); it is left in eval mode.
    """
    if batches < 1:
        raise ValueError(f"batches must be >= 1, got {batches}")
    estimate_bn(work, data, [mask] * batches, batch_size, seed)
    return {f"{name}.{buffer}": value.detach().cpu().clone()
            for name, m in work.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and m.num_batches_tracked.item() > 0
            for buffer, value in m.named_buffers()}


def recalibrate_bn(
    model: Supernet, data: ImageSet, mask: np.ndarray, batches: int = 20, batch_size: int = 128, seed: int = 0
) -> Supernet:
    """A copy of ``model`` in eval mode whose BatchNorms that ``mask`` runs hold statistics of their
    own (:func:`own_bn_state`); every other BatchNorm keeps the shared statistics and ``model`` itself
    is left untouched."""
    calibrated = copy.deepcopy(model)
    own = own_bn_state(calibrated, data, mask, batches, batch_size, seed)
    calibrated.load_state_dict(model.state_dict())
    calibrated.load_state_dict(own, strict=False)
    return calibrated.eval()
