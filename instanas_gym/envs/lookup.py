"""The family view in lookup mode: a K-arm vector env that steps at table speed, from the outcomes
file (:mod:`instanas_gym.model.outcomes`) instead of the supernet."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from instanas_gym.envs.bandit import ImageOrder, InstaNASBandit
from instanas_gym.envs.family import check_arms
from instanas_gym.envs.vector import InstaNASVectorEnv
from instanas_gym.space.family import ArchitectureFamily, as_family, check_family_dataset


class FamilyLookup(InstaNASBandit):
    """The bandit of a family's K arms in lookup mode: :meth:`evaluate_arms` answers by lookup.

    Args:
        family: an :class:`~instanas_gym.space.family.ArchitectureFamily` or the path of its file.
        rebuild: recompute the arms' outcomes even when the outcomes file holds them.
        batch_size: images per supernet call while computing them.
        progress: show a progress bar while computing them.
        **bandit_kwargs: those of :class:`~instanas_gym.envs.bandit.InstaNASBandit` (``supernet`` as a
            path: the outcomes are kept beside it, :class:`~instanas_gym.model.outcomes.OutcomeStore`).

    The arms' outcomes on the whole split are read from the supernet's outcomes file, computed first
    where it lacks them, each arm run alone with the BatchNorm statistics ``bn_statistics`` says
    ("shared", or "own": each arm's own, estimated once on training images); every result says which
    in ``bn_statistics``. The bandit's own :meth:`evaluate` still runs the supernet on any mask.
    """

    def __init__(
        self,
        family: ArchitectureFamily | str | os.PathLike,
        rebuild: bool = False,
        batch_size: int = 256,
        progress: bool = True,
        **bandit_kwargs: Any,
    ) -> None:
        self.family = as_family(family)
        super().__init__(**bandit_kwargs)
        check_family_dataset(self.family, self.dataset, family)
        if self.supernet_path is None:
            raise ValueError("lookup mode keeps outcomes beside the supernet's checkpoint: pass supernet=PATH, "
                             "not a Supernet object")
        store = self.outcome_store(batch_size=batch_size, progress=progress, rebuild=rebuild)
        self.outcomes_path = store.path
        self.outcomes = store.get(self.family.masks)
        self._figures: tuple[Any, dict[str, np.ndarray]] | None = None

    def arm_figures(self) -> dict[str, np.ndarray]:
        """:meth:`arch_figures` of the K arms (K,), by the current table (recomputed when it changes,
        as :meth:`calibrate_latency` changes it)."""
        if self._figures is None or self._figures[0] is not self.table:
            self._figures = (self.table, self.arch_figures(self.family.masks))
        return self._figures[1]

    def evaluate_arms(self, indices: np.ndarray, arms: np.ndarray) -> dict[str, Any]:
        """:meth:`evaluate` of images ``indices`` (B,) under the family's masks ``arms`` (B,), by lookup:
        the same arrays and constants, from the stored outcomes and the current table and bounds, and
        ``bn_statistics``, the statistics the arms ran with."""
        arch = {name: value[arms] for name, value in self.arm_figures().items()}
        out = self.outcomes
        result = self.outcome(indices, out.prediction[arms, indices], out.confidence[arms, indices], arch)
        result["bn_statistics"] = self.bn_statistics
        return result


class FamilyLookupVectorEnv(InstaNASVectorEnv):
    """``num_envs`` images, one arm of a family each, answered from the stored outcomes.

    What :class:`~instanas_gym.envs.family.FamilyVectorAction` over
    :class:`~instanas_gym.envs.vector.InstaNASVectorEnv` returns, for the same seeds and arms: the same
    images, rewards (the same reward code, with the current table's latencies and the current
    annealed bounds), terminations and infos (``info["final_info"]["arm"]`` and ``["bn_statistics"]`` included), with the
    supernet run once per (arm, image) beforehand instead of at every step
    (:class:`FamilyLookup`: the outcomes are read from the supernet's outcomes file, computed first
    where it lacks them). ``set_latency_bounds``, ``bandit.reward.anneal``,
    ``calibrate_latency`` and ``evaluate_current`` (which runs the supernet on any masks) work as there.

    Args:
        num_envs: sub-environments.
        family: an :class:`~instanas_gym.space.family.ArchitectureFamily` or the path of its file.
        rebuild, batch_size, progress: as for :class:`FamilyLookup`.
        order, render_mode, **kwargs: as for :class:`~instanas_gym.envs.vector.InstaNASVectorEnv`.
    """

    bandit_class = FamilyLookup
    bandit: FamilyLookup

    def __init__(
        self,
        num_envs: int = 1,
        family: ArchitectureFamily | str | os.PathLike | None = None,
        rebuild: bool = False,
        batch_size: int = 256,
        progress: bool = True,
        order: ImageOrder = "random",
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        if family is None:
            raise TypeError("family is required: an ArchitectureFamily or the path of its file")
        super().__init__(num_envs, order, render_mode, family=family, rebuild=rebuild,
                         batch_size=batch_size, progress=progress, **kwargs)
        self.family = self.bandit.family
        self.single_action_space = spaces.Discrete(self.family.k)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def step(self, actions: Any):
        indices = self._awaiting()
        arms = check_arms(actions, self.family.k, (self.num_envs,), "actions")
        out = self.bandit.evaluate_arms(indices, arms)
        out["arm"] = arms
        out["bn_statistics"] = out.pop("bn_statistics")  # last, in the live family view's info order
        return self._step_with(out, self.family.masks[arms])

    def evaluate_current_arms(self, arms: Any) -> dict[str, Any]:
        """Reward terms and infos of ``arms`` (num_envs,) on the images awaiting actions, without
        stepping, by lookup: several arms per image (a leave-one-out baseline) at table speed."""
        arms = check_arms(arms, self.family.k, (self.num_envs,), "arms")
        return self.bandit.evaluate_arms(self._awaiting(), arms)
