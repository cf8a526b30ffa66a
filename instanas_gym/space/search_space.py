"""The InstaNAS search space: a MobileNetV2 backbone for small images with 5 candidate ops per cell.

The whole space is the table below, read like the MobileNetV2 paper (Sandler et al., 2018, Table 2)
with the expansion factor ``t`` replaced by the controller's choice of ops. Strides follow the usual
CIFAR adaptation (stem stride 1, second stage stride 1), so a 32x32 input ends at 4x4.

A *mask* selects ops: shape ``(17, 5)``, one row per cell, one column per op. A cell may run several
ops at once or none. Several ops' outputs are merged by their mean (``cell_merge="mean"``, the
default) or their sum (``"sum"``), plus one residual where shapes allow. (The paper's code adds a
residual inside every op, so k ops add k times the input; here the input is added once.) The mean
keeps a cell's output scale the same whatever the number of ops, so one set of BatchNorm statistics
serves sparse and dense masks: see benchmarks/README.md for what the sum costs. Empty cells:

* no op in a cell whose input and output shapes match: the cell is the identity;
* no op in a cell that opens a stage (stride 2 or a change of channels): the basic block runs
  instead (the fallback), and its cost counts in MACs and latency.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

SEARCH_SPACE_VERSION = "instanas-mbv2-cifar-v1"


@dataclass(frozen=True)
class OpSpec:
    """One candidate op: an inverted residual (``expand`` set) or a basic block (``expand=None``)."""

    name: str
    kernel: int
    expand: int | None


#: The 5 candidate ops of every cell, in mask column order.
OPS: tuple[OpSpec, ...] = (
    OpSpec("ir_k3_e6", kernel=3, expand=6),
    OpSpec("ir_k3_e3", kernel=3, expand=3),
    OpSpec("ir_k5_e6", kernel=5, expand=6),
    OpSpec("ir_k5_e3", kernel=5, expand=3),
    OpSpec("basic", kernel=3, expand=None),
)
#: Column of the basic block, the fallback of an empty cell that opens a stage.
FALLBACK_OP = 4
#: Column of the MobileNetV2 op (inverted residual 3x3, expansion 6).
MOBILENETV2_OP = 0

#: Backbone stages for 32x32 inputs: out channels c, number of cells n, stride s of the first cell.
STAGES: tuple[tuple[int, int, int], ...] = (
    # c,  n, s
    (16, 1, 1),
    (24, 2, 1),  # stride 2 on ImageNet; 1 for 32x32 inputs
    (32, 3, 2),
    (64, 4, 2),
    (96, 3, 1),
    (160, 3, 2),
    (320, 1, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280

CELL_MERGES = ("mean", "sum")
NUM_CELLS = sum(n for _, n, _ in STAGES)
NUM_OPS = len(OPS)
MASK_SHAPE = (NUM_CELLS, NUM_OPS)


def _make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to the nearest multiple of ``divisor``, never going down by more than 10%."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


@dataclass(frozen=True)
class CellSpec:
    """One cell of the backbone after the width multiplier: channels, stride and spatial sizes."""

    index: int
    in_channels: int
    out_channels: int
    stride: int
    in_size: int
    out_size: int

    @property
    def opens_stage(self) -> bool:
        """True where the cell changes stride or channels: no identity, the fallback op runs."""
        return self.stride != 1 or self.in_channels != self.out_channels


def _conv_out(size: int, stride: int) -> int:
    """Output size of a 'same'-padded convolution with this stride."""
    return (size - 1) // stride + 1


@dataclass(frozen=True)
class SearchSpace:
    """The search space for one input shape and width.

    Args:
        width_mult: width multiplier applied to every channel count (``_make_divisible`` by 8).
        input_size: input height = width in pixels (32 for CIFAR, 28 for Fashion-MNIST).
        in_channels: image channels (3 for CIFAR, 1 for Fashion-MNIST).
        num_classes: classifier outputs.
        cell_merge: how a cell merges its ops' outputs, "mean" (default) or "sum".
    """

    width_mult: float = 1.0
    input_size: int = 32
    in_channels: int = 3
    num_classes: int = 10
    cell_merge: str = "mean"

    def __post_init__(self) -> None:
        if self.cell_merge not in CELL_MERGES:
            raise ValueError(f"cell_merge must be one of {CELL_MERGES}, got {self.cell_merge!r}")
        if self.width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {self.width_mult}")
        if self.input_size < 8:
            raise ValueError(f"input_size must be >= 8 pixels, got {self.input_size}")

    @property
    def stem_channels(self) -> int:
        return _make_divisible(STEM_CHANNELS * self.width_mult)

    @property
    def head_channels(self) -> int:
        return _make_divisible(HEAD_CHANNELS * max(1.0, self.width_mult))

    @cached_property
    def cells(self) -> tuple[CellSpec, ...]:
        cells = []
        channels, size = self.stem_channels, self.input_size
        for c, n, s in STAGES:
            out_channels = _make_divisible(c * self.width_mult)
            for i in range(n):
                stride = s if i == 0 else 1
                out_size = _conv_out(size, stride)
                cells.append(CellSpec(len(cells), channels, out_channels, stride, size, out_size))
                channels, size = out_channels, out_size
        return tuple(cells)

    @property
    def final_size(self) -> int:
        return self.cells[-1].out_size

    def to_dict(self) -> dict:
        return {
            "width_mult": self.width_mult,
            "input_size": self.input_size,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "cell_merge": self.cell_merge,
            "version": SEARCH_SPACE_VERSION,
        }

    @classmethod
    def from_dict(cls, d: dict) -> SearchSpace:
        version = d.get("version", SEARCH_SPACE_VERSION)
        if version != SEARCH_SPACE_VERSION:
            raise ValueError(f"search space version {version!r} is not {SEARCH_SPACE_VERSION!r}")
        return cls(
            float(d["width_mult"]), int(d["input_size"]), int(d["in_channels"]), int(d["num_classes"]),
            d.get("cell_merge", "mean"),
        )

    # ---- masks -------------------------------------------------------------------------------
    @cached_property
    def opens_stage(self) -> np.ndarray:
        """Boolean vector (17,): cells whose empty case runs the fallback basic block."""
        return np.array([c.opens_stage for c in self.cells])

    def effective_mask(self, mask: np.ndarray) -> np.ndarray:
        """The ops that really run: the mask plus the fallback op in empty stage-opening cells.

        Works on one mask ``(17, 5)`` or a batch ``(B, 17, 5)``; returns bool of the same shape.
        """
        m = np.asarray(mask).astype(bool)
        if m.shape[-2:] != MASK_SHAPE:
            raise ValueError(f"mask must have shape {MASK_SHAPE} or (B, *{MASK_SHAPE}), got {m.shape}")
        empty = ~m.any(axis=-1) & self.opens_stage
        out = m.copy()
        out[..., FALLBACK_OP] |= empty
        return out

    # ---- cost --------------------------------------------------------------------------------
    @cached_property
    def op_macs(self) -> np.ndarray:
        """Multiply-accumulates of each (cell, op) at batch 1, shape (17, 5), int64."""
        table = np.zeros(MASK_SHAPE, dtype=np.int64)
        for cell in self.cells:
            hw_in, hw_out = cell.in_size**2, cell.out_size**2
            for j, op in enumerate(OPS):
                if op.expand is None:  # basic block: kxk conv (stride) + kxk conv
                    k2 = op.kernel**2
                    macs = hw_out * k2 * (cell.in_channels * cell.out_channels + cell.out_channels**2)
                else:  # inverted residual: 1x1 expand, kxk depthwise (stride), 1x1 project
                    hidden = cell.in_channels * op.expand
                    macs = hw_in * cell.in_channels * hidden
                    macs += hw_out * hidden * op.kernel**2
                    macs += hw_out * hidden * cell.out_channels
                table[cell.index, j] = macs
        return table

    @property
    def fixed_macs(self) -> int:
        """MACs of what every mask runs: stem 3x3 conv, head 1x1 conv and the classifier."""
        stem = self.input_size**2 * 9 * self.in_channels * self.stem_channels
        head = self.final_size**2 * self.cells[-1].out_channels * self.head_channels
        return int(stem + head + self.head_channels * self.num_classes)

    def macs(self, mask: np.ndarray) -> np.ndarray | int:
        """MACs at batch 1 of one mask (int) or a batch of masks (int64 array), fallbacks counted."""
        eff = self.effective_mask(mask)
        total = (eff * self.op_macs).sum(axis=(-2, -1)) + self.fixed_macs
        return int(total) if np.ndim(total) == 0 else total
