"""Training the supernet: its settings (:mod:`.config`), the trainer (:mod:`.trainer`), its
process-group plumbing (:mod:`.distributed`), test-split evaluation of fixed architectures
(:mod:`.evaluation`) and the one command per data set (:mod:`.prepare`).

``train_supernet`` is imported on first use: the settings alone load without torch."""

from __future__ import annotations

from typing import Any

from instanas_gym.training.config import TrainConfig

__all__ = ["TrainConfig", "train_supernet"]


def __getattr__(name: str) -> Any:
    if name == "train_supernet":
        from instanas_gym.training.trainer import train_supernet

        return train_supernet
    raise AttributeError(f"module 'instanas_gym.training' has no attribute {name!r}")
