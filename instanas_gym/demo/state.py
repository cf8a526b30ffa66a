"""What the demo page shows, computed once when the server starts, and the classification of one
request.

At start, every ONNX Runtime session the page can need is built and run once at batch 1 (the
controller and every exported architecture), so no request pays for building one. Then the exported
model (:class:`~instanas_gym.deploy.engine.InstaNASModel`) classifies the whole test split once:
that gives every architecture's share of the images and its accuracy. Each architecture also gets
its latency from the latency table and a point of a 2-D embedding of the masks (principal components
of their 85 bits, the MobileNetV2 path and all ops added as landmarks).

Difficulty is measured with one yardstick for every image: the loss of the *reference*
architecture, the largest exported one by the table, whatever architecture the controller picked
for the image, on :data:`DIFFICULTY_IMAGES` test images drawn at random (the largest network is the
slowest: on all 10,000 it would take longer than judging the whole split did). The page shows each
architecture's share of those images in each fifth of that difficulty (from the easiest fifth to the
hardest), and the easiest and hardest images by it.

A request is classified alone (batch 1). Latency, in ms: "by the table" is the controller's median
time in ONNX Runtime at batch 1 (timed at start; a latency table holds no controller) plus the
table's latency of the architecture that ran; "measured" is the engine's wall clock for this
request in the server, controller and network. An upload also gets its distance from the test
split (:mod:`.typicality`).

A cascade export is served by :class:`~.cascade.CascadeState`, this class with the cascade's engine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from instanas_gym.demo.typicality import Typicality
from instanas_gym.deploy.engine import InstaNASModel, key_mask, mask_bits
from instanas_gym.latency.onnx import time_onnx_ms
from instanas_gym.latency.table import LatencyTable
from instanas_gym.space.data import ImageSet, get_spec, load_split
from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask
from instanas_gym.space.search_space import OPS
from instanas_gym.utils.paths import DEFAULT_LATENCY_BACKEND, default_latency_table

#: ONNX Runtime sessions kept at least (every architecture of an export is kept in any case).
SESSIONS = 64
#: Images of each class in the gallery.
GALLERY_PER_CLASS = 4
#: Random test images shown beside the gallery.
SAMPLE = 10
#: Images shown as the easiest and as the hardest.
EXTREMES = 8
#: Bins of difficulty (fifths of the images it is measured on).
BINS = 5
#: Test images whose difficulty is measured (drawn at random, seeded).
DIFFICULTY_IMAGES = 1000
#: Images per batch when the test split is judged at start: ONNX Runtime keeps each session's largest
#: activations for good (its memory arena), so batches of 1,000 28 x 28 images held 2.5 GB.
BATCH = 64
#: Masks the page names.
NAMED_MASKS = {"MobileNetV2 path": mobilenetv2_mask(), "all ops": all_ops_mask()}


@dataclass(frozen=True)
class Architecture:
    """One exported architecture of the served model."""

    key: str
    mask: np.ndarray
    """uint8 (17, 5)."""
    share: float
    """fraction of the test images it served (a cascade: fraction of the architectures run on them)."""
    accuracy: float
    """fraction of those it classified right (a cascade: of those it answered; NaN if none)."""
    table_ms: float
    """the latency table's latency of the whole network (ms)."""
    xy: tuple[float, float]
    """its point in the 2-D embedding."""
    name: str
    """"MobileNetV2 path" or "all ops" where it is one of them, else empty (a cascade: its name in the family)."""


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


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-row cross-entropy (nats) of ``logits`` (N, classes) against int ``labels`` (N,)."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(1, keepdims=True)
    return np.log(np.exp(z).sum(1)) - z[np.arange(len(labels)), labels]


def mask_name(mask: np.ndarray) -> str:
    """The page's name of ``mask`` (:data:`NAMED_MASKS`), else empty."""
    return next((name for name, m in NAMED_MASKS.items() if np.array_equal(m, mask)), "")


class DemoState:
    """The served model, the test split and what the page shows; safe to use from several threads
    (nothing changes after start).

    Args:
        folder: an export folder (``manifest.json``, see :func:`instanas_gym.demo.model.served_folder`).
        dataset: the data set whose test split the gallery shows.
        data_root: where its files are (see :func:`instanas_gym.space.data.load_split`).
        latency_table: the table giving each architecture's latency (default: the data set's ONNX
            Runtime table).
        threads: ONNX Runtime intra-op threads per session.
        seed: which images the gallery and the random sample show.
    """

    kind = "single"
    """What the page serves: "single" (one architecture per image) or "cascade"."""

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
        self._load_model(threads)
        shape = tuple(self.manifest["image_shape"])
        if shape != self.spec.image_shape:
            raise ValueError(f"{self.folder} serves images of shape {shape}, but {dataset} has {self.spec.image_shape}")
        self.table = LatencyTable.load(page_latency_table(dataset, latency_table))
        self.table_runtime = str(self.table.meta.get("runtime", "torch"))
        self.test: ImageSet = load_split(dataset, "test", data_root)
        self.controller_ms = self._controller_ms(threads)
        """The controller's cost per image (a cascade: per decision), ms by the table (see the module docstring)."""
        self._build_sessions()
        self._judge_test_split()
        rng = np.random.default_rng(seed)
        self.reference, self.difficulty = self._difficulty(rng)
        self.typicality = Typicality.fit(self.test.images)
        self.gallery = self._gallery(rng)
        self.sample = np.sort(rng.choice(len(self.test), min(SAMPLE, len(self.test)), replace=False))

    # ---- at start ------------------------------------------------------------------------------
    def _load_model(self, threads: int) -> None:
        """:attr:`engine` and :attr:`manifest` from :attr:`folder`."""
        self.engine = InstaNASModel.load(self.folder, cache_size=SESSIONS, threads=threads)
        self.manifest = self.engine.manifest
        self.engine.cache_size = max(SESSIONS, len(self.manifest["architectures"]))

    def _controller_ms(self, threads: int) -> float:
        """The controller graph's median time at batch 1 (ms)."""
        graph = (self.folder / self.manifest["controller"]).read_bytes()
        return time_onnx_ms(graph, self.spec.image_shape, threads, repeats=200)

    def _network_logits(self, arch: int, images: np.ndarray) -> np.ndarray:
        """Architecture ``arch``'s (index in :attr:`architectures`) logits on ``images``."""
        a = self.architectures[arch]
        return self.engine.session(a.key, a.mask).run(None, {"images": images})[0]

    def _embed(self, masks: list[np.ndarray]) -> np.ndarray:
        """The 2-D points (len(masks), 2) of the served architectures' ``masks``; sets :attr:`landmarks`:
        the named masks (:data:`NAMED_MASKS`) not among them, embedded with them."""
        keys = {mask_bits(m) for m in masks}
        named = {name: m for name, m in NAMED_MASKS.items() if mask_bits(m) not in keys}
        xy = embed_masks(np.stack(list(masks) + list(named.values())))
        self.landmarks = [{"name": name, "table_ms": float(self.table.network_ms(m)), "x": float(xy[len(masks) + i, 0]),
                           "y": float(xy[len(masks) + i, 1])} for i, (name, m) in enumerate(named.items())]
        return xy[: len(masks)]

    def _build_sessions(self) -> None:
        """Every architecture's session and the controller's, each run twice at batch 1."""
        one = self.test.images[:1]
        for _ in range(2):
            self.engine.masks(one)
            for arch in self.manifest["architectures"]:
                self.engine.session(mask_bits(np.asarray(arch["mask"], np.uint8))).run(None, {"images": one})

    def _judge_test_split(self, batch: int = BATCH) -> None:
        outs = [self.engine.predict(self.test.images[i : i + batch]) for i in range(0, len(self.test), batch)]
        logits = np.concatenate([o["logits"] for o in outs])
        served = np.concatenate([o["served"] for o in outs])
        labels = self.test.labels
        self.loss = cross_entropy(logits, labels)
        self.prediction = logits.argmax(1)
        masks = {mask_bits(np.asarray(a["mask"], np.uint8)): np.asarray(a["mask"], np.uint8)
                 for a in self.manifest["architectures"]}
        masks |= {k: key_mask(k) for k in dict.fromkeys(served) if k not in masks}  # served but not exported
        shares = {k: float((served == k).mean()) for k in masks}
        order = sorted(masks, key=lambda k: -shares[k])  # most used first (stable: manifest order on ties)
        xy = self._embed([masks[k] for k in order])  # a landmark the controller uses is one of its architectures
        right = self.prediction == labels
        self.architectures = [
            Architecture(k, masks[k], shares[k], float(right[served == k].mean()) if shares[k] else float("nan"),
                         float(self.table.network_ms(masks[k])), (float(xy[i, 0]), float(xy[i, 1])),
                         mask_name(masks[k]))
            for i, k in enumerate(order)
        ]
        self.arch_index = {a.key: i for i, a in enumerate(self.architectures)}
        """Architecture key -> its index in :attr:`architectures` (most used first)."""
        self.served = np.array([self.arch_index[k] for k in served])
        """Each test image's architecture (index in :attr:`architectures`; a cascade: the one that answered)."""
        self.image_ms = np.array([a.table_ms for a in self.architectures])[self.served] + self.controller_ms
        """Each test image's end-to-end latency by the table (ms)."""
        self.accuracy = float(right.mean())

    def _difficulty(self, rng: np.random.Generator, batch: int = BATCH) -> tuple[int, np.ndarray]:
        """The reference architecture (the largest by the table) and each test image's loss under it
        (NaN outside the :data:`DIFFICULTY_IMAGES` measured)."""
        reference = max(range(len(self.architectures)), key=lambda i: self.architectures[i].table_ms)
        measured = np.sort(rng.choice(len(self.test), min(DIFFICULTY_IMAGES, len(self.test)), replace=False))
        images = self.test.images[measured]
        logits = np.concatenate([self._network_logits(reference, images[i : i + batch])
                                 for i in range(0, len(images), batch)])
        difficulty = np.full(len(self.test), np.nan)
        difficulty[measured] = cross_entropy(logits, self.test.labels[measured])
        return reference, difficulty

    def _gallery(self, rng: np.random.Generator) -> np.ndarray:
        """``GALLERY_PER_CLASS`` test images per class, drawn so that every architecture shows up
        where it serves images of that class (so rare architectures are over-represented)."""
        picks = []
        for c in range(self.spec.num_classes):
            idx = np.flatnonzero(self.test.labels == c)
            chosen: list[int] = []
            for arch in dict.fromkeys(self.served[idx]):  # one per architecture first, most used first
                if len(chosen) < GALLERY_PER_CLASS:
                    chosen.append(int(rng.choice(idx[self.served[idx] == arch])))
            rest = np.setdiff1d(idx, chosen)
            chosen += [int(i) for i in rng.choice(rest, min(len(rest), GALLERY_PER_CLASS - len(chosen)), replace=False)]
            picks += chosen
        return np.array(picks, dtype=np.int64)

    # ---- what the page asks for ----------------------------------------------------------------
    def by_difficulty(self) -> list[dict[str, Any]]:
        """Per fifth of the images measured, by difficulty (easiest first): :meth:`_bin_row` of its images."""
        measured = np.flatnonzero(~np.isnan(self.difficulty))
        order = measured[np.argsort(self.difficulty[measured], kind="stable")]
        bins = np.full(len(self.test), -1)
        bins[order] = np.arange(len(order)) * BINS // len(order)
        return [self._bin_row(bins == b) for b in range(BINS)]

    def _bin_row(self, members: np.ndarray) -> dict[str, Any]:
        """Of the test images ``members`` (bool (N,)): how many, their loss range, each architecture's share of
        them, their mean latency by the table (ms, end to end) and the served model's accuracy on them."""
        arch, loss = self.served[members], self.difficulty[members]
        counts = np.bincount(arch, minlength=len(self.architectures))
        return {"images": int(members.sum()), "loss_from": float(loss.min()), "loss_to": float(loss.max()),
                "shares": (counts / len(arch)).tolist(), "mean_e2e_ms": float(self.image_ms[members].mean()),
                "accuracy": float((self.prediction[members] == self.test.labels[members]).mean())}

    def _image_entry(self, index: int) -> dict[str, Any]:
        return {"index": int(index), "label": self.spec.class_names[int(self.test.labels[index])],
                "prediction": self.spec.class_names[int(self.prediction[index])],
                "architecture": int(self.served[index]),
                "loss": None if np.isnan(self.difficulty[index]) else float(self.difficulty[index])}

    def summary(self) -> dict[str, Any]:
        """Everything the page draws before the first request, as plain data."""
        measured = np.flatnonzero(~np.isnan(self.difficulty))
        ranked = measured[np.argsort(self.difficulty[measured], kind="stable")]
        t = self.typicality
        return {
            "kind": self.kind, "dataset": self.spec.name, "dataset_title": self.spec.title,
            "image_shape": list(self.spec.image_shape),
            "classes": list(self.spec.class_names), "ops": [op.name for op in OPS],
            "op_descriptions": [op_description(op.name, op.kernel, op.expand) for op in OPS],
            "opens_stage": self.table.opens_stage.astype(bool).tolist(),
            "test_images": len(self.test), "test_accuracy": self.accuracy,
            "controller_ms": self.controller_ms, "table_runtime": self.table_runtime,
            "table_threads": int(self.table.meta.get("threads", 1)), "family_size": self.manifest.get("family_size"),
            "architectures": [{"key": a.key, "name": a.name, "mask": a.mask.tolist(), "share": a.share,
                               "accuracy": None if np.isnan(a.accuracy) else a.accuracy, "table_ms": a.table_ms,
                               "e2e_ms": a.table_ms + self.controller_ms, "x": a.xy[0], "y": a.xy[1]}
                              for a in self.architectures],
            "landmarks": self.landmarks, "reference": self.reference, "by_difficulty": self.by_difficulty(),
            "gallery": [self._image_entry(i) for i in self.gallery],
            "sample": [self._image_entry(i) for i in self.sample],
            "easiest": [self._image_entry(i) for i in ranked[:EXTREMES]],
            "hardest": [self._image_entry(i) for i in ranked[::-1][:EXTREMES]],
            "typicality": {"z_threshold": t.z_threshold, "contrast_threshold": t.contrast_threshold},
        }

    def test_image(self, index: int) -> np.ndarray:
        """Test image ``index`` (uint8 (H, W, C)); IndexError names the valid range."""
        if not 0 <= index < len(self.test):
            raise IndexError(f"index {index} is not a test image (0 to {len(self.test) - 1})")
        return self.test.images[index]

    def checked_image(self, image: np.ndarray) -> np.ndarray:
        """``image`` as uint8 (H, W, C); ValueError unless it has the data set's shape."""
        image = np.asarray(image, np.uint8)
        if image.shape != self.spec.image_shape:
            raise ValueError(f"image must have shape {self.spec.image_shape}, got {image.shape}")
        return image

    def classify(self, image: np.ndarray) -> dict[str, Any]:
        """Classify one uint8 image (H, W, C) of the data set's shape with the served model: the mask
        the controller chose, the architecture that ran, the prediction, its latency (ms) and how far
        the image is from the test split."""
        image = self.checked_image(image)
        out = self.engine.predict(image[None])
        mask = out["mask"][0]
        served = str(out["served"][0])
        served_mask = key_mask(served)
        probs = np.exp(out["logits"][0] - out["logits"][0].max())
        probs /= probs.sum()
        top = np.argsort(-probs)[:3]
        network_table_ms = float(self.table.network_ms(served_mask))
        return {
            "mask": mask.tolist(), "served_mask": served_mask.tolist(), "nearest": served != mask_bits(mask),
            "architecture": self.arch_index.get(served),
            "prediction": self.spec.class_names[int(top[0])], "confidence": float(probs[top[0]]),
            "top": [{"class": self.spec.class_names[int(c)], "probability": float(probs[c])} for c in top],
            "latency_ms": {
                "table": {"controller": self.controller_ms, "network": network_table_ms,
                          "e2e": self.controller_ms + network_table_ms},
                "measured": {"controller": out["controller_ms"], "network": out["network_ms"],
                             "e2e": out["controller_ms"] + out["network_ms"]},
            },
            "typicality": self.typicality.score(image),
        }


def page_latency_table(dataset: str, latency_table: str | os.PathLike | None = None) -> Path:
    """The latency table the page reports: ``latency_table``, else the data set's ONNX Runtime table."""
    return Path(latency_table) if latency_table is not None else default_latency_table(dataset, DEFAULT_LATENCY_BACKEND)


def op_description(name: str, kernel: int, expand: int | None) -> str:
    """An op's name spelled out: "ir_k3_e6" -> "inverted residual, 3x3 kernel, expansion 6"."""
    if expand is None:
        return f"{name}: basic block, two {kernel}x{kernel} convolutions"
    return f"{name}: inverted residual (MobileNetV2's block), {kernel}x{kernel} kernel, expansion {expand}"
