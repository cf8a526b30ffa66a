"""The search's controller, of either action view, behind what the search's steps need of it: one
REINFORCE update on a batch rewarded by the bandit, masks for the supernet's steps (sampled or greedy),
and the policy file it ends with."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from instanas_gym.agents.controller import bounded_probs
from instanas_gym.agents.policy import save_policy
from instanas_gym.agents.policy_gradient import ArmLearner, MaskLearner
from instanas_gym.agents.router import Router
from instanas_gym.envs.bandit import InstaNASBandit
from instanas_gym.latency.table import LatencyTable
from instanas_gym.space.family import ArchitectureFamily


class ControllerKind(Protocol):
    """What the search's steps need of a controller: its network and optimizer (checkpointed), one
    REINFORCE update, and masks for the supernet's steps."""

    network: torch.nn.Module
    optimizer: torch.optim.Optimizer

    def learn(self, bandit: InstaNASBandit, idx: np.ndarray, images: torch.Tensor) -> dict[str, float]:
        """One update on training images ``idx`` (``images``, uint8 NCHW) rewarded by ``bandit``; its stats."""
        ...

    def masks(self, images: torch.Tensor, greedy: bool) -> torch.Tensor:
        """Bool masks (B, 17, 5) on the CPU for ``images``: sampled from the behaviour policy, or greedy."""
        ...

    def save(self, path: Path, table: LatencyTable, **meta: Any) -> None:
        """Write the controller file the search ends with (``meta``: plain data kept beside)."""
        ...


class BitsController:
    """The paper's controller: 85 Bernoulli bits per image (:class:`~.policy_gradient.MaskLearner`)."""

    def __init__(self, cfg: Any, in_channels: int, device: torch.device, gen: torch.Generator) -> None:
        self.pg = MaskLearner(cfg.controller.build(in_channels).to(device), cfg.pg, gen)
        self.network, self.optimizer, self.gen = self.pg.network, self.pg.optimizer, gen

    def learn(self, bandit: InstaNASBandit, idx: np.ndarray, images: torch.Tensor) -> dict[str, float]:
        rewarded = lambda masks: bandit.evaluate(idx, masks)  # noqa: E731
        return self.pg.learn(images, rewarded, rewarded)

    @torch.no_grad()
    def masks(self, images: torch.Tensor, greedy: bool) -> torch.Tensor:
        probs = bounded_probs(self.network(images), self.pg.cfg.alpha).cpu()
        return (probs >= 0.5) if greedy else torch.bernoulli(probs, generator=self.gen).bool()

    def save(self, path: Path, table: LatencyTable, **meta: Any) -> None:
        save_policy(path, "masks", self.network.eval(), **meta)


class FamilyController:
    """A categorical controller over the K arms of ``family`` (:class:`~.policy_gradient.ArmLearner`)."""

    def __init__(self, cfg: Any, in_channels: int, device: torch.device, gen: torch.Generator,
                 family: ArchitectureFamily) -> None:
        self.family = family
        network = Router(cfg.controller, in_channels, family.k).to(device)
        self.pg = ArmLearner(network, family.k, cfg.pg, gen, family.masks)
        self.network, self.optimizer = self.pg.network, self.pg.optimizer

    def learn(self, bandit: InstaNASBandit, idx: np.ndarray, images: torch.Tensor) -> dict[str, float]:
        rewarded = lambda arms: bandit.evaluate(idx, self.family.masks[arms])  # noqa: E731
        return self.pg.learn(images, rewarded, rewarded)

    @torch.no_grad()
    def masks(self, images: torch.Tensor, greedy: bool) -> torch.Tensor:
        arms = self.network(images).argmax(1).cpu() if greedy else self.pg.sample(images).arms[:, 0]
        return torch.from_numpy(self.family.masks[arms.numpy()]).bool()

    def save(self, path: Path, table: LatencyTable, **meta: Any) -> None:
        save_policy(path, "family", self.network.eval(), self.family, **meta)
