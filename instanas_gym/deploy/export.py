"""One architecture of a supernet as a standalone network holding only its ops, and ONNX export.

:class:`SubNetwork` copies, for one mask, the stem, the ops the mask runs in each cell (the
fallback basic block where an empty cell opens a stage; nothing where an empty cell is the
identity), the head and the classifier, and computes exactly what the supernet computes in eval mode
under that mask (same merge, same residuals). Its input is what the environment observes: uint8
images (B, H, W, C); normalisation happens inside, so the exported graph takes raw images.

:func:`export_onnx` writes any such module (or the controller) as a static ONNX graph with a dynamic
batch axis; :func:`export_model` writes a whole instance-aware model for :mod:`.engine`.
"""

from __future__ import annotations

import copy
import io
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from instanas_gym.data import ImageSet
from instanas_gym.files import atomic_write, atomic_write_text
from instanas_gym.masks import mask_counts, validate_mask
from instanas_gym.search_space import SearchSpace
from instanas_gym.sandwich import recalibrate_bn
from instanas_gym.supernet import Supernet
from instanas_gym.deploy.engine import MANIFEST_FORMAT, mask_bits

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


def export_onnx(module: nn.Module, image_shape: tuple[int, int, int], path: str | os.PathLike, output: str = "logits") -> Path:
    """Write :func:`onnx_bytes` of ``module`` to ``path`` atomically; returns the path."""
    data = onnx_bytes(module, image_shape, output)
    atomic_write(path, lambda f: f.write(data))
    return Path(path)


def export_model(
    folder: str | os.PathLike,
    supernet: Supernet,
    controller: nn.Module,
    images: np.ndarray,
    extra: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    bn_data: ImageSet | None = None,
    bn_batches: int = 20,
) -> dict[str, Any]:
    """Write an instance-aware model for :class:`~instanas_gym.deploy.engine.InstaNASModel`:
    ``controller.onnx`` (uint8 images -> mask logits (B, 17, 5), greedy mask: logit >= 0), one
    ``arch_<key>.onnx`` per architecture the controller picks for ``images`` (uint8 (N, H, W, C),
    e.g. a data set's test split), and ``manifest.json`` (each architecture's mask and share of
    ``images``, the image shape, classes, ``extra``). Returns the manifest.

    With ``bn_data`` (training images), every architecture gets BatchNorm statistics of its own,
    re-estimated on ``bn_batches`` batches of them (:func:`~instanas_gym.sandwich.recalibrate_bn`),
    instead of the supernet's shared ones: a network that runs alone needs no statistics shared with
    every other mask (benchmarks/README.md, the probe set).
    """
    folder = Path(folder)
    shape = tuple(int(v) for v in images.shape[1:])
    controller.eval()
    with torch.no_grad():
        logits = torch.cat([controller(torch.from_numpy(images[i : i + 500])) for i in range(0, len(images), 500)])
    masks = (logits >= 0).to(torch.uint8).numpy()
    distinct, counts = mask_counts(masks)
    export_onnx(controller, shape, folder / "controller.onnx", output="mask_logits")
    archs = []
    for i, (mask, count) in enumerate(zip(distinct, counts)):
        name = f"arch_{mask_bits(mask)}.onnx"
        source = supernet if bn_data is None else recalibrate_bn(supernet, bn_data, mask, bn_batches)
        export_onnx(SubNetwork(source, mask), shape, folder / name)
        archs.append({"file": name, "mask": mask.tolist(), "share": float(count / len(masks))})
        if progress is not None:
            progress(i + 1, len(distinct))
    manifest = {"format": MANIFEST_FORMAT, "image_shape": list(shape), "num_classes": supernet.space.num_classes,
                "controller": "controller.onnx", "opset": OPSET, "architectures": archs,
                "batchnorm": "shared" if bn_data is None else f"per architecture, {bn_batches} batches", **(extra or {})}
    atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=1))
    return manifest
