"""A cascade policy deployed: its family's architectures as ONNX graphs that also give the softmax,
its rule or policy network, and an engine that runs stage by stage on only the images still going.

:func:`export_cascade` writes a folder: ``manifest.json`` (format ``"instanas-cascade-v1"``: the image
shape, the classes, the stages T, each architecture's mask, file and table latency, and the policy: a
threshold rule's order and thresholds, or ``policy.onnx``), one ``arm_<k>.onnx`` per architecture
(uint8 images -> ``logits`` and ``probs``), and for a learned policy ``policy.onnx`` (the cascade
observation -> logits over the architectures and STOP). :class:`CascadeModel` serves it with ONNX
Runtime, without PyTorch: stage 1 runs on the whole batch (grouped by the architecture chosen for
each image), then only the images the policy did not stop go to stage 2, grouped by architecture, and
so on. The softmax outputs are rounded to float16 before the policy sees them, as the cascade
environment shows them, so the deployed policy decides exactly as it was trained and judged.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from instanas_gym.latency.measure import median_ms
from instanas_gym.model.outcomes import softmax_summary
from instanas_gym.model.own_statistics import OwnStatistics
from instanas_gym.model.subnetwork import OPSET, SubNetwork
from instanas_gym.model.supernet import Supernet
from instanas_gym.space.family import ArchitectureFamily
from instanas_gym.utils.checks import check_threads
from instanas_gym.utils.files import FileFormatError, atomic_write, atomic_write_text, load_json
from instanas_gym.utils.runtime import session_options

CASCADE_FORMAT = "instanas-cascade-v1"
POLICY_INPUTS = ("image", "stage", "arms", "summary", "latency_ms")


class _WithSoftmax(nn.Module):
    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.network(images)
        return logits, logits.softmax(1)


class _PolicyGraph(nn.Module):
    """A cascade policy network with the observation's entries as separate inputs."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, image: torch.Tensor, stage: torch.Tensor, arms: torch.Tensor, summary: torch.Tensor,
                latency_ms: torch.Tensor) -> torch.Tensor:
        return self.policy({"image": image, "stage": stage, "arms": arms, "summary": summary, "latency_ms": latency_ms})


def _write_onnx(module: nn.Module, example: tuple[torch.Tensor, ...], inputs: tuple[str, ...],
                outputs: tuple[str, ...], path: Path) -> None:
    import io
    import warnings

    buf = io.BytesIO()
    axes = {name: {0: "batch"} for name in (*inputs, *outputs)}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its own deprecation
        torch.onnx.export(module.eval(), example, buf, input_names=list(inputs), output_names=list(outputs),
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def export_cascade(folder: str | os.PathLike, supernet: Supernet, family: ArchitectureFamily, network_ms: np.ndarray,
                   policy: nn.Module, stages: int, own: OwnStatistics | None = None) -> dict[str, Any]:
    """Write a cascade for :class:`CascadeModel` (see the module docstring); ``policy``: a
    :class:`~instanas_gym.agents.cascade.ThresholdPolicy` or :class:`~instanas_gym.agents.cascade.CascadePolicy`;
    ``network_ms`` (K,): the architectures' table latency; ``own``: each architecture's own BatchNorm
    statistics (as the cascade ran with ``bn_statistics="own"``), else the supernet's shared ones.
    Returns the manifest."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    s = supernet.space
    shape = (s.input_size, s.input_size, s.in_channels)
    image = torch.zeros(1, *shape, dtype=torch.uint8)
    arms = []
    if own is not None:
        own.ensure(family.masks)
    for k, (name, mask) in enumerate(zip(family.names, family.masks)):
        network = SubNetwork(supernet if own is None else own.network(mask), mask)
        _write_onnx(_WithSoftmax(network), (image,), ("images",), ("logits", "probs"), folder / f"arm_{k}.onnx")
        arms.append({"name": name, "mask": mask.tolist(), "file": f"arm_{k}.onnx", "latency_ms": float(network_ms[k])})
    config = dict(policy.config)
    if config.get("kind") == "thresholds":
        rule = {"kind": "thresholds", "order": config["order"], "thresholds": config["thresholds"]}
    else:
        t, k = stages, family.k
        example = (image, torch.zeros(1, dtype=torch.long), torch.full((1, t), k, dtype=torch.long),
                   torch.zeros(1, t, 3), torch.zeros(1, 1))
        _write_onnx(_PolicyGraph(policy), example, POLICY_INPUTS, ("logits",), folder / "policy.onnx")
        rule = {"kind": "network", "file": "policy.onnx"}
    manifest = {"format": CASCADE_FORMAT, "image_shape": list(shape), "num_classes": s.num_classes, "stages": stages,
                "architectures": arms, "policy": rule, "opset": OPSET,
                "batchnorm": "shared" if own is None else {"statistics": "own", **own.settings}}
    atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=1))
    return manifest


class CascadeModel:
    """A deployed cascade (see the module docstring). ``load(folder, threads)``; every session is built
    at load time, with ``threads`` intra-op threads and one inter-op thread."""

    def __init__(self, folder: str | os.PathLike, manifest: dict[str, Any], threads: int = 1) -> None:
        self.threads = check_threads("threads", threads)
        self.folder, self.manifest = Path(folder), manifest
        self.stages, self.k = int(manifest["stages"]), len(manifest["architectures"])
        self.latency_ms = np.array([a["latency_ms"] for a in manifest["architectures"]], dtype=np.float64)
        self.arms = [self._session(a["file"]) for a in manifest["architectures"]]
        rule = manifest["policy"]
        self.rule = rule if rule["kind"] == "thresholds" else None
        self.policy = None if self.rule else self._session(rule["file"])
        self._policy_inputs = set() if self.policy is None else {i.name for i in self.policy.get_inputs()}

    def _session(self, name: str) -> ort.InferenceSession:
        path = (self.folder / name).resolve()
        if not path.is_relative_to(self.folder.resolve()) or not path.is_file():
            raise FileFormatError(f"{self.folder / 'manifest.json'}: file {name!r} is not a file inside the folder")
        try:
            return ort.InferenceSession(str(path), session_options(self.threads), providers=["CPUExecutionProvider"])
        except Exception as err:  # ONNX Runtime raises its own types for a damaged graph
            raise FileFormatError(f"{path} is not a readable ONNX graph ({type(err).__name__})") from None

    @classmethod
    def load(cls, folder: str | os.PathLike, threads: int = 1) -> CascadeModel:
        """The cascade :func:`export_cascade` wrote to ``folder``."""
        path = Path(folder) / "manifest.json"
        manifest = load_json(path, "cascade manifest", "write one with instanas_gym.deploy.cascade.export_cascade")
        if manifest.get("format") != CASCADE_FORMAT:
            raise FileFormatError(f"{path} is not a cascade manifest ({CASCADE_FORMAT})")
        return cls(folder, manifest, threads)

    def _decide(self, images: np.ndarray, stage: np.ndarray, arms: np.ndarray, summary: np.ndarray,
                latency: np.ndarray) -> np.ndarray:
        """The next action (K = STOP) of each image still going."""
        if self.rule is not None:
            order = np.append(np.asarray(self.rule["order"], np.int64), self.k)
            limits = np.append(np.asarray(self.rule["thresholds"], np.float64), -np.inf)
            prev = np.maximum(stage - 1, 0)
            stop = (stage > 0) & (summary[np.arange(len(stage)), prev, 0] >= limits[prev])
            return np.where(stop, self.k, order[np.minimum(stage, len(order) - 1)])
        feed = {"image": images, "stage": stage, "arms": arms, "summary": summary.astype(np.float32),
                "latency_ms": latency.reshape(-1, 1).astype(np.float32)}
        (logits,) = self.policy.run(None, {k: v for k, v in feed.items() if k in self._policy_inputs})
        return logits.argmax(1)

    def decision_ms(self, image_shape: tuple[int, int, int], repeats: int = 200) -> float:
        """The policy's cost per decision at batch 1 (ms): 0 for a threshold rule (a comparison, as
        :func:`~instanas_gym.agents.cascade.decision_ms` counts it), else the median wall clock of
        ``repeats`` runs of the policy graph on a first-stage observation of one image."""
        if self.policy is None:
            return 0.0
        t = self.stages
        feed = {"image": np.zeros((1, *image_shape), np.uint8), "stage": np.zeros(1, np.int64),
                "arms": np.full((1, t), self.k, np.int64), "summary": np.zeros((1, t, 3), np.float32),
                "latency_ms": np.zeros((1, 1), np.float32)}
        feed = {k: v for k, v in feed.items() if k in self._policy_inputs}
        return median_ms(lambda: self.policy.run(None, feed), repeats)

    def predict(self, images: np.ndarray) -> dict[str, Any]:
        """Classify uint8 images (B, H, W, C) by the cascade. Returns ``prediction``, ``confidence`` (B,),
        ``probs`` (B, C), ``stages`` (B,), ``arms`` (B, T; K where none ran), ``stage_prediction`` (B, T;
        -1 where none ran) each stage's answer, ``stage_confidence`` (B, T), ``table_ms`` (B,) the table's
        latency of each image's path, and ``stage_wall_ms`` (T,) the wall clock of each stage for the
        batch (the decision, then the networks run; 0 once every image has stopped)."""
        images = np.ascontiguousarray(images, dtype=np.uint8)
        b, t = len(images), self.stages
        stage, arms, answers = np.zeros(b, np.int64), np.full((b, t), self.k, np.int64), np.full((b, t), -1, np.int64)
        probs = np.zeros((b, t, self.manifest["num_classes"]), np.float32)
        last = np.zeros((b, self.manifest["num_classes"]), np.float32)  # the last softmax run, unrounded
        latency, going, walls = np.zeros(b), np.arange(b), np.zeros(t)
        for s in range(t):
            if not len(going):  # every image has stopped: no more decisions to run
                break
            start = time.perf_counter()
            action = self._decide(images[going], stage[going], arms[going], softmax_summary(probs[going]), latency[going])
            going = going[action < self.k]
            action = action[action < self.k]
            for k in np.unique(action):
                rows = going[action == k]
                _, p = self.arms[k].run(None, {"images": images[rows]})
                probs[rows, s], arms[rows, s], last[rows] = p.astype(np.float16).astype(np.float32), k, p
                answers[rows, s] = p.argmax(1)
                latency[rows] += self.latency_ms[k]
            stage[going] += 1
            walls[s] = 1e3 * (time.perf_counter() - start)
        return {"prediction": last.argmax(1), "confidence": last.max(1), "probs": last, "stages": stage, "arms": arms,
                "stage_prediction": answers, "stage_confidence": probs.max(2), "table_ms": latency,
                "stage_wall_ms": walls}
