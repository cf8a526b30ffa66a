"""The instance-aware inference engine: controller -> mask -> that architecture's ONNX Runtime
session, for a batch of images, without PyTorch.

``InstaNASModel.load(folder)`` serves what :func:`~instanas_gym.deploy.export.export_model` wrote
(``manifest.json``, ``controller.onnx``, one ``arch_<key>.onnx`` per architecture). ``predict``
runs the controller on the batch, groups the images by the architecture chosen for each, and runs
each group as one call of that architecture's session. Sessions are built on first use and kept in
a least-recently-used cache of at most ``cache_size``; every session runs with ``threads`` intra-op
threads and one inter-op thread, so timings are reproducible. ``predict`` may be called from several
threads at once (a web server's): the cache is guarded by a lock, and ONNX Runtime sessions run
concurrently.

An image whose mask the folder holds no graph for is served by the exported architecture nearest to
its mask (fewest differing bits): ``predict`` reports the mask asked for and the one that ran.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from instanas_gym.space.search_space import MASK_SHAPE

MANIFEST_FORMAT = "instanas-deploy-v1"


def session_options(threads: int) -> ort.SessionOptions:
    """ONNX Runtime settings of every session: ``threads`` intra-op threads, one inter-op, sequential."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


def mask_bits(mask: np.ndarray) -> str:
    """The key of a mask (17, 5) in the manifest: its 85 bits as a hex string (see ``export.mask_key``)."""
    return np.packbits(np.asarray(mask, np.uint8).reshape(-1)).tobytes().hex()


def key_mask(key: str) -> np.ndarray:
    """The mask (17, 5) uint8 of a key of :func:`mask_bits`."""
    return np.unpackbits(np.frombuffer(bytes.fromhex(key), np.uint8))[: MASK_SHAPE[0] * MASK_SHAPE[1]].reshape(MASK_SHAPE)


class InstaNASModel:
    """A controller and its architectures as ONNX Runtime sessions.

    Args:
        controller: the controller graph (path or serialised bytes): uint8 images -> mask logits (B, 17, 5).
        architectures: mask key (:func:`mask_bits`) -> graph (path or bytes) of that architecture.
        cache_size: sessions of architectures kept at once (>= 1).
        threads: ONNX Runtime intra-op threads per session.
        build: optional mask (17, 5) -> graph bytes, for masks without a graph (e.g. exporting from a
            supernet on demand); without it, the nearest exported architecture serves them.
    """

    def __init__(
        self,
        controller: str | os.PathLike | bytes,
        architectures: dict[str, str | os.PathLike | bytes],
        cache_size: int = 16,
        threads: int = 1,
        build: Callable[[np.ndarray], bytes] | None = None,
    ) -> None:
        if not isinstance(cache_size, int) or cache_size < 1:
            raise ValueError(f"cache_size must be an integer >= 1, got {cache_size!r}")
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        if not architectures and build is None:
            raise ValueError("architectures is empty and there is no build function: nothing could serve an image")
        self.threads, self.cache_size, self.build = threads, cache_size, build
        self.controller = self._session(controller)
        self.graphs = dict(architectures)
        self._keys = list(self.graphs)
        self._bits = np.array([key_mask(k).reshape(-1) for k in self._keys])
        self.sessions: OrderedDict[str, ort.InferenceSession] = OrderedDict()
        self.sessions_built = 0
        self._lock = threading.Lock()

    def _session(self, graph: str | os.PathLike | bytes) -> ort.InferenceSession:
        source = graph if isinstance(graph, bytes) else str(graph)
        return ort.InferenceSession(source, session_options(self.threads), providers=["CPUExecutionProvider"])

    @classmethod
    def load(cls, folder: str | os.PathLike, cache_size: int = 16, threads: int = 1) -> InstaNASModel:
        """The model :func:`~instanas_gym.deploy.export.export_model` wrote to ``folder``."""
        folder = Path(folder)
        path = folder / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(f"no manifest.json in {folder}; write one with instanas_gym.deploy.export.export_model")
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"{path} is not an instanas-gym deployment manifest ({MANIFEST_FORMAT})")
        archs = {mask_bits(np.asarray(a["mask"])): folder / a["file"] for a in manifest["architectures"]}
        model = cls(folder / manifest["controller"], archs, cache_size, threads)
        model.manifest = manifest
        return model

    # ---- serving ---------------------------------------------------------------------------------
    def masks(self, images: np.ndarray) -> np.ndarray:
        """The controller's greedy masks (logit >= 0) for uint8 images (B, H, W, C): uint8 (B, 17, 5)."""
        (logits,) = self.controller.run(None, {"images": np.ascontiguousarray(images, dtype=np.uint8)})
        return (logits >= 0).astype(np.uint8)

    def serving_key(self, mask: np.ndarray) -> str:
        """The architecture that serves ``mask``: its own, else built, else the nearest exported one."""
        key = mask_bits(mask)
        if key in self.graphs or self.build is not None:
            return key
        distance = (self._bits != np.asarray(mask, np.uint8).reshape(-1)).sum(1)
        return self._keys[int(distance.argmin())]

    def session(self, key: str, mask: np.ndarray | None = None) -> ort.InferenceSession:
        """The session of architecture ``key`` from the cache (built on first use, least recently used evicted)."""
        with self._lock:
            if key in self.sessions:
                self.sessions.move_to_end(key)
                return self.sessions[key]
            if key not in self.graphs:
                self.graphs[key] = self.build(mask)  # type: ignore[misc]
            session = self.sessions[key] = self._session(self.graphs[key])
            self.sessions_built += 1
            while len(self.sessions) > self.cache_size:
                self.sessions.popitem(last=False)
            return session

    def predict(self, images: np.ndarray) -> dict[str, Any]:
        """Classify uint8 images (B, H, W, C), each by the architecture the controller picks for it.

        Returns ``logits`` (B, classes) float32, ``prediction`` (B,), ``confidence`` (B,) (softmax
        probability of the prediction), ``mask`` (B, 17, 5) as chosen, ``served`` (B,) the key of
        the architecture that ran, and ``controller_ms`` / ``network_ms`` (wall clock of the whole
        batch, ms).
        """
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if images.ndim != 4:
            raise ValueError(f"images must be uint8 (B, H, W, C), got shape {images.shape}")
        t0 = time.perf_counter()
        masks = self.masks(images)
        t1 = time.perf_counter()
        served = np.array([self.serving_key(m) for m in masks])
        logits = None
        for key in dict.fromkeys(served):  # one call per architecture, in order of first use
            rows = np.flatnonzero(served == key)
            (out,) = self.session(key, masks[rows[0]]).run(None, {"images": images[rows]})
            if logits is None:
                logits = np.empty((len(images), out.shape[1]), np.float32)
            logits[rows] = out
        t2 = time.perf_counter()
        z = logits - logits.max(1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        return {"logits": logits, "prediction": probs.argmax(1), "confidence": probs.max(1), "mask": masks,
                "served": served, "controller_ms": 1e3 * (t1 - t0), "network_ms": 1e3 * (t2 - t1)}
