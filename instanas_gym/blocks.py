"""The candidate ops of a cell, built from an :class:`~instanas_gym.search_space.OpSpec`.

Unlike the paper's code, where each op adds its own residual (so k ops add k times the input), the
ops here carry no residual: the cell sums its ops' outputs and adds the input once.
"""

from __future__ import annotations

from torch import nn

from instanas_gym.search_space import OpSpec


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
