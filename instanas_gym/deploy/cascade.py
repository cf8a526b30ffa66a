"""A cascade policy deployed: its family's architectures as ONNX graphs that also give the softmax
and, for a learned policy, its next decision; and an engine that runs stage by stage on only the
images still going.

:func:`export_cascade` writes a folder: ``manifest.json`` (format ``"instanas-cascade-v2"``: the image
shape, the classes, the stages T, each architecture's mask, file and table latency, and the policy: a
threshold rule's order and thresholds, or ``policy.onnx``), and one ``arm_<k>.onnx`` per architecture.
An arm's graph maps uint8 images to ``logits`` and ``probs``; under a learned policy it also takes
what the cascade has seen so far (``stage``, ``arms``, ``summary``, ``latency_ms``, before this arm)
and gives it back with this arm's answer added, and the policy's ``next`` logits on that: one graph
call per stage, the decision folded in. ``policy.onnx`` (the cascade observation -> logits over the
architectures and STOP) makes only the first decision, and only when the policy looks at the image:
otherwise the first observation is the same for every image and so is the first action, decided once
at load time. :class:`CascadeModel` serves the folder with ONNX Runtime, without PyTorch: stage 1
runs on the whole batch (grouped by the architecture chosen for each image), then only the images
the policy did not stop go to stage 2, grouped by architecture, and so on. The softmax outputs are
rounded to float16 before the policy sees them, as the cascade environment shows them, so the
deployed policy decides as it was trained and judged.
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
from instanas_gym.model.own_statistics import OwnStatistics
from instanas_gym.model.subnetwork import OPSET, SubNetwork
from instanas_gym.model.supernet import Supernet
from instanas_gym.space.family import ArchitectureFamily
from instanas_gym.utils.checks import check_threads
from instanas_gym.utils.files import FileFormatError, atomic_write, atomic_write_text, load_json
from instanas_gym.utils.runtime import session_options

CASCADE_FORMAT = "instanas-cascade-v2"
POLICY_INPUTS = ("image", "stage", "arms", "summary", "latency_ms")
#: An arm graph's inputs under a learned policy besides the images: what the cascade has seen before it;
#: its outputs besides the logits and probs: the same with its answer added (:data:`AFTER`), and ``next``.
SEEN = ("stage", "arms", "summary", "latency_ms")
AFTER = ("arms_after", "summary_after", "latency_ms_after")


def summary_rows(probs: torch.Tensor) -> torch.Tensor:
    """(B, C) softmax outputs -> (B, 3): top-1 probability, margin to the second, entropy (nats), of the
    outputs rounded to float16 as the cascade environment shows them
    (:func:`~instanas_gym.model.outcomes.softmax_summary` in graph form)."""
    p = probs.half().float()
    top2 = p.topk(2, dim=1).values
    entropy = -(p * p.clamp(1e-12, 1.0).log()).sum(1)
    return torch.stack([top2[:, 0], top2[:, 0] - top2[:, 1], entropy], 1)


class _Arm(nn.Module):
    """Architecture ``k`` (``network``) with its softmax and, under a learned ``policy``, the policy's
    next decision on the observation this architecture's answer completes."""

    def __init__(self, network: nn.Module, k: int, latency_ms: float, policy: nn.Module | None) -> None:
        super().__init__()
        self.network, self.k, self.latency_ms, self.policy = network, k, latency_ms, policy

    def forward(self, images: torch.Tensor, *seen: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.network(images)
        probs = logits.softmax(1)
        if self.policy is None:
            return logits, probs
        stage, arms, summary, latency = seen
        here = torch.arange(arms.shape[1]).reshape(1, -1) == stage.reshape(-1, 1)  # (B, T): this stage
        arms = torch.where(here, torch.full_like(arms, self.k), arms)
        summary = torch.where(here.unsqueeze(2), summary_rows(probs).unsqueeze(1), summary)
        latency = latency + self.latency_ms
        obs = {"image": images, "stage": stage + 1, "arms": arms, "summary": summary, "latency_ms": latency}
        return logits, probs, arms, summary, latency, self.policy(obs)


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
    config = dict(policy.config)
    learned = config.get("kind") != "thresholds"
    image = torch.zeros(1, *shape, dtype=torch.uint8)
    seen = (torch.zeros(1, dtype=torch.long), torch.full((1, stages), family.k, dtype=torch.long),
            torch.zeros(1, stages, 3), torch.zeros(1, 1))
    arms = []
    if own is not None:
        own.ensure(family.masks)
    for k, (name, mask) in enumerate(zip(family.names, family.masks)):
        network = SubNetwork(supernet if own is None else own.network(mask), mask)
        arm = _Arm(network, k, float(network_ms[k]), policy if learned else None)
        if learned:
            _write_onnx(arm, (image, *seen), ("images", *SEEN), ("logits", "probs", *AFTER, "next"),
                        folder / f"arm_{k}.onnx")
        else:
            _write_onnx(arm, (image,), ("images",), ("logits", "probs"), folder / f"arm_{k}.onnx")
        arms.append({"name": name, "mask": mask.tolist(), "file": f"arm_{k}.onnx", "latency_ms": float(network_ms[k])})
    if learned:
        _write_onnx(_PolicyGraph(policy), (image, *seen), POLICY_INPUTS, ("logits",), folder / "policy.onnx")
        rule = {"kind": "network", "file": "policy.onnx"}
    else:
        rule = {"kind": "thresholds", "order": config["order"], "thresholds": config["thresholds"]}
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
        self.classes = int(manifest["num_classes"])
        self.latency_ms = np.array([a["latency_ms"] for a in manifest["architectures"]], dtype=np.float64)
        self.arms = [self._session(a["file"]) for a in manifest["architectures"]]
        rule = manifest["policy"]
        self.rule = rule if rule["kind"] == "thresholds" else None
        self.policy = None if self.rule else self._session(rule["file"])
        self._policy_inputs = set() if self.policy is None else {i.name for i in self.policy.get_inputs()}
        self._arm_inputs = [{i.name for i in arm.get_inputs()} for arm in self.arms]
        #: The first action of every image when it does not depend on the image (a rule, or a policy
        #: that does not look at it), else None.
        self.first_action = None
        if "image" not in self._policy_inputs:
            self.first_action = int(self._first(np.zeros((1, *manifest["image_shape"]), np.uint8))[0])

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
            raise FileFormatError(f"{path} is not a cascade manifest ({CASCADE_FORMAT}); export the policy again "
                                  f"with instanas_gym.deploy.cascade.export_cascade")
        return cls(folder, manifest, threads)

    def _seen(self, b: int) -> dict[str, np.ndarray]:
        """What a cascade of ``b`` images has seen before its first stage."""
        return {"stage": np.zeros(b, np.int64), "arms": np.full((b, self.stages), self.k, np.int64),
                "summary": np.zeros((b, self.stages, 3), np.float32), "latency_ms": np.zeros((b, 1), np.float32)}

    def _first(self, images: np.ndarray) -> np.ndarray:
        """The first action of each image: the rule's first architecture, or the policy's choice."""
        if self.rule is not None:
            return np.full(len(images), self.rule["order"][0], np.int64)
        feed = {"image": images, **self._seen(len(images))}
        (logits,) = self.policy.run(None, {k: v for k, v in feed.items() if k in self._policy_inputs})
        return logits.argmax(1)

    def _ruled(self, stage: int, top1: np.ndarray) -> np.ndarray:
        """The threshold rule's next action after stage ``stage`` (0-based) given its top-1 probabilities."""
        order, limits = self.rule["order"], self.rule["thresholds"]
        if stage + 1 >= len(order):
            return np.full(len(top1), self.k, np.int64)
        return np.where(top1 >= limits[stage], self.k, order[stage + 1]).astype(np.int64)

    def run_arm(self, k: int, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Architecture ``k`` alone on uint8 images (B, H, W, C): its ``logits`` and ``probs`` (B, C)."""
        feed = {"images": images, **self._seen(len(images))}
        logits, probs, *_ = self.arms[k].run(None, {n: v for n, v in feed.items() if n in self._arm_inputs[k]})
        return logits, probs

    def decision_ms(self, image_shape: tuple[int, int, int], repeats: int = 200) -> float:
        """The policy's cost per decision at batch 1 (ms): 0 for a threshold rule (a comparison, as
        :func:`~instanas_gym.agents.cascade.decision_ms` counts it), else the median wall clock of
        ``repeats`` runs of the policy graph on a first-stage observation of one image."""
        if self.policy is None:
            return 0.0
        feed = {"image": np.zeros((1, *image_shape), np.uint8), **self._seen(1)}
        feed = {k: v for k, v in feed.items() if k in self._policy_inputs}
        return median_ms(lambda: self.policy.run(None, feed), repeats)

    def predict(self, images: np.ndarray) -> dict[str, Any]:
        """Classify uint8 images (B, H, W, C) by the cascade. Returns ``prediction``, ``confidence`` (B,),
        ``probs`` (B, C), ``stages`` (B,), ``arms`` (B, T; K where none ran), ``stage_prediction`` (B, T;
        -1 where none ran) each stage's answer, ``stage_confidence`` (B, T), ``table_ms`` (B,) the table's
        latency of each image's path, and ``stage_wall_ms`` (T,) the wall clock of each stage for the
        batch (the first decision with stage 1, then the networks run and their decisions; 0 once every
        image has stopped)."""
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if len(images) == 1 and self.rule is None:
            return self._predict_one(images)
        b, t = len(images), self.stages
        walls, start = np.zeros(t), time.perf_counter()
        seen = self._seen(b)
        answers, confidence = np.full((b, t), -1, np.int64), np.zeros((b, t), np.float32)
        last = np.zeros((b, self.classes), np.float32)  # the last softmax run, unrounded
        action = np.full(b, self.first_action, np.int64) if self.first_action is not None else self._first(images)
        going = np.arange(b)
        for s in range(t):
            keep = action < self.k
            if not keep.all():
                going, action = going[keep], action[keep]
                if not len(going):  # every image has stopped
                    break
            kinds = action[:1] if (action == action[0]).all() else np.unique(action)  # one call per architecture
            after = np.empty(len(going), np.int64)
            for k in kinds:
                here = slice(None) if len(kinds) == 1 else action == k
                after[here] = self._stage(int(k), s, going[here], images, seen, last, answers, confidence)
            action = after
            walls[s] = 1e3 * (time.perf_counter() - start)
            start = time.perf_counter()
        return {"prediction": last.argmax(1), "confidence": last.max(1), "probs": last, "stages": seen["stage"],
                "arms": seen["arms"], "stage_prediction": answers, "stage_confidence": confidence,
                "table_ms": np.append(self.latency_ms, 0.0)[seen["arms"]].sum(1), "stage_wall_ms": walls}

    def _predict_one(self, image: np.ndarray) -> dict[str, Any]:
        """:meth:`predict` of one image under a learned policy: the same outputs, with the least Python
        work between the graph calls (what a one-image request waits for)."""
        t, start = self.stages, time.perf_counter()
        seen, walls = self._seen(1), np.zeros(t)
        answers, confidence = np.full((1, t), -1, np.int64), np.zeros((1, t), np.float32)
        action = self.first_action if self.first_action is not None else int(self._first(image)[0])
        p, s = np.zeros((1, self.classes), np.float32), 0
        while s < t and action < self.k:
            feed = {"images": image, **seen}
            _, p, seen["arms"], seen["summary"], seen["latency_ms"], logits = self.arms[action].run(
                None, {n: v for n, v in feed.items() if n in self._arm_inputs[action]})
            answers[0, s], confidence[0, s] = p[0].argmax(), p[0].astype(np.float16).max()
            s, action = s + 1, int(logits[0].argmax())
            seen["stage"] = np.full(1, s, np.int64)
            walls[s - 1] = 1e3 * (time.perf_counter() - start)
            start = time.perf_counter()
        return {"prediction": p.argmax(1), "confidence": p.max(1), "probs": p, "stages": seen["stage"],
                "arms": seen["arms"], "stage_prediction": answers, "stage_confidence": confidence,
                "table_ms": np.append(self.latency_ms, 0.0)[seen["arms"]].sum(1), "stage_wall_ms": walls}

    def _stage(self, k: int, s: int, rows: np.ndarray, images: np.ndarray, seen: dict[str, np.ndarray],
               last: np.ndarray, answers: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        """Architecture ``k`` as stage ``s`` of the images ``rows``: what the cascade has seen updated in
        place; returns their next actions."""
        whole = len(rows) == len(images)  # the whole batch: no copies
        rows = slice(None) if whole else rows
        x = images[rows]
        if self.rule is not None:
            _, p = self.arms[k].run(None, {"images": x})
            seen["arms"][rows, s] = k
            nxt = self._ruled(s, p.astype(np.float16).max(1).astype(np.float32))
        else:
            feed = {"images": x, **{n: v[rows] for n, v in seen.items()}}
            _, p, seen["arms"][rows], seen["summary"][rows], seen["latency_ms"][rows], logits = self.arms[k].run(
                None, {n: v for n, v in feed.items() if n in self._arm_inputs[k]})
            nxt = logits.argmax(1)
        seen["stage"][rows] = s + 1
        last[rows], answers[rows, s] = p, p.argmax(1)
        confidence[rows, s] = p.astype(np.float16).max(1)
        return nxt
