"""The controller: a tiny ResNet that maps an image to 17 x 5 Bernoulli probabilities.

As in the paper's code for 32x32 inputs: a 3x3 stem, basic blocks of 16/32/64 channels with strides
1/2/2, global average pooling and a linear layer to 85 logits (one sigmoid per op of every cell).
Width, depth and input size are configurable; its MACs are tiny next to the supernet's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from instanas_gym.model.supernet import conv_bn
from instanas_gym.space.search_space import MASK_SHAPE, NUM_CELLS, NUM_OPS
from instanas_gym.utils.files import FileFormatError, atomic_save, build_module, check_weights, load_torch

CONTROLLER_FORMAT = "instanas-controller-v1"


class ResBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with a (projected where needed) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, act=False))
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else conv_bn(cin, cout, 1, stride, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self.body(x) + self.shortcut(x))


class Controller(nn.Module):
    """Image -> logits (B, 17, 5) of the per-op keep probabilities.

    Args:
        in_channels: image channels.
        widths: channels of the stages (16, 32, 64 as in the paper).
        strides: stride of each stage's first block (1, 2, 2).
        blocks: basic blocks per stage.
        input_size: images are resized to this side in pixels first (None: as they come).
    """

    def __init__(
        self,
        in_channels: int = 3,
        widths: tuple[int, ...] = (16, 32, 64),
        strides: tuple[int, ...] = (1, 2, 2),
        blocks: int = 1,
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        if len(widths) != len(strides):
            raise ValueError(f"widths {widths} and strides {strides} must have the same length")
        self.config = {
            "in_channels": in_channels, "widths": tuple(widths), "strides": tuple(strides),
            "blocks": blocks, "input_size": input_size,
        }
        self.input_size = input_size
        layers: list[nn.Module] = [conv_bn(in_channels, widths[0], 3)]
        cin = widths[0]
        for w, s in zip(widths, strides):
            for b in range(blocks):
                layers.append(ResBlock(cin, w, s if b == 0 else 1))
                cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, NUM_CELLS * NUM_OPS)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)  # start at p = 0.5 everywhere: no op preferred

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: uint8 (B, H, W, C) or (B, C, H, W), or float in [0, 1]. Returns logits (B, 17, 5)."""
        return self.head(self.embed(images)).view(-1, *MASK_SHAPE)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled features (B, widths[-1]) the head reads, for ``images`` as :meth:`forward` takes them."""
        x = images
        if x.shape[-1] == self.config["in_channels"] and x.shape[1] != self.config["in_channels"]:
            x = x.permute(0, 3, 1, 2)
        # NCHW strides: a permuted NHWC batch reads as channels_last, and oneDNN's channels_last weight
        # gradient of a 1 x 1 stride-2 convolution with fewer than 8 input channels (the shortcut of
        # widths (4, 8)) corrupts the heap on AVX2-only CPUs (torch 2.14.1)
        x = x.clone(memory_format=torch.contiguous_format)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        x = x - 0.5
        size = self.input_size
        if size is not None and x.shape[-2:] == (2 * size, 2 * size):
            # the same numbers as bilinear resizing to exactly half, ~6 us faster in ONNX Runtime
            x = F.avg_pool2d(x, 2)
        elif size is not None and x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return self.features(x).mean((2, 3))

    def macs(self, image_shape: tuple[int, int, int]) -> int:
        """MACs of one forward pass at batch 1 for an (H, W, C) image, counted with forward hooks."""
        total = 0

        def hook(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            nonlocal total
            if isinstance(module, nn.Conv2d):
                k = module.kernel_size[0] * module.kernel_size[1]
                total += output.numel() * k * module.in_channels // module.groups
            elif isinstance(module, nn.Linear):
                total += module.in_features * module.out_features

        handles = [m.register_forward_hook(hook) for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        with torch.no_grad():
            self(torch.zeros(1, *image_shape, dtype=torch.uint8))
        for h in handles:
            h.remove()
        return total


def bounded_probs(logits: torch.Tensor, alpha: float) -> torch.Tensor:
    """The encouragement bound p' = alpha * p + (1 - alpha) * (1 - p), p = sigmoid(logits).

    Keeps every probability in [1 - alpha, alpha] (alpha in (0.5, 1]) so exploration never stops.
    """
    p = torch.sigmoid(logits)
    return alpha * p + (1 - alpha) * (1 - p)


def greedy_masks(probs: torch.Tensor) -> np.ndarray:
    """The thresholded masks (p >= 0.5) as uint8 numpy (B, 17, 5)."""
    return (probs >= 0.5).to(torch.uint8).cpu().numpy()


def save_controller(controller: Controller, path: str | os.PathLike, **extra: Any) -> None:
    """Write the controller's config and weights (and ``extra`` plain data) atomically."""
    atomic_save({"format": CONTROLLER_FORMAT, "config": controller.config, "state_dict": controller.state_dict(),
                 **extra}, path)


def load_controller(path: str | os.PathLike) -> tuple[Controller, dict[str, Any]]:
    """The controller stored at ``path`` (eval mode) and the file's dict; loads no code."""
    hint = "train one with `instanas-gym train-reinforce` or `instanas-gym search`"
    ckpt = load_torch(path, "instanas-gym controller", CONTROLLER_FORMAT, ("config", "state_dict"), hint)
    check_weights(path, ckpt["state_dict"], "instanas-gym controller", hint)
    try:
        controller = build_module(lambda: Controller(**ckpt["config"]), ckpt["state_dict"])
    except Exception as err:  # whatever a damaged file's contents make torch raise
        raise FileFormatError(f"{Path(path)} holds a controller that cannot be built ({err}); {hint}") from None
    return controller.eval(), ckpt
