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

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from instanas_gym.deploy.engine import mask_bits
from instanas_gym.deploy.manifest import MANIFEST_FILE, MANIFEST_FORMAT
from instanas_gym.model.own_statistics import OwnStatistics
from instanas_gym.model.subnetwork import OPSET, SubNetwork, onnx_bytes
from instanas_gym.model.supernet import Supernet
from instanas_gym.space.masks import mask_counts
from instanas_gym.utils.files import atomic_write, atomic_write_text


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
    own: OwnStatistics | None = None,
) -> dict[str, Any]:
    """Write an instance-aware model for :class:`~instanas_gym.deploy.engine.InstaNASModel`:
    ``controller.onnx`` (uint8 images -> mask logits (B, 17, 5), greedy mask: logit >= 0), one
    ``arch_<key>.onnx`` per architecture the controller picks for ``images`` (uint8 (N, H, W, C),
    e.g. a data set's test split), and ``manifest.json`` (each architecture's mask and share of
    ``images``, the image shape, classes, ``extra``). Returns the manifest.

    With ``own`` (:class:`~instanas_gym.model.own_statistics.OwnStatistics` of ``supernet``), every
    architecture runs with BatchNorm statistics of its own instead of the supernet's shared ones: a
    network that runs alone needs no statistics shared with every other mask (benchmarks/README.md,
    "own statistics"); they are the ones the environments' lookup and judging use with
    ``bn_statistics="own"``, so the deployed graphs answer as those figures say.
    """
    folder = Path(folder)
    shape = tuple(int(v) for v in images.shape[1:])
    controller.eval()
    with torch.no_grad():
        logits = torch.cat([controller(torch.from_numpy(images[i : i + 500])) for i in range(0, len(images), 500)])
    masks = (logits >= 0).to(torch.uint8).numpy()
    distinct, counts = mask_counts(masks)
    if own is not None:
        own.ensure(distinct)  # one estimate run, one file write
    export_onnx(controller, shape, folder / "controller.onnx", output="mask_logits")
    archs = []
    for i, (mask, count) in enumerate(zip(distinct, counts)):
        name = f"arch_{mask_bits(mask)}.onnx"
        export_onnx(SubNetwork(supernet if own is None else own.network(mask), mask), shape, folder / name)
        archs.append({"file": name, "mask": mask.tolist(), "share": float(count / len(masks))})
        if progress is not None:
            progress(i + 1, len(distinct))
    manifest = {"format": MANIFEST_FORMAT, "image_shape": list(shape), "num_classes": supernet.space.num_classes,
                "controller": "controller.onnx", "opset": OPSET, "architectures": archs,
                "batchnorm": "shared" if own is None else {"statistics": "own", **own.settings}, **(extra or {})}
    atomic_write_text(folder / MANIFEST_FILE, json.dumps(manifest, indent=1))
    return manifest
