"""What the demo page shows, computed once when the server starts, and the classification of one
request.

At start, the exported model (:class:`~instanas_gym.deploy.engine.InstaNASModel`) classifies the
whole test split once: that gives every architecture's share of the images and its accuracy, the
easiest and hardest images (by the loss of the architecture each got), and warms every session.
Each architecture also gets its latency from the latency table and a point of a 2-D embedding of
the masks (principal components of their 85 bits, the MobileNetV2 path and all ops added as
landmarks). A request is classified alone (batch 1), so its measured latency is that of one image.

Latency, in ms: "by the table" is the controller's median time in ONNX Runtime at batch 1 (timed at
start; a latency table holds no controller) plus the table's latency of the architecture that ran;
"measured" is the engine's wall clock for this request, controller and network.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from instanas_gym.deploy.engine import InstaNASModel, key_mask, mask_bits
from instanas_gym.latency.onnx import time_onnx_ms
from instanas_gym.latency.table import LatencyTable
from instanas_gym.space.data import ImageSet, get_spec, load_split
from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask
from instanas_gym.space.search_space import OPS
from instanas_gym.utils.paths import DEFAULT_LATENCY_BACKEND, default_latency_table

#: ONNX Runtime sessions kept at once (every architecture of an export, as a rule).
SESSIONS = 64
#: Images of each class in the gallery.
GALLERY_PER_CLASS = 4
#: Images shown as the easiest and as the hardest.
EXTREMES = 8


@dataclass(frozen=True)
class Architecture:
    """One architecture the controller picked on the test split."""

    key: str
    mask: np.ndarray
    """uint8 (17, 5)."""
    share: float
    """fraction of the test images it served."""
    accuracy: float
    """fraction of those it classified right."""
    table_ms: float
    """the latency table's latency of the whole network (ms)."""
    xy: tuple[float, float]
    """its point in the 2-D embedding."""


def embed_masks(masks: np.ndarray) -> np.ndarray:
    """2-D coordinates (N, 2) of masks (N, 17, 5): their first two principal components, scaled to
    [-1, 1] (zeros where the masks do not spread along a component)."""
    x = np.asarray(masks, np.float64).reshape(len(masks), -1)
    x = x - x.mean(0)
    if len(x) < 2 or not x.any():
        return np.zeros((len(x), 2))
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    xy = np.zeros((len(x), 2))
    k = min(2, len(s))
    xy[:, :k] = u[:, :k] * s[:k]
    span = np.abs(xy).max(0)
    return np.divide(xy, span, out=np.zeros_like(xy), where=span > 0)


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 image (H, W, C), C = 1 or 3, as PNG bytes."""
    image = np.asarray(image, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="PNG")
    return buf.getvalue()


class DemoState:
    """The served model, the test split and what the page shows; safe to use from several threads
    (nothing changes after start but the engine's session cache, which is locked).

    Args:
        folder: an export folder (``manifest.json``, see :func:`instanas_gym.demo.model.served_folder`).
        dataset: the data set whose test split the gallery shows.
        data_root: where its files are (see :func:`instanas_gym.space.data.load_split`).
        latency_table: the table giving each architecture's latency (default: the data set's ONNX
            Runtime table).
        threads: ONNX Runtime intra-op threads per session.
        seed: which images the gallery shows.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        dataset: str,
        data_root: str | os.PathLike | None = None,
        latency_table: str | os.PathLike | None = None,
        threads: int = 1,
        seed: int = 0,
    ) -> None:
        self.folder = Path(folder)
        self.spec = get_spec(dataset)
        self.engine = InstaNASModel.load(self.folder, cache_size=SESSIONS, threads=threads)
        shape = tuple(self.engine.manifest["image_shape"])
        if shape != self.spec.image_shape:
            raise ValueError(f"{self.folder} serves images of shape {shape}, but {dataset} has {self.spec.image_shape}")
        table_path = Path(latency_table) if latency_table is not None else default_latency_table(dataset, DEFAULT_LATENCY_BACKEND)
        self.table = LatencyTable.load(table_path)
        self.table_runtime = str(self.table.meta.get("runtime", "torch"))
        self.test: ImageSet = load_split(dataset, "test", data_root)
        controller_graph = (self.folder / self.engine.manifest["controller"]).read_bytes()
        self.controller_ms = time_onnx_ms(controller_graph, shape, threads, repeats=200)
        self._judge_test_split()
        self.gallery = self._gallery(np.random.default_rng(seed))

    # ---- at start ------------------------------------------------------------------------------
    def _judge_test_split(self, batch: int = 1000) -> None:
        outs = [self.engine.predict(self.test.images[i : i + batch]) for i in range(0, len(self.test), batch)]
        logits = np.concatenate([o["logits"] for o in outs]).astype(np.float64)
        served = np.concatenate([o["served"] for o in outs])
        z = logits - logits.max(1, keepdims=True)
        log_probs = z - np.log(np.exp(z).sum(1, keepdims=True))
        labels = self.test.labels
        self.loss = -log_probs[np.arange(len(labels)), labels]
        self.prediction = logits.argmax(1)
        keys = list(dict.fromkeys(served))
        masks = {mask_bits(np.asarray(a["mask"], np.uint8)): np.asarray(a["mask"], np.uint8)
                 for a in self.engine.manifest["architectures"]}
        shares = np.array([(served == k).mean() for k in keys])
        order = [keys[i] for i in np.argsort(-shares, kind="stable")]
        landmarks = {name: m for name, m in (("MobileNetV2 path", mobilenetv2_mask()), ("all ops", all_ops_mask()))
                     if mask_bits(m) not in masks}  # a landmark the controller uses is one of its architectures
        xy = embed_masks(np.stack([masks[k] for k in order] + list(landmarks.values())))
        self.architectures = [
            Architecture(k, masks[k], float((served == k).mean()),
                         float((self.prediction[served == k] == labels[served == k]).mean()),
                         float(self.table.network_ms(masks[k])), (float(xy[i, 0]), float(xy[i, 1])))
            for i, k in enumerate(order)
        ]
        self.arch_index = {a.key: i for i, a in enumerate(self.architectures)}
        """Architecture key -> its index in :attr:`architectures` (most used first)."""
        self.landmarks = [{"name": name, "table_ms": float(self.table.network_ms(m)), "x": float(xy[len(order) + i, 0]),
                           "y": float(xy[len(order) + i, 1])} for i, (name, m) in enumerate(landmarks.items())]
        self.served_key = served
        self.accuracy = float((self.prediction == labels).mean())
        ranked = np.argsort(self.loss, kind="stable")
        self.easiest, self.hardest = ranked[:EXTREMES], ranked[::-1][:EXTREMES]

    def _gallery(self, rng: np.random.Generator) -> np.ndarray:
        """``GALLERY_PER_CLASS`` test images per class, drawn so that every architecture shows up
        where it serves images of that class."""
        picks = []
        for c in range(self.spec.num_classes):
            idx = np.flatnonzero(self.test.labels == c)
            chosen: list[int] = []
            for key in dict.fromkeys(self.served_key[idx]):  # one per architecture first, most used first
                if len(chosen) < GALLERY_PER_CLASS:
                    chosen.append(int(rng.choice(idx[self.served_key[idx] == key])))
            rest = np.setdiff1d(idx, chosen)
            chosen += [int(i) for i in rng.choice(rest, min(len(rest), GALLERY_PER_CLASS - len(chosen)), replace=False)]
            picks += chosen
        return np.array(picks, dtype=np.int64)

    # ---- what the page asks for ----------------------------------------------------------------
    def _image_entry(self, index: int) -> dict[str, Any]:
        key = self.served_key[index]
        return {"index": int(index), "label": self.spec.class_names[int(self.test.labels[index])],
                "prediction": self.spec.class_names[int(self.prediction[index])],
                "architecture": self.arch_index[key],
                "loss": float(self.loss[index])}

    def summary(self) -> dict[str, Any]:
        """Everything the page draws before the first request, as plain data."""
        return {
            "dataset": self.spec.name, "image_shape": list(self.spec.image_shape),
            "classes": list(self.spec.class_names), "ops": [op.name for op in OPS],
            "opens_stage": self.table.opens_stage.astype(bool).tolist(),
            "test_images": len(self.test), "test_accuracy": self.accuracy,
            "controller_ms": self.controller_ms, "table_runtime": self.table_runtime,
            "architectures": [{"key": a.key, "mask": a.mask.tolist(), "share": a.share, "accuracy": a.accuracy,
                               "table_ms": a.table_ms, "e2e_ms": a.table_ms + self.controller_ms,
                               "x": a.xy[0], "y": a.xy[1]} for a in self.architectures],
            "landmarks": self.landmarks,
            "gallery": [self._image_entry(i) for i in self.gallery],
            "easiest": [self._image_entry(i) for i in self.easiest],
            "hardest": [self._image_entry(i) for i in self.hardest],
        }

    def test_image(self, index: int) -> np.ndarray:
        """Test image ``index`` (uint8 (H, W, C)); IndexError names the valid range."""
        if not 0 <= index < len(self.test):
            raise IndexError(f"index {index} is not a test image (0 to {len(self.test) - 1})")
        return self.test.images[index]

    def classify(self, image: np.ndarray) -> dict[str, Any]:
        """Classify one uint8 image (H, W, C) of the data set's shape with the served model: the mask
        the controller chose, the architecture that ran, the prediction and its latency (ms)."""
        image = np.asarray(image, np.uint8)
        if image.shape != self.spec.image_shape:
            raise ValueError(f"image must have shape {self.spec.image_shape}, got {image.shape}")
        out = self.engine.predict(image[None])
        mask = out["mask"][0]
        served = str(out["served"][0])
        served_mask = key_mask(served)
        probs = np.exp(out["logits"][0] - out["logits"][0].max())
        probs /= probs.sum()
        top = np.argsort(-probs)[:3]
        network_table_ms = float(self.table.network_ms(served_mask))
        index = self.arch_index.get(served)
        return {
            "mask": mask.tolist(), "served_mask": served_mask.tolist(), "nearest": served != mask_bits(mask),
            "architecture": index,
            "prediction": self.spec.class_names[int(top[0])], "confidence": float(probs[top[0]]),
            "top": [{"class": self.spec.class_names[int(c)], "probability": float(probs[c])} for c in top],
            "latency_ms": {
                "table": {"controller": self.controller_ms, "network": network_table_ms,
                          "e2e": self.controller_ms + network_table_ms},
                "measured": {"controller": out["controller_ms"], "network": out["network_ms"],
                             "e2e": out["controller_ms"] + out["network_ms"]},
            },
        }
