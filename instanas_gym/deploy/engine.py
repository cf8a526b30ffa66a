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

Nothing in a folder is trusted: the manifest is schema-checked and its files must lie inside the
folder (:mod:`.manifest`), and every graph must parse and take uint8 images of the manifest's shape
and return what its role returns (mask logits (B, 17, 5), or logits (B, classes)); a graph that does
not raises :class:`~instanas_gym.utils.files.FileFormatError` naming its file, when its session is built.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime as ort

from instanas_gym.deploy.manifest import read_manifest
from instanas_gym.space.search_space import MASK_SHAPE
from instanas_gym.utils.checks import check_int, check_threads
from instanas_gym.utils.files import FileFormatError
from instanas_gym.utils.runtime import session_options


def mask_bits(mask: np.ndarray) -> str:
    """The key of a mask (17, 5) in the manifest: its 85 bits as a hex string (see ``export.mask_key``)."""
    return np.packbits(np.asarray(mask, np.uint8).reshape(-1)).tobytes().hex()


def key_mask(key: str) -> np.ndarray:
    """The mask (17, 5) uint8 of a key of :func:`mask_bits`."""
    return np.unpackbits(np.frombuffer(bytes.fromhex(key), np.uint8))[: MASK_SHAPE[0] * MASK_SHAPE[1]].reshape(MASK_SHAPE)


def _name(graph: str | os.PathLike | bytes, role: str) -> str:
    """How messages name a graph: its file, or its role for a graph given as bytes."""
    return f"{role} (bytes)" if isinstance(graph, bytes) else str(graph)


def _run(session: ort.InferenceSession, name: str, images: np.ndarray, shape: tuple[int | None, ...]) -> np.ndarray:
    """The one output of ``session`` on ``images``, which must be of shape (B, *``shape``); a graph that
    fails to run or returns another shape raises FileFormatError naming it (``name``)."""
    try:
        (out,) = session.run(None, {"images": images})
    except Exception as err:  # whatever ONNX Runtime makes of a graph that loads but does not run
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise FileFormatError(f"{name} fails to run ({type(err).__name__}: {first})") from None
    if out.shape[0] != len(images) or len(out.shape) != 1 + len(shape) or \
            any(w is not None and d != w for d, w in zip(out.shape[1:], shape)):
        raise FileFormatError(f"{name} returned shape {out.shape} for {len(images)} images, not (B, *{shape})")
    return out


class InstaNASModel:
    """A controller and its architectures as ONNX Runtime sessions.

    Args:
        controller: the controller graph (path or serialised bytes): uint8 images -> mask logits (B, 17, 5).
        architectures: mask key (:func:`mask_bits`) -> graph (path or bytes) of that architecture.
        cache_size: sessions of architectures kept at once (>= 1).
        threads: ONNX Runtime intra-op threads per session (at most the cores this process may use).
        build: optional mask (17, 5) -> graph bytes, for masks without a graph (e.g. exporting from a
            supernet on demand); without it, the nearest exported architecture serves them.
        image_shape: (H, W, C) every graph must take; None: the controller graph's.
        num_classes: logits every architecture graph must return; None: the first one's.
    """

    def __init__(
        self,
        controller: str | os.PathLike | bytes,
        architectures: dict[str, str | os.PathLike | bytes],
        cache_size: int = 16,
        threads: int = 1,
        build: Callable[[np.ndarray], bytes] | None = None,
        image_shape: tuple[int, int, int] | None = None,
        num_classes: int | None = None,
    ) -> None:
        self.cache_size = check_int("cache_size", cache_size)
        self.threads = check_threads("threads", threads)
        if not architectures and build is None:
            raise ValueError("architectures is empty and there is no build function: nothing could serve an image")
        self.build = build
        self.image_shape = None if image_shape is None else tuple(image_shape)
        """(H, W, C) of the images served."""
        self.num_classes = check_int("num_classes", num_classes, optional=True)
        """Logits per image."""
        self.controller_graph = controller
        self.controller = self._session(controller, "the controller graph", MASK_SHAPE)
        self.graphs = dict(architectures)
        self._keys = list(self.graphs)
        self._bits = np.array([key_mask(k).reshape(-1) for k in self._keys])
        self.sessions: OrderedDict[str, ort.InferenceSession] = OrderedDict()
        self.sessions_built = 0
        self._lock = threading.Lock()

    def _session(
        self, graph: str | os.PathLike | bytes, role: str, output: tuple[int | None, ...]
    ) -> ort.InferenceSession:
        """A session of ``graph`` (a file, or bytes that ``role`` names), checked: one uint8 input
        "images" (B, H, W, C) of :attr:`image_shape`, one output (B, *``output``) (None: any size,
        which then becomes :attr:`num_classes`). FileFormatError names the file otherwise."""
        name = _name(graph, role)
        try:
            session = ort.InferenceSession(graph if isinstance(graph, bytes) else str(graph),
                                           session_options(self.threads), providers=["CPUExecutionProvider"])
        except Exception as err:  # whatever ONNX Runtime makes of a damaged graph
            first = (str(err).strip().splitlines() or [""])[0][:200]
            raise FileFormatError(f"{name} is not a valid ONNX graph ({type(err).__name__}: {first})") from None
        inputs, outputs = session.get_inputs(), session.get_outputs()
        shape = tuple(inputs[0].shape[1:]) if len(inputs) == 1 and len(inputs[0].shape) == 4 else ()
        if len(inputs) != 1 or inputs[0].name != "images" or inputs[0].type != "tensor(uint8)" or len(shape) != 3 \
                or not all(isinstance(d, int) for d in shape) or self.image_shape not in (None, shape):
            raise FileFormatError(f"{name} does not take uint8 images (B, H, W, C) named 'images' of shape "
                                  f"{self.image_shape or '(H, W, C)'}: its inputs are "
                                  f"{[(i.name, i.type, i.shape) for i in inputs]}")
        out = tuple(outputs[0].shape[1:]) if len(outputs) == 1 else ()
        if len(out) != len(output) or not all(isinstance(d, int) and w in (None, d) for d, w in zip(out, output)):
            want = ", ".join("?" if w is None else str(w) for w in output)
            raise FileFormatError(f"{name} does not return one output of shape (B, {want}): its outputs are "
                                  f"{[(o.name, o.shape) for o in outputs]}")
        self.image_shape = shape
        if output == (None,):
            self.num_classes = out[0]
        return session

    @classmethod
    def load(cls, folder: str | os.PathLike, cache_size: int = 16, threads: int = 1) -> InstaNASModel:
        """The model :func:`~instanas_gym.deploy.export.export_model` wrote to ``folder``, checked
        (:func:`~instanas_gym.deploy.manifest.read_manifest`; the controller's graph now, each
        architecture's when its session is first built). ``manifest``: the checked manifest."""
        check_int("cache_size", cache_size)
        check_threads("threads", threads)  # before anything is read
        manifest, controller, files = read_manifest(folder)
        archs = {mask_bits(np.asarray(a["mask"])): f for a, f in zip(manifest["architectures"], files)}
        model = cls(controller, archs, cache_size, threads, image_shape=tuple(manifest["image_shape"]),
                    num_classes=manifest["num_classes"])
        model.manifest = manifest
        return model

    # ---- serving ---------------------------------------------------------------------------------
    def masks(self, images: np.ndarray) -> np.ndarray:
        """The controller's greedy masks (logit >= 0) for uint8 images (B, H, W, C): uint8 (B, 17, 5)."""
        images = np.ascontiguousarray(images, dtype=np.uint8)
        logits = _run(self.controller, _name(self.controller_graph, "the controller graph"), images, MASK_SHAPE)
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
            graph = self.graphs[key]
            session = self.sessions[key] = self._session(graph, f"the graph of architecture {key}", (self.num_classes,))
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
        if images.ndim != 4 or images.shape[1:] != self.image_shape:
            raise ValueError(f"images must be uint8 (B, H, W, C) with (H, W, C) = {self.image_shape}, "
                             f"got shape {images.shape}")
        t0 = time.perf_counter()
        masks = self.masks(images)
        t1 = time.perf_counter()
        served = np.array([self.serving_key(m) for m in masks])
        logits = None
        for key in dict.fromkeys(served):  # one call per architecture, in order of first use
            rows = np.flatnonzero(served == key)
            session = self.session(key, masks[rows[0]])
            out = _run(session, _name(self.graphs[key], f"the graph of architecture {key}"), images[rows],
                       (self.num_classes,))
            if logits is None:
                logits = np.empty((len(images), out.shape[1]), np.float32)
            logits[rows] = out
        t2 = time.perf_counter()
        z = logits - logits.max(1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        return {"logits": logits, "prediction": probs.argmax(1), "confidence": probs.max(1), "mask": masks,
                "served": served, "controller_ms": 1e3 * (t1 - t0), "network_ms": 1e3 * (t2 - t1)}
