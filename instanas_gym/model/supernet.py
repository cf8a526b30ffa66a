"""The one-shot supernet, with per-image masks and two execution modes.

``Supernet(space)(images, masks)`` returns logits. ``images`` are float NCHW in [0, 1] (or uint8,
converted here); per-dataset normalisation is the model's first step. ``masks`` are either one mask
``(17, 5)`` for the whole batch or one mask per image ``(B, 17, 5)``.

Execution modes (same results in eval mode):

* ``"masked"``: every op runs on every image and is multiplied by its bit, as in the paper's code.
  Nothing gets faster for smaller masks.
* ``"dynamic"``: per cell and op, the images that selected the op are gathered, the op runs on that
  sub-batch only, and the result is scatter-added back. Unselected ops cost nothing; an op chosen by
  every image (always the case at batch 1, or with one mask for the batch) runs without any gather.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

from instanas_gym.space.masks import validate_mask
from instanas_gym.space.search_space import FALLBACK_OP, MASK_SHAPE, OPS, CellSpec, OpSpec, SearchSpace

ExecutionMode = Literal["masked", "dynamic"]
EXECUTION_MODES = ("masked", "dynamic")


def check_images(images: torch.Tensor, channels: int) -> None:
    """Raise a ValueError unless ``images`` is a 4-D NCHW batch with ``channels`` channels."""
    if images.dim() != 4 or images.shape[1] != channels:
        raise ValueError(f"images must be (B, {channels}, H, W) NCHW, got shape {tuple(images.shape)}")


def batch_masks(masks: torch.Tensor | np.ndarray, batch: int) -> torch.Tensor:
    """One (17, 5) mask or one per image, validated, as a bool (batch, 17, 5) tensor (a view where possible)."""
    if isinstance(masks, torch.Tensor) and masks.dtype == torch.bool and masks.shape[-2:] == MASK_SHAPE:
        m = masks  # trusted fast path: bool tensors cannot hold values other than 0/1
    else:
        m = torch.from_numpy(validate_mask(masks, batched=None)).bool()
    if m.dim() == 2:
        return m.unsqueeze(0).expand(batch, -1, -1)
    if m.shape[0] != batch:
        raise ValueError(f"got {m.shape[0]} masks for {batch} images; pass one (17, 5) mask or one per image")
    return m


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    """``channels_last`` if the 4-D tensor ``t`` is laid out that way, else the default layout."""
    return torch.channels_last if t.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


class Cell(nn.Module):
    """One cell: the 5 candidate ops; output = mean (or sum) of selected ops (+ the input where shapes match)."""

    def __init__(self, spec: CellSpec, merge: str = "mean") -> None:
        super().__init__()
        self.spec = spec
        self.mean = merge == "mean"
        self.residual = not spec.opens_stage
        self.ops = nn.ModuleList(build_op(op, spec.in_channels, spec.out_channels, spec.stride) for op in OPS)

    def _merge(self, x: torch.Tensor, acc: torch.Tensor | None, ops_per_image: np.ndarray) -> torch.Tensor:
        """Scale the summed op outputs ``acc`` (mean: by 1 / ops per image) and add the residual."""
        if acc is None:  # no op anywhere in the batch: an identity cell
            return x
        if self.mean and ops_per_image.max() > 1:
            count = torch.from_numpy(np.maximum(ops_per_image, 1)).to(device=acc.device, dtype=acc.dtype)
            acc = acc / count.view(-1, 1, 1, 1)
        return x + acc if self.residual else acc

    def forward_dynamic(self, x: torch.Tensor, mask: np.ndarray) -> torch.Tensor:
        """``mask``: bool numpy (B, 5) of effective ops. Each op runs on the images that chose it.

        Indices come from numpy (no device sync); with autograd off, op outputs are summed in place.
        The output keeps the layout of the op outputs (channels_last stays channels_last).
        """
        batch = x.shape[0]
        counts = mask.sum(0)
        inplace = not torch.is_grad_enabled()
        acc = None
        for j, op in enumerate(self.ops):
            n = counts[j]
            if n == 0:
                continue
            if n == batch:
                y = op(x)
                acc = y if acc is None else (acc.add_(y) if inplace else acc + y)
                continue
            idx = torch.from_numpy(np.flatnonzero(mask[:, j])).to(x.device)
            y = op(x[idx])  # indexing keeps channels_last, which index_select would drop
            if acc is None:
                acc = torch.empty((batch, *y.shape[1:]), dtype=y.dtype, device=y.device,
                                  memory_format=_memory_format(y)).zero_()
            acc = (acc if inplace else acc.clone(memory_format=torch.preserve_format)).index_add_(0, idx, y)
        return self._merge(x, acc, mask.sum(1))

    def forward_masked(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Every op on every image, multiplied by its 0/1 bit (B, 5)."""
        weights = mask.to(x.dtype)
        acc = sum(op(x) * weights[:, j].view(-1, 1, 1, 1) for j, op in enumerate(self.ops))
        return self._merge(x, acc, mask.sum(1).cpu().numpy())


class Supernet(nn.Module):
    """MobileNetV2-based one-shot supernet over :class:`SearchSpace`.

    Args:
        space: the search space (width, input size, channels, classes).
        mean, std: per-channel normalisation of [0, 1] inputs (the dataset's statistics).
        mode: ``"dynamic"`` (default) or ``"masked"`` execution; see the module docstring.
    """

    def __init__(
        self,
        space: SearchSpace,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        mode: ExecutionMode = "dynamic",
    ) -> None:
        super().__init__()
        self.space = space
        self.mode = mode
        c = space.in_channels
        self.register_buffer("mean", torch.tensor(mean or (0.5,) * c, dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("std", torch.tensor(std or (0.5,) * c, dtype=torch.float32).view(1, c, 1, 1))
        self.stem = conv_bn(c, space.stem_channels, 3)
        self.cells = nn.ModuleList(Cell(spec, space.cell_merge) for spec in space.cells)
        self.head = conv_bn(space.cells[-1].out_channels, space.head_channels, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(space.head_channels, space.num_classes)
        self._opens_stage = torch.from_numpy(space.opens_stage)
        self._init_weights()

    @property
    def mode(self) -> ExecutionMode:
        return self._mode

    @mode.setter
    def mode(self, mode: ExecutionMode) -> None:
        if mode not in EXECUTION_MODES:
            raise ValueError(f"mode must be one of {EXECUTION_MODES}, got {mode!r}")
        self._mode = mode

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def prepare_masks(self, masks: torch.Tensor | np.ndarray, batch: int) -> torch.Tensor:
        """Validate and expand masks to the effective bool (B, 17, 5) tensor (fallbacks added)."""
        m = batch_masks(masks, batch)
        empty = ~m.any(-1) & self._opens_stage
        if empty.any():
            m = m.clone()
            m[..., FALLBACK_OP] |= empty
        return m

    def op_params(self) -> np.ndarray:
        """Parameters (weights and BatchNorm affine) of each (cell, op), shape (17, 5), int64."""
        return np.array([[sum(p.numel() for p in op.parameters()) for op in cell.ops] for cell in self.cells])

    def params(self, mask: np.ndarray) -> int:
        """Parameters a mask uses: its ops (fallbacks included), stem, head and classifier."""
        eff = self.space.effective_mask(validate_mask(mask))
        fixed = sum(p.numel() for m in (self.stem, self.head, self.classifier) for p in m.parameters())
        return int((eff * self.op_params()).sum() + fixed)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW (0-255) or float NCHW (0-1) -> normalised float."""
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor, masks: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Logits (B, num_classes) for images (B, C, H, W) under masks (17, 5) or (B, 17, 5)."""
        check_images(images, self.space.in_channels)
        m = self.prepare_masks(masks, images.shape[0]).to(images.device)
        x = self.stem(self.preprocess(images))
        if self.mode == "dynamic":
            m = m.cpu().numpy()
            for c, cell in enumerate(self.cells):
                x = cell.forward_dynamic(x, m[:, c])
        else:
            for c, cell in enumerate(self.cells):
                x = cell.forward_masked(x, m[:, c])
        x = self.pool(self.head(x)).flatten(1)
        return self.classifier(x)


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    """Conv (no bias, 'same' padding) + BatchNorm (+ ReLU6)."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidualOp(nn.Sequential):
    """MobileNetV2's inverted residual without the skip: 1x1 expand, kxk depthwise, 1x1 linear project."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: int, expand: int) -> None:
        hidden = cin * expand
        super().__init__(
            conv_bn(cin, hidden, 1),
            conv_bn(hidden, hidden, kernel, stride, groups=hidden),
            conv_bn(hidden, cout, 1, act=False),
        )


class BasicBlockOp(nn.Sequential):
    """ResNet's basic block without the skip: kxk conv (stride) + ReLU6, kxk conv, BatchNorm."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: int = 3) -> None:
        super().__init__(conv_bn(cin, cout, kernel, stride), conv_bn(cout, cout, kernel, act=False))


def build_op(spec: OpSpec, cin: int, cout: int, stride: int) -> nn.Module:
    if spec.expand is None:
        return BasicBlockOp(cin, cout, stride, spec.kernel)
    return InvertedResidualOp(cin, cout, stride, spec.kernel, spec.expand)
