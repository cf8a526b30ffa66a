"""Which environment, and how it is set up: one dataclass that agents, the search and the command
line pass whole to ``gymnasium.make`` / ``make_vec``.

Light on purpose: the command line imports it to parse its flags, so the environments themselves
(and torch) are imported by the methods that make them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import gymnasium as gym

import instanas_gym
from instanas_gym.envs.reward import RewardConfig
from instanas_gym.space.data import DataConfig, get_spec
from instanas_gym.utils.checks import check_int
from instanas_gym.utils.run import RunConfig

if TYPE_CHECKING:
    from gymnasium.vector import VectorEnv

    from instanas_gym.envs.bandit import InstaNASBandit
    from instanas_gym.envs.cascade_vector import CascadeVectorEnv
    from instanas_gym.space.family import ArchitectureFamily


#: The registered environment ids (``instanas_gym.ENV_IDS``) as a type: the command line offers them.
EnvId = Literal[tuple(instanas_gym.ENV_IDS)]  # type: ignore[valid-type]


@dataclass(frozen=True)
class EnvConfig:
    """An InstaNAS environment id and its settings (see :class:`~instanas_gym.envs.instanas_env.InstaNASEnv`);
    where the supernet runs (device, precision, threads) comes from the run's settings
    (:class:`~instanas_gym.utils.run.RunConfig`)."""

    env_id: EnvId = "InstaNAS-FashionMNIST-v0"
    """The environment, one per data set."""
    split: str | None = None
    """The split to learn on; unset, the environment's own ("search" for Fashion-MNIST, "train" for CIFAR)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Where the images are (Fashion-MNIST's test and search splits ship in the package)."""
    supernet: str | None = None
    """Supernet checkpoint; unset, the bundled one (Fashion-MNIST) or $INSTANAS_CACHE/<dataset>/last.pt."""
    latency_table: str | None = None
    """Latency table file; unset, the bundled one, or latency_onnxruntime.json (latency.json for torch) in
    $INSTANAS_CACHE/<dataset>/."""
    latency_backend: Literal["onnxruntime", "torch"] = "onnxruntime"
    """The runtime whose latency table the reward uses when no table is given."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """The reward: what a right answer earns, and the latency band it aims at."""
    family: str | None = None
    """Family or router file whose architectures the family view chooses among; unset, the bundled family."""
    lookup: bool = True
    """The family and cascade views answer from stored outcomes (computed once; the live rewards at
    table speed); else the supernet runs at every step."""
    stages: int = 3
    """The cascade view: at most this many architectures run per image."""
    bn_statistics: Literal["shared", "own"] = "shared"
    """BatchNorm statistics of single architectures run alone (the family view's arms in lookup mode,
    the stored outcomes that judging reads): "shared" (the supernet's) or "own" (each architecture's,
    estimated once on training images and kept beside the supernet); per-image masks always run with
    the shared ones, and infos say which in bn_statistics."""

    def __post_init__(self) -> None:
        if self.env_id not in instanas_gym.ENV_IDS:
            raise ValueError(f"env.env_id must be one of {sorted(instanas_gym.ENV_IDS)}, got {self.env_id!r}")
        for name in ("split", "supernet", "latency_table", "family"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise TypeError(f"env.{name} must be a string or None, got {getattr(self, name)!r}")
        splits = get_spec(self.dataset).splits
        if self.split is not None and self.split not in splits:
            raise ValueError(f"env.split must be one of {splits} for {self.env_id}, got {self.split!r}")
        if not isinstance(self.lookup, bool):
            raise TypeError(f"env.lookup must be True or False, got {self.lookup!r}")
        check_int("env.stages", self.stages)
        if self.bn_statistics not in ("shared", "own"):
            raise ValueError(f"env.bn_statistics must be 'shared' or 'own', got {self.bn_statistics!r}")
        if self.bn_statistics == "own" and not self.lookup:
            raise ValueError("env.bn_statistics='own' needs env.lookup=True: the arms run with their own BatchNorm "
                             "statistics from the stored outcomes; the live view runs the shared ones")

    @property
    def dataset(self) -> str:
        return instanas_gym.ENV_IDS[self.env_id]["dataset"]

    @property
    def train_split(self) -> str:
        """The split it learns on: ``split``, else the id's."""
        return self.split or instanas_gym.ENV_IDS[self.env_id]["split"]

    def kwargs(self, run: RunConfig | None = None) -> dict[str, Any]:
        """Keyword arguments for ``gymnasium.make(self.env_id, ...)``; ``run``: its device, precision and threads."""
        paths = {"split": self.split, "data_root": self.data.root, "supernet": self.supernet,
                 "latency_table": self.latency_table}
        where = {} if run is None else {"device": run.device, "precision": run.precision, "threads": run.threads}
        return {k: v for k, v in paths.items() if v is not None} | {
            "reward": self.reward, "latency_backend": self.latency_backend, "download": self.data.download,
            "bn_statistics": self.bn_statistics} | where

    def make_vec(self, num_envs: int, run: RunConfig | None = None, **extra: Any) -> gym.vector.VectorEnv:
        """The native batched vector env with ``num_envs`` sub-environments."""
        return gym.make_vec(self.env_id, num_envs=num_envs, vectorization_mode="vector_entry_point",
                            **self.kwargs(run), **extra)

    def make_family_vec(self, num_envs: int, family: ArchitectureFamily, run: RunConfig | None = None,
                        **extra: Any) -> VectorEnv:
        """The family view (``Discrete(K)`` arms) of the native vector env: live
        (:class:`~instanas_gym.envs.family.FamilyVectorAction`) or, with ``lookup``, from the stored
        outcomes (:class:`~instanas_gym.envs.lookup.FamilyLookupVectorEnv`; ``extra``: its
        ``rebuild``, ``progress``...). Both offer ``evaluate_current_arms``."""
        from instanas_gym.envs.family import FamilyVectorAction
        from instanas_gym.envs.lookup import FamilyLookupVectorEnv

        if not self.lookup:
            return FamilyVectorAction(self.make_vec(num_envs, run), family)
        kwargs = {**instanas_gym.ENV_IDS[self.env_id], **self.kwargs(run)}
        return FamilyLookupVectorEnv(num_envs, family=family, **kwargs, **extra)

    def make_cascade_vec(self, num_envs: int, family: ArchitectureFamily | None, run: RunConfig | None = None,
                         **extra: Any) -> CascadeVectorEnv:
        """The cascade view (:class:`~instanas_gym.envs.cascade_vector.CascadeVectorEnv`) of ``family``
        (None: the default cascade family), ``stages`` per image; ``extra``: its other arguments."""
        from instanas_gym.envs.cascade_vector import CascadeVectorEnv

        kwargs = {**instanas_gym.ENV_IDS[self.env_id], **self.kwargs(run)}
        return CascadeVectorEnv(num_envs, family=family, stages=self.stages, lookup=self.lookup, **kwargs, **extra)

    def bandit(self, split: str, run: RunConfig | None = None) -> InstaNASBandit:
        """The environment's bandit on another split (``"test"`` to judge a policy)."""
        from instanas_gym.envs.bandit import InstaNASBandit

        return InstaNASBandit(**{**instanas_gym.ENV_IDS[self.env_id], **self.kwargs(run), "split": split})


@dataclass(frozen=True)
class JudgeConfig:
    """How a trained policy is judged on the environment's test split (nested as ``judge`` in every
    command that judges one)."""

    limit: int | None = None
    """Judge on the first N test images only; unset, on all of them."""
    measure: int = 0
    """Test images whose architectures are also timed on the clock, at batch 1 in the latency table's
    runtime and threads, beside the table's figure for the same images (0: none)."""
    own_archs: int = 16
    """Masks and family views: the policy's most used architectures scored beside the 18 probes (0: none);
    a cascade is held against its whole family."""

    def __post_init__(self) -> None:
        check_int("judge.limit", self.limit, optional=True)
        check_int("judge.measure", self.measure, minimum=0)
        check_int("judge.own_archs", self.own_archs, minimum=0)
