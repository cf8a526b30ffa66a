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

from .checkpoint import BUNDLED_LATENCY_TABLE, BUNDLED_SUPERNET, CACHE_DIR, load_supernet
from .data import ImageSet, load_split
from .latency import LatencyTable
from .reward import LatencyReward, RewardShape
from .runtime import tune_allocator
from .supernet import ExecutionMode, Supernet

ImageOrder = Literal["random", "sequential"]


def default_paths(dataset: str) -> tuple[Path, Path]:
    """Where a dataset's supernet and latency table are looked for when none is given.

    Fashion-MNIST: the ones bundled in the package. Others: ``$INSTANAS_CACHE/<dataset>/last.pt`` and
    ``.../latency.json`` (``~/.cache/instanas_gym`` by default), as the example scripts write them.
    """
    if dataset == "fashion_mnist":
        return BUNDLED_SUPERNET, BUNDLED_LATENCY_TABLE
    return CACHE_DIR / dataset / "last.pt", CACHE_DIR / dataset / "latency.json"


@functools.lru_cache(maxsize=8)
def _cached_split(dataset: str, split: str, root: str | None, download: bool) -> ImageSet:
    return load_split(dataset, split, root, download)


@functools.lru_cache(maxsize=8)
def _cached_supernet(path: str, mtime: float, mode: str, device: str) -> tuple[Supernet, str]:
    model, ckpt = load_supernet(path, mode)  # type: ignore[arg-type]
    return model.to(device), ckpt["dataset"]


class InstaNASBandit:
    """Data, frozen supernet, LUT and reward for one dataset split.

    Args:
        dataset: "fashion_mnist", "cifar10" or "cifar100".
        split: which split the images come from ("search"/"train" to learn on, "test" to evaluate).
        data_root, download: as for :func:`instanas_gym.data.load_split`.
        supernet: checkpoint path, or a :class:`Supernet` used as it is (not copied: a search trains
            it); default per :func:`default_paths`.
        latency_table: path; default per :func:`default_paths`.
        correct_reward, reward_shape, lower_ms, upper_ms, upper_start_frac, upper_end_frac: as for
            :class:`LatencyReward`.
        mode: supernet execution, "dynamic" (default) or "masked".
        device: torch device of the supernet.
        threads: torch intra-op threads (process-wide); None leaves torch's setting.
    """

    def __init__(
        self,
        dataset: str = "fashion_mnist",
        split: str = "search",
        data_root: str | os.PathLike | None = None,
        download: bool = False,
        supernet: str | os.PathLike | Supernet | None = None,
        latency_table: str | os.PathLike | None = None,
        correct_reward: float = 10.0,
        reward_shape: RewardShape = "parabola",
        lower_ms: float | None = None,
        upper_ms: float | None = None,
        upper_start_frac: float = 0.7,
        upper_end_frac: float = 0.5,
        mode: ExecutionMode = "dynamic",
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        tune_allocator()
        if threads is not None:
            torch.set_num_threads(threads)
        default_net, default_lut = default_paths(dataset)
        lut_path = Path(latency_table) if latency_table is not None else default_lut
        if isinstance(supernet, Supernet):
            self.model = supernet  # used as is: a search trains it between evaluations
        else:
            net_path = Path(supernet) if supernet is not None else default_net
            if not net_path.is_file():
                raise FileNotFoundError(
                    f"no supernet checkpoint for {dataset} at {net_path}. Train one with `python "
                    f"examples/train_supernet.py --dataset {dataset} --out {net_path.parent}`, or pass supernet=PATH."
                )
            self.model, trained_on = _cached_supernet(str(net_path), net_path.stat().st_mtime, mode, device)
            if trained_on != dataset:
                raise ValueError(f"supernet {net_path} was trained on {trained_on}, not {dataset}")
        self.data = _cached_split(dataset, split, None if data_root is None else str(data_root), download)
        self.table = LatencyTable.load(lut_path, self.model.space)
        self.reward = LatencyReward(
            self.table, correct_reward, reward_shape, lower_ms, upper_ms, upper_start_frac, upper_end_frac
        )
        self.device = torch.device(device)
        self.dataset, self.split = dataset, split
        self.images = torch.from_numpy(self.data.images).permute(0, 3, 1, 2)  # uint8 NCHW view
        self.macs_table = self.model.space.op_macs

    @property
    def num_images(self) -> int:
        return len(self.data)

    def draw(self, rng: np.random.Generator, order: ImageOrder, cursor: int) -> tuple[int, int]:
        """Next image index for one sub-environment and its new cursor."""
        if order == "random":
            return int(rng.integers(self.num_images)), cursor
        if order == "sequential":
            return cursor % self.num_images, cursor + 1
        raise ValueError(f"order must be 'random' or 'sequential', got {order!r}")

    @torch.inference_mode()
    def evaluate(self, indices: np.ndarray, masks: np.ndarray) -> dict[str, Any]:
        """Run the supernet on images ``indices`` (B,) under ``masks`` (B, 17, 5) uint8/bool.

        Returns arrays (B,): reward, reward_task, reward_arch, correct, label, prediction,
        confidence, latency_ms (LUT, 17 cells), network_latency_ms (LUT, whole network), macs,
        empty_cells; and the reward constants (scalars).
        """
        masks = np.asarray(masks, dtype=bool)
        x = self.images[indices].to(self.device).contiguous()  # NCHW: a permuted view would run channels_last
        logits = self.model(x, torch.from_numpy(masks).to(self.device))
        probs = logits.float().softmax(1)
        confidence, prediction = probs.max(1)
        prediction = prediction.cpu().numpy()
        labels = self.data.labels[indices]
        correct = prediction == labels
        latency = np.asarray(self.table.cells_ms(masks), dtype=np.float64)
        eff = self.model.space.effective_mask(masks)
        out: dict[str, Any] = self.reward(correct, latency)
        out.update(
            correct=correct,
            label=labels,
            prediction=prediction,
            confidence=confidence.cpu().numpy().astype(np.float64),
            latency_ms=latency,
            network_latency_ms=latency + self.table.fixed_ms,
            macs=(eff * self.macs_table).sum(axis=(1, 2)) + self.model.space.fixed_macs,
            empty_cells=(~masks.any(-1)).sum(-1),
        )
        out.update(self.reward.constants())
        return out
