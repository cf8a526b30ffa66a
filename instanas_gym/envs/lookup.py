"""The family view in lookup mode: a K-arm vector env that steps at table speed, without the supernet."""

from __future__ import annotations

import os
from typing import Any

from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from instanas_gym.bandit import ImageOrder
from instanas_gym.family import ArchitectureFamily
from instanas_gym.lookup import FamilyLookup

from instanas_gym.envs.family import check_arms
from instanas_gym.envs.vector import InstaNASVectorEnv


class FamilyLookupVectorEnv(InstaNASVectorEnv):
    """``num_envs`` images, one arm of a family each, answered from the family's stored outcomes.

    What :class:`~instanas_gym.envs.family.FamilyVectorAction` over
    :class:`~instanas_gym.envs.vector.InstaNASVectorEnv` returns, for the same seeds and arms: the same
    images, rewards (the same reward code, with the current table's latencies and the current
    annealed bounds), terminations and infos (``info["final_info"]["arm"]`` included), with the
    supernet run once per (arm, image) beforehand instead of at every step
    (:class:`~instanas_gym.lookup.FamilyLookup`: the outcomes are computed on first use and stored
    beside the family file; a stale file is refused). ``set_latency_bounds``, ``bandit.reward.anneal``,
    ``calibrate_latency`` and ``evaluate_current`` (which runs the supernet on any masks) work as there.

    Args:
        num_envs: sub-environments.
        family: an :class:`~instanas_gym.family.ArchitectureFamily` or the path of its file.
        outcomes, rebuild, batch_size, progress: as for :class:`~instanas_gym.lookup.FamilyLookup`.
        order, render_mode, **kwargs: as for :class:`~instanas_gym.envs.vector.InstaNASVectorEnv`.
    """

    bandit_class = FamilyLookup
    bandit: FamilyLookup

    def __init__(
        self,
        num_envs: int = 1,
        family: ArchitectureFamily | str | os.PathLike | None = None,
        outcomes: str | os.PathLike | None = None,
        rebuild: bool = False,
        batch_size: int = 256,
        progress: bool = True,
        order: ImageOrder = "random",
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        if family is None:
            raise TypeError("family is required: an ArchitectureFamily or the path of its file")
        super().__init__(num_envs, order, render_mode, family=family, outcomes=outcomes, rebuild=rebuild,
                         batch_size=batch_size, progress=progress, **kwargs)
        self.family = self.bandit.family
        self.single_action_space = spaces.Discrete(self.family.k)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def step(self, actions: Any):
        indices = self._awaiting()
        arms = check_arms(actions, self.family.k, (self.num_envs,), "actions")
        out = self.bandit.evaluate_arms(indices, arms)
        out["arm"] = arms
        return self._step_with(out, self.family.masks[arms])

    def evaluate_current_arms(self, arms: Any) -> dict[str, Any]:
        """Reward terms and infos of ``arms`` (num_envs,) on the images awaiting actions, without
        stepping, by lookup: several arms per image (a leave-one-out baseline) at table speed."""
        arms = check_arms(arms, self.family.k, (self.num_envs,), "arms")
        return self.bandit.evaluate_arms(self._awaiting(), arms)
