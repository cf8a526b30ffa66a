"""TODO."""



import copy
import io
import warnings

import numpy as np
import torch
from torch import nn

from instanas_gym.model.supernet import Supernet
from instanas_gym.space.masks import validate_mask
from instanas_gym.space.search_space import SearchSpace

OPSET = 17

class SubCell(nn.Module):
    """The ops one mask runs in one cell, merged as the supernet's cell merges them."""

    def __init__(self, ops: list[nn.Module], residual: bool, mean: bool) -> None:
        super().__init__()
        self.ops = nn.ModuleList(ops)
        self.residual = residual
        self.scale = 1.0 / len(ops) if mean and len(ops) > 1 else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.ops[0](x)
        for op in self.ops[1:]:
            out = out + op(x)
        if self.scale != 1.0:
            out = out * self.scale
        return x + out if self.residual else out

class SubNetwork(nn.Module):
    """The architecture ``mask`` (17, 5) of ``supernet`` as a standalone eval-mode network:
    uint8 images (B, H, W, C) -> logits (B, classes)."""

    def __init__(self, supernet: Supernet, mask: np.ndarray) -> None:
        super().__init__()
        space: SearchSpace = supernet.space
        self.mask = validate_mask(mask)
        eff = space.effective_mask(self.mask)
        self.register_buffer("mean", supernet.mean.detach().clone())
        self.register_buffer("std", supernet.std.detach().clone())
        self.stem = copy.deepcopy(supernet.stem)
        cells = []
        for c, cell in enumerate(supernet.cells):
            chosen = [copy.deepcopy(cell.ops[j]) for j in np.flatnonzero(eff[c])]
            if chosen:  # an empty cell that does not open a stage is the identity: nothing runs
                cells.append(SubCell(chosen, cell.residual, cell.mean))
        self.cells = nn.Sequential(*cells)
        self.head = copy.deepcopy(supernet.head)
        self.classifier = copy.deepcopy(supernet.classifier)
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() / 255.0
        x = (x - self.mean) / self.std
        x = self.head(self.cells(self.stem(x)))
        return self.classifier(x.mean((2, 3)))

def onnx_bytes(module: nn.Module, image_shape: tuple[int, int, int], output: str = "logits") -> bytes:
    """``module`` (uint8 images (B, H, W, C) -> one tensor) as a serialised ONNX graph, batch axis dynamic."""
    example = torch.zeros(1, *image_shape, dtype=torch.uint8)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its own deprecation
        torch.onnx.export(module.eval(), (example,), buf, input_names=["images"], output_names=[output],
                          dynamic_axes={"images": {0: "batch"}, output: {0: "batch"}}, opset_version=OPSET,
                          dynamo=False)
    return buf.getvalue()
