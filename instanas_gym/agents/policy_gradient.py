"""The REINFORCE update of the paper, written once for every caller (the REINFORCE agent and the
search's controller epochs).

Per update, on a batch of images:

1. p = sigmoid(controller(images)), bounded: p' = alpha * p + (1 - alpha) * (1 - p)   (17 x 5 each)
2. sample masks a ~ Bernoulli(p'); the greedy masks g = [p' >= 0.5] are the baseline
3. advantage A = R(a) - R(g), both on the same images (self-critical)
4. loss = -mean_batch(A * sum_bits log p'(a)) - entropy_coef * mean_bits H(p')
   (+ logit_penalty * mean_batch(sum_bits logit^2)); Adam, gradients clipped to ``max_grad_norm``
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from instanas_gym.agents.controller import Controller, bounded_probs, greedy_masks
from instanas_gym.utils.checks import check_number


@dataclass(frozen=True)
class PolicyGradientConfig:
    """Settings of the REINFORCE update (the paper's defaults)."""

    lr: float = 1e-3
    """Adam learning rate of the controller."""
    alpha: float = 0.8
    """Encouragement bound: every keep probability stays in [1 - alpha, alpha]."""
    entropy_coef: float = 0.8
    """Weight of the mean Bernoulli entropy bonus (nats)."""
    max_grad_norm: float = 5.0
    """Gradient clipping (L2 norm)."""
    logit_penalty: float = 0.0
    """L2 on the controller's logits (0: the paper's loss): the entropy bonus cannot pull a
    saturated sigmoid back (its gradient vanishes there), an L2 on the logits can."""

    def __post_init__(self) -> None:
        check_number("alpha", self.alpha, low=0.5, high=1, low_open=True)
        for name in ("lr", "max_grad_norm"):
            check_number(name, getattr(self, name), low=0, low_open=True)
        for name in ("entropy_coef", "logit_penalty"):
            check_number(name, getattr(self, name), low=0)


def log_prob(probs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Sum over the 85 bits of log Bernoulli(actions | probs): shape (B,)."""
    eps = 1e-8
    lp = actions * torch.log(probs + eps) + (1 - actions) * torch.log(1 - probs + eps)
    return lp.flatten(1).sum(1)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean over batch and bits of the Bernoulli entropy (nats, at most ln 2)."""
    eps = 1e-8
    return -(probs * torch.log(probs + eps) + (1 - probs) * torch.log(1 - probs + eps)).mean()


def reinforce_loss(
    probs: torch.Tensor, actions: torch.Tensor, advantage: torch.Tensor, entropy_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """-mean(A * log p'(a)) - entropy_coef * H(p'); returns (loss, entropy)."""
    ent = entropy(probs)
    return -(advantage * log_prob(probs, actions)).mean() - entropy_coef * ent, ent


@dataclass
class Sample:
    """The controller's decision on a batch: logits and bounded probabilities (B, 17, 5), the sampled
    masks (float 0/1 tensor, for the loss) and, as uint8 numpy, the sampled and greedy masks."""

    logits: torch.Tensor
    probs: torch.Tensor
    actions: torch.Tensor

    @property
    def masks(self) -> np.ndarray:
        return self.actions.to(torch.uint8).cpu().numpy()

    @property
    def greedy(self) -> np.ndarray:
        return greedy_masks(self.probs)


class Reinforce:
    """A controller, its Adam optimizer and the update of the module docstring.

    Use: ``s = pg.sample(images)``; evaluate ``s.masks`` (rewards) and ``s.greedy`` (baseline) on
    the same images; ``stats = pg.update(s, rewards, baseline)``.
    """

    def __init__(self, controller: Controller, cfg: PolicyGradientConfig, generator: torch.Generator) -> None:
        self.controller, self.cfg, self.generator = controller, cfg, generator
        self.optimizer = torch.optim.Adam(controller.parameters(), lr=cfg.lr)

    def sample(self, images: torch.Tensor) -> Sample:
        """Masks for ``images`` (uint8 NHWC or NCHW), sampled from the bounded probabilities on the
        controller's device (the draw itself on the CPU, from ``generator``: the same masks on any device)."""
        device = next(self.controller.parameters()).device
        logits = self.controller(images.to(device))
        probs = bounded_probs(logits, self.cfg.alpha)
        actions = torch.bernoulli(probs.detach().cpu(), generator=self.generator).to(device)
        return Sample(logits, probs, actions)

    def update(self, s: Sample, rewards: np.ndarray, baseline: np.ndarray) -> dict[str, float]:
        """One policy-gradient step; returns entropy, loss, grad_norm and logit_rms."""
        cfg = self.cfg
        advantage = torch.as_tensor(np.asarray(rewards) - np.asarray(baseline), dtype=torch.float32,
                                    device=s.probs.device)
        loss, ent = reinforce_loss(s.probs, s.actions, advantage, cfg.entropy_coef)
        if cfg.logit_penalty:
            loss = loss + cfg.logit_penalty * s.logits.pow(2).flatten(1).sum(1).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.controller.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        return {"entropy": ent.item(), "loss": loss.item(), "grad_norm": float(grad_norm),
                "logit_rms": s.logits.detach().pow(2).mean().sqrt().item()}


def step_stats(rewards: np.ndarray, baseline: np.ndarray, info: dict, masks: np.ndarray) -> dict[str, float]:
    """Batch means of what every controller update logs: rewards, accuracy (fraction), LUT latency
    of the cells (ms), R_A, ops per cell and the share of empty cells."""
    return {
        "reward": float(np.mean(rewards)),
        "baseline_reward": float(np.mean(baseline)),
        "accuracy": float(np.mean(info["correct"])),
        "latency_ms": float(np.mean(info["latency_ms"])),
        "reward_arch": float(np.mean(info["reward_arch"])),
        "ops_per_cell": float(masks.sum(-1).mean()),
        "empty_cell_share": float((masks.sum(-1) == 0).mean()),
    }
