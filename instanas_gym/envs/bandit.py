"""The InstaNAS contextual bandit without Gymnasium: images, supernet, latency table and reward.

:class:`InstaNASBandit` evaluates a batch of (image, mask) pairs in one supernet call and returns every
reward term; the single environment uses it at batch 1 and the vector environment at batch N.
Loaded data sets and supernets are cached per process, so many sub-environments share one copy.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from instanas_gym.envs.reward import LatencyReward, RewardConfig
from instanas_gym.latency.calibration import calibrate
from instanas_gym.latency.measure import measure_masks
from instanas_gym.latency.table import LatencyTable
from instanas_gym.model.checkpoint import load_supernet, train_hint
from instanas_gym.model.outcomes import STATISTICS, OutcomeStore, Statistics
from instanas_gym.model.own_statistics import OwnStatistics
from instanas_gym.model.supernet import EXECUTION_MODES, ExecutionMode, Supernet
from instanas_gym.space.data import ImageSet, check_data_root, get_spec, load_split, statistics_split
from instanas_gym.space.masks import spread_masks
from instanas_gym.utils.checks import check_int, check_precision, check_threads
from instanas_gym.utils.devices import autocast, cpu_copy, resolve_device
from instanas_gym.utils.paths import DEFAULT_LATENCY_BACKEND, default_latency_table, default_supernet
from instanas_gym.utils.runtime import tune_allocator

ImageOrder = Literal["random", "sequential"]
IMAGE_ORDERS = ("random", "sequential")


@functools.lru_cache(maxsize=8)
def cached_split(dataset: str, split: str, root: str | None, download: bool) -> ImageSet:
    """:func:`~instanas_gym.space.data.load_split`, loaded once per process (every bandit shares it)."""
    return load_split(dataset, split, root, download)


@functools.lru_cache(maxsize=8)
def _cached_supernet(path: str, mtime: float, mode: str, device: str) -> tuple[Supernet, str]:
    model, ckpt = load_supernet(path, mode)  # type: ignore[arg-type]
    return model.to(device), ckpt["dataset"]


def _check_args(dataset: str, mode: str, threads: int | None, download: bool, data_root: Any) -> None:
    """Refuse bad arguments before anything loads or starts threads."""
    get_spec(dataset)  # unknown datasets raise here, before any file is looked for
    if mode not in EXECUTION_MODES:
        raise ValueError(f"mode must be one of {EXECUTION_MODES}, got {mode!r}")
    if not isinstance(download, bool):  # before the cache of loaded splits hashes it
        raise TypeError(f"download must be True or False, got {download!r}")
    check_data_root("data_root", data_root)
    check_threads("threads", threads, optional=True)


class InstaNASBandit:
    """Data, frozen supernet, LUT and reward for one dataset split.

    Args:
        dataset: "fashion_mnist", "cifar10" or "cifar100".
        split: which split the images come from ("search"/"train" to learn on, "test" to evaluate).
        data_root, download: as for :func:`instanas_gym.space.data.load_split`.
        supernet: checkpoint path, or a :class:`Supernet` used as it is (not copied: a search trains
            it); default per :func:`instanas_gym.utils.paths.default_supernet`.
        latency_table: path; default per :func:`instanas_gym.utils.paths.default_latency_table`.
        latency_backend: which runtime's default table: "onnxruntime" (the deployed model: each
            architecture as a static ONNX graph, the default) or "torch" (eager PyTorch, dynamic
            execution); ignored when ``latency_table`` is given.
        reward: the reward's settings (:class:`~instanas_gym.envs.reward.RewardConfig`, or a dict of its fields).
        mode: supernet execution, "dynamic" (default) or "masked".
        device: where the supernet runs: "cpu" (default), "cuda", "cuda:N" or "auto" (CUDA when
            present); on a GPU the split's images are copied there once, and each step sends only indices.
        precision: "fp32" (default) or "bf16" (bfloat16 autocast of the supernet's forward pass).
        threads: torch intra-op threads (process-wide), at most the cores this process may use; None
            leaves torch's setting.
        bn_statistics: the BatchNorm statistics of single architectures run alone (family arms in lookup
            mode, :meth:`outcome_store`): "shared" (the supernet's) or "own" (each architecture's,
            :meth:`own_statistics`). :meth:`evaluate` runs per-image masks, always with the shared ones.
    """

    def __init__(
        self,
        dataset: str = "fashion_mnist",
        split: str = "search",
        data_root: str | os.PathLike | None = None,
        download: bool = False,
        supernet: str | os.PathLike | Supernet | None = None,
        latency_table: str | os.PathLike | None = None,
        latency_backend: str = DEFAULT_LATENCY_BACKEND,
        reward: RewardConfig | dict[str, Any] | None = None,
        mode: ExecutionMode = "dynamic",
        device: str = "cpu",
        threads: int | None = None,
        precision: str = "fp32",
        bn_statistics: Statistics = "shared",
    ) -> None:
        _check_args(dataset, mode, threads, download, data_root)
        if bn_statistics not in STATISTICS:
            raise ValueError(f"bn_statistics must be one of {STATISTICS}, got {bn_statistics!r}")
        self.bn_statistics: Statistics = bn_statistics
        self._data_source = (None if data_root is None else str(data_root), download)
        self._own: OwnStatistics | None = None
        self.device = resolve_device(device)
        self.precision = check_precision(precision)
        reward_cfg = RewardConfig.coerce(reward)
        tune_allocator()
        if threads is not None:
            torch.set_num_threads(threads)
        default_lut = default_latency_table(dataset, latency_backend)  # checks latency_backend
        lut_path = Path(latency_table) if latency_table is not None else default_lut
        self.supernet_path: Path | None = None  # the checkpoint, when the supernet came from one
        if isinstance(supernet, Supernet):
            self.model = supernet.to(self.device)  # not copied: a search trains it between evaluations
        else:
            net_path = Path(supernet) if supernet is not None else default_supernet(dataset)
            if not net_path.is_file():
                raise FileNotFoundError(
                    f"no supernet checkpoint for {dataset} at {net_path}: {train_hint(net_path, dataset)}, "
                    f"or pass supernet=PATH."
                )
            self.model, trained_on = _cached_supernet(str(net_path), net_path.stat().st_mtime, mode, str(self.device))
            self.supernet_path = net_path
            if trained_on != dataset:
                raise ValueError(f"supernet {net_path} was trained on {trained_on}, not {dataset}")
        self.data = cached_split(dataset, split, None if data_root is None else str(data_root), download)
        self.table = LatencyTable.load(lut_path, self.model.space)
        self.reward = LatencyReward(self.table, reward_cfg)
        self.dataset, self.split = dataset, split
        self.images = torch.from_numpy(self.data.images).permute(0, 3, 1, 2).to(self.device)  # uint8 NCHW view
        self.macs_table = self.model.space.op_macs

    def outcome_store(self, **kwargs: Any) -> OutcomeStore:
        """The store of single architectures' outcomes on this split, with this bandit's ``bn_statistics``
        (:class:`~instanas_gym.model.outcomes.OutcomeStore`, kept beside the supernet's checkpoint;
        in memory only for a supernet given as an object); ``kwargs``: its ``batch_size``,
        ``progress``, ``rebuild``."""
        own = self.own_statistics(kwargs.get("progress", True)) if self.bn_statistics == "own" else None
        return OutcomeStore(self.model, self.supernet_path, self.data, self.bn_statistics, own=own, **kwargs)

    def own_statistics(self, progress: bool = True) -> OwnStatistics:
        """Each architecture's own BatchNorm statistics (:class:`~instanas_gym.model.own_statistics.OwnStatistics`,
        default settings), estimated on the data set's training images
        (:func:`~instanas_gym.space.data.statistics_split`) and kept beside the supernet's checkpoint."""
        if self._own is None:
            split = cached_split(self.dataset, statistics_split(self.dataset), *self._data_source)
            self._own = OwnStatistics(self.model, self.supernet_path, split, progress=progress)
        return self._own

    @property
    def num_images(self) -> int:
        return len(self.data)

    def draw(self, rng: np.random.Generator, order: ImageOrder, cursor: int) -> tuple[int, int]:
        """Next image index for one sub-environment and its new cursor."""
        if order == "random":
            return int(rng.integers(self.num_images)), cursor
        if order == "sequential":
            return cursor % self.num_images, cursor + 1
        raise ValueError(f"order must be one of {IMAGE_ORDERS}, got {order!r}")

    def check_index(self, index: Any, name: str = "options['index']") -> int:
        """``index`` as an image index of this split: a Python or numpy integer in [0, num_images)."""
        index = check_int(name, index, minimum=0)
        if index >= self.num_images:
            raise ValueError(f"{name} must be in [0, {self.num_images}), got {index}")
        return index

    def calibrate_latency(self, n_masks: int = 20, seed: int = 0) -> dict[str, float]:
        """Fit the latency table to this machine: time ``n_masks`` (<= 20) masks in the table's runtime
        (``meta["runtime"]``: eager PyTorch or ONNX Runtime) and scale the table and the reward's bounds
        by the median ratio of measured to predicted ms; returns ``{"scale", "mape_before_pct", "mape_after_pct", "n_masks"}``."""
        masks = self.model.space.effective_mask(spread_masks(np.random.default_rng(seed), n_masks))
        threads = self.table.threads
        model = cpu_copy(self.model) if self.table.meta.get("device", "cpu") == "cpu" else self.model
        if self.table.meta.get("runtime") == "onnxruntime":
            from instanas_gym.latency.onnx import measure_onnx_masks

            measure = lambda m: measure_onnx_masks(model, m, threads)
        else:
            measure = lambda m: measure_masks(model, m, threads)
        self.table, report = calibrate(self.table, measure, masks)
        self.reward.use_table(self.table, report["scale"])
        return report

    def evaluate(self, indices: np.ndarray, masks: np.ndarray) -> dict[str, Any]:
        """Run the supernet on images ``indices`` (B,) under ``masks`` (B, 17, 5) uint8/bool.

        Returns arrays (B,): reward, reward_task, reward_arch, correct, label, prediction,
        confidence, latency_ms (LUT, 17 cells), network_latency_ms (LUT, whole network), macs,
        empty_cells; and the reward constants (scalars).
        """
        prediction, confidence = self.classify(indices, masks)
        return self.outcome(indices, prediction, confidence, self.arch_figures(masks))

    @torch.inference_mode()
    def softmax(self, indices: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """The supernet's softmax output, float32 (B, C), on images ``indices`` (B,) under ``masks``
        (B, 17, 5) uint8/bool."""
        rows = torch.from_numpy(np.asarray(indices)).to(self.device)
        x = self.images[rows].contiguous()  # NCHW: a permuted view would run channels_last
        with autocast(self.device, self.precision):
            # masks stay on the CPU: dynamic execution reads them there
            logits = self.model(x, torch.from_numpy(np.asarray(masks, dtype=bool)))
        return logits.float().softmax(1).cpu().numpy()

    def classify(self, indices: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The supernet's answer on images ``indices`` (B,) under ``masks`` (B, 17, 5) uint8/bool:
        ``(prediction int64 (B,), confidence float64 (B,))``, the softmax probability of the prediction."""
        probs = torch.from_numpy(self.softmax(indices, masks))
        confidence, prediction = probs.max(1)
        return prediction.numpy(), confidence.numpy().astype(np.float64)

    def arch_figures(self, masks: np.ndarray) -> dict[str, np.ndarray]:
        """What ``masks`` (B, 17, 5) cost, by the current table: arrays (B,) latency_ms (17 cells),
        network_latency_ms (whole network), macs (batch 1), empty_cells."""
        masks = np.asarray(masks, dtype=bool)
        latency = np.asarray(self.table.cells_ms(masks), dtype=np.float64)
        eff = self.model.space.effective_mask(masks)
        return {
            "latency_ms": latency,
            "network_latency_ms": latency + self.table.fixed_ms,
            "macs": (eff * self.macs_table).sum(axis=(1, 2)) + self.model.space.fixed_macs,
            "empty_cells": (~masks.any(-1)).sum(-1),
        }

    def outcome(
        self, indices: np.ndarray, prediction: np.ndarray, confidence: np.ndarray, arch: dict[str, np.ndarray]
    ) -> dict[str, Any]:
        """:meth:`evaluate`'s result from the supernet's answers on images ``indices`` (:meth:`classify`)
        and their masks' :meth:`arch_figures`: the reward (of the reward's current bounds) and every info."""
        labels = self.data.labels[indices]
        correct = prediction == labels
        out: dict[str, Any] = self.reward(correct, arch["latency_ms"])
        out.update(correct=correct, label=labels, prediction=prediction, confidence=confidence, **arch)
        out.update(self.reward.constants())
        return out
