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

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from instanas_gym.supernet import Supernet


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
