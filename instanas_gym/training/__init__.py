"""Training the supernet: the trainer (:mod:`.trainer`), its process-group plumbing
(:mod:`.distributed`) and test-split evaluation of fixed architectures (:mod:`.evaluation`)."""

from instanas_gym.training.config import TrainConfig
from instanas_gym.training.trainer import train_supernet

__all__ = ["TrainConfig", "train_supernet"]
