"""Which environment, and how it is set up: one dataclass that agents, the search and the command
line pass whole to ``gymnasium.make`` / ``make_vec``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

import gymnasium as gym
from gymnasium.vector import VectorEnv

import instanas_gym
from instanas_gym.envs.bandit import InstaNASBandit
from instanas_gym.envs.family import FamilyVectorAction
from instanas_gym.envs.lookup import FamilyLookupVectorEnv
from instanas_gym.envs.reward import RewardConfig
from instanas_gym.model.outcomes import outcomes_path
from instanas_gym.space.family import ArchitectureFamily
from instanas_gym.utils.devices import Precision, check_precision, resolve_device


@dataclass(frozen=True)
class EnvConfig:
    """An InstaNAS environment id and its settings (see :class:`~instanas_gym.envs.instanas_env.InstaNASEnv`)."""

    env_id: str = "InstaNAS-FashionMNIST-v0"
    """A registered id (instanas_gym.ENV_IDS)."""
    split: str | None = None
    """The split to learn on; None: the id's ("search" for Fashion-MNIST, "train" for CIFAR)."""
    data_root: str | None = None
    """Data folder (CIFAR); default $INSTANAS_DATA, else $INSTANAS_CACHE/data."""
    supernet: str | None = None
    """Supernet checkpoint; default: bundled (Fashion-MNIST) or $INSTANAS_CACHE/<dataset>/last.pt."""
    latency_table: str | None = None
    """Latency table JSON; default: bundled, or the backend's table in $INSTANAS_CACHE/<dataset>/."""
    latency_backend: Literal["onnxruntime", "torch"] = "onnxruntime"
    """The runtime whose default latency table the reward uses (when latency_table is None)."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """The reward's settings."""
    device: str = "auto"
    """Where the supernet runs: "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:N"."""
    precision: Precision = "fp32"
    """"bf16": bfloat16 autocast of the supernet's forward pass."""

    def __post_init__(self) -> None:
        if self.env_id not in instanas_gym.ENV_IDS:
            raise ValueError(f"env_id must be one of {sorted(instanas_gym.ENV_IDS)}, got {self.env_id!r}")
        resolve_device(self.device, "env.device")
        check_precision(self.precision, "env.precision")

    @property
    def dataset(self) -> str:
        return instanas_gym.ENV_IDS[self.env_id]["dataset"]

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``gymnasium.make(self.env_id, ...)``."""
        paths = {"split": self.split, "data_root": self.data_root, "supernet": self.supernet,
                 "latency_table": self.latency_table}
        return {k: v for k, v in paths.items() if v is not None} | {
            "reward": self.reward, "latency_backend": self.latency_backend, "device": self.device,
            "precision": self.precision}

    def make_vec(self, num_envs: int, **extra: Any) -> gym.vector.VectorEnv:
        """The native batched vector env with ``num_envs`` sub-environments."""
        return gym.make_vec(self.env_id, num_envs=num_envs, vectorization_mode="vector_entry_point",
                            **self.kwargs(), **extra)

    @property
    def train_split(self) -> str:
        """The split it learns on: ``split``, else the id's."""
        return self.split or instanas_gym.ENV_IDS[self.env_id]["split"]

    def make_family_vec(
        self, num_envs: int, family: ArchitectureFamily | str | os.PathLike, lookup: bool = False,
        source: str | os.PathLike | None = None, **extra: Any
    ) -> VectorEnv:
        """The family view (``Discrete(K)`` arms) of the native vector env: live
        (:class:`~instanas_gym.envs.family.FamilyVectorAction`) or, with ``lookup``, from the
        family's stored outcomes (:class:`~instanas_gym.envs.lookup.FamilyLookupVectorEnv`), kept
        beside ``source``, the file the family came from (a family or router file;
        :func:`~instanas_gym.model.outcomes.outcomes_path` of it and :attr:`train_split`), unless ``extra``
        names ``outcomes``. Both offer ``evaluate_current_arms``."""
        if not lookup:
            return FamilyVectorAction(self.make_vec(num_envs), family)
        if source is not None:
            extra.setdefault("outcomes", outcomes_path(source, self.train_split))
        kwargs = {**instanas_gym.ENV_IDS[self.env_id], **self.kwargs()}
        return FamilyLookupVectorEnv(num_envs, family=family, **kwargs, **extra)

    def bandit(self, split: str) -> InstaNASBandit:
        """The environment's bandit on another split (``"test"`` to judge a policy)."""
        return InstaNASBandit(**{**instanas_gym.ENV_IDS[self.env_id], **self.kwargs(), "split": split})
