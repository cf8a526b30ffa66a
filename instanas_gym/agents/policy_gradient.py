"""The REINFORCE update, once for every action view: what a policy samples, how each sample is
rewarded against a baseline on the same image, and one Adam step.

Per update, on a batch of B images, with the policy's behaviour distribution pi':

* **masks** (the paper's controller, :class:`MaskLearner`): p = sigmoid(logits) (17 x 5), bounded
  p' = alpha p + (1 - alpha)(1 - p) (the encouragement alpha: every bit stays in [1 - alpha, alpha]);
  one mask a ~ Bernoulli(p') per image; baseline: the reward of the greedy mask [p' >= 0.5] on the
  same image (self-critical);
* **arms** (one of a family's K architectures, :class:`ArmLearner`): pi' = (1 - mix) softmax(logits)
  + mix / K (the encouragement generalised: every arm keeps at least mix / K); S arms per image;
  baseline: with S >= 2 the leave-one-out mean of the image's other S - 1 rewards, with S = 1 the
  greedy arm's reward;
* **cascade** (the next architecture or STOP, :class:`CascadeLearner`): per step pi' mixes the
  uniform over the valid actions in as for arms; S whole cascades per image, run side by side on the
  same image; log pi'(a) summed over each cascade's steps, baseline the leave-one-out mean of the
  image's other cascades' returns (S = 1: the batch's mean return).

Then loss = -mean(A log pi'(a)) - entropy_coef H(pi') (masks: + logit_penalty mean(sum logit^2)),
A = R(a) - baseline; Adam, gradients clipped to ``max_grad_norm``.

A learner's :meth:`~MaskLearner.learn` takes a batch of images and two functions of actions, both
returning the env's reward terms for the batch's images: ``evaluate`` (what an action would earn,
nothing advances) and ``step`` (the action taken). The REINFORCE agent passes the vector env's
``evaluate_current`` and ``step``, the search its bandit's ``evaluate`` for both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from instanas_gym.agents.config import PolicyGradientConfig as PolicyGradientConfig  # its settings, re-exported
from instanas_gym.agents.controller import bounded_probs, greedy_masks
from instanas_gym.utils.checks import check_int

Rewarded = Callable[[np.ndarray], dict[str, Any]]
"""Actions (B, ...) -> the env's reward terms for the batch's images (``reward`` and every info)."""


class _Learner:
    """A policy network, its Adam optimizer and the clipped step every update ends with."""

    #: The entropy weight when ``PolicyGradientConfig.entropy_coef`` is None.
    default_entropy = 0.8

    def __init__(self, network: torch.nn.Module, cfg: PolicyGradientConfig, generator: torch.Generator) -> None:
        self.network, self.cfg, self.generator = network, cfg, generator
        self.entropy_coef = cfg.entropy_weight(self.default_entropy)
        self.optimizer = torch.optim.Adam(network.parameters(), lr=cfg.lr)

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def _step(self, loss: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        return float(grad_norm)


def batch_stats(rewards: np.ndarray, baseline: np.ndarray, info: dict[str, Any], masks: np.ndarray) -> dict[str, float]:
    """Batch means every update logs: rewards, accuracy (fraction), LUT latency of the cells and of
    the whole network (ms), R_A, ops per cell and the share of empty cells of the masks run."""
    return {
        "reward": float(np.mean(rewards)),
        "baseline_reward": float(np.mean(baseline)),
        "accuracy": float(np.mean(info["correct"])),
        "latency_ms": float(np.mean(info["latency_ms"])),
        "network_latency_ms": float(np.mean(info["network_latency_ms"])),
        "reward_arch": float(np.mean(info["reward_arch"])),
        "ops_per_cell": float(masks.sum(-1).mean()),
        "empty_cell_share": float((masks.sum(-1) == 0).mean()),
    }


# ---- masks: 85 Bernoulli bits ------------------------------------------------------------------------
def log_prob(probs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Sum over the 85 bits of log Bernoulli(actions | probs): shape (B,)."""
    eps = 1e-8
    lp = actions * torch.log(probs + eps) + (1 - actions) * torch.log(1 - probs + eps)
    return lp.flatten(1).sum(1)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean over batch and bits of the Bernoulli entropy (nats, at most ln 2)."""
    eps = 1e-8
    return -(probs * torch.log(probs + eps) + (1 - probs) * torch.log(1 - probs + eps)).mean()


@dataclass
class MaskSample:
    """A controller's decision on a batch: logits and bounded probabilities (B, 17, 5) and the sampled
    masks (a float 0/1 tensor, for the loss); as uint8 numpy, the sampled and the greedy masks."""

    logits: torch.Tensor
    probs: torch.Tensor
    actions: torch.Tensor

    @property
    def masks(self) -> np.ndarray:
        return self.actions.to(torch.uint8).cpu().numpy()

    @property
    def greedy(self) -> np.ndarray:
        return greedy_masks(self.probs)


class MaskLearner(_Learner):
    """The paper's controller (:class:`~instanas_gym.agents.controller.Controller`) and its update."""

    def sample(self, images: torch.Tensor) -> MaskSample:
        """Masks for ``images`` (uint8 NHWC or NCHW), drawn from the bounded probabilities (the draw on
        the CPU, from ``generator``: the same masks on any device)."""
        logits = self.network(images.to(self.device))
        probs = bounded_probs(logits, self.cfg.alpha)
        actions = torch.bernoulli(probs.detach().cpu(), generator=self.generator).to(self.device)
        return MaskSample(logits, probs, actions)

    def update(self, s: MaskSample, rewards: np.ndarray, baseline: np.ndarray) -> dict[str, float]:
        """One step on the sampled masks' rewards (B,) against ``baseline`` (B,)."""
        advantage = torch.as_tensor(np.asarray(rewards) - np.asarray(baseline), dtype=torch.float32, device=self.device)
        ent = entropy(s.probs)
        loss = -(advantage * log_prob(s.probs, s.actions)).mean() - self.entropy_coef * ent
        if self.cfg.logit_penalty:
            loss = loss + self.cfg.logit_penalty * s.logits.pow(2).flatten(1).sum(1).mean()
        grad_norm = self._step(loss)
        return {"entropy": ent.item(), "loss": loss.item(), "grad_norm": grad_norm,
                "logit_rms": s.logits.detach().pow(2).mean().sqrt().item()}

    def learn(self, images: torch.Tensor, evaluate: Rewarded, step: Rewarded) -> dict[str, float]:
        """Sample masks for ``images``, reward them (``step``) against the greedy ones (``evaluate``), update."""
        s = self.sample(images)
        baseline = evaluate(s.greedy)["reward"]
        out = step(s.masks)
        return batch_stats(out["reward"], baseline, out, s.masks) | self.update(s, out["reward"], baseline)


# ---- arms: one of K architectures ----------------------------------------------------------------------
@dataclass
class ArmSample:
    """A categorical policy's decision on a batch: logits (B, K), behaviour probabilities pi' (B, K),
    the drawn arms (B, S, on the CPU) and the greedy arms (B,)."""

    logits: torch.Tensor
    probs: torch.Tensor
    arms: torch.Tensor

    @property
    def greedy(self) -> np.ndarray:
        return self.logits.detach().argmax(1).cpu().numpy()


class ArmLearner(_Learner):
    """A network with K outputs (:class:`~instanas_gym.agents.router.Router`'s shape) over a family's arms."""

    default_entropy = 2.0

    def __init__(self, network: torch.nn.Module, k: int, cfg: PolicyGradientConfig, generator: torch.Generator,
                 masks: np.ndarray) -> None:
        super().__init__(network, cfg, generator)
        self.k, self.masks = check_int("k", k), masks

    def sample(self, images: torch.Tensor) -> ArmSample:
        """``samples`` arms per image of ``images``, drawn from pi' (the draw on the CPU, from ``generator``)."""
        logits = self.network(images.to(self.device))
        probs = (1 - self.cfg.mix) * logits.softmax(1) + self.cfg.mix / self.k
        arms = torch.multinomial(probs.detach().cpu(), self.cfg.samples, replacement=True, generator=self.generator)
        return ArmSample(logits, probs, arms)

    def update(self, s: ArmSample, rewards: np.ndarray, baseline: np.ndarray | None = None) -> dict[str, float]:
        """One step on rewards (B, S) of ``s.arms``; ``baseline`` (B,) is needed when S = 1."""
        r = torch.as_tensor(np.asarray(rewards, dtype=np.float64), dtype=torch.float32, device=self.device)
        if r.shape != s.arms.shape:
            raise ValueError(f"rewards must have shape {tuple(s.arms.shape)}, got {tuple(r.shape)}")
        n = r.shape[1]
        if n >= 2:
            b = (r.sum(1, keepdim=True) - r) / (n - 1)  # leave-one-out mean
        elif baseline is None:
            raise ValueError("with one sample per image, pass the greedy arm's rewards as the baseline")
        else:
            b = torch.as_tensor(np.asarray(baseline, dtype=np.float64), dtype=torch.float32, device=self.device)
            b = b.reshape(-1, 1)
        log_probs = torch.log(s.probs + 1e-8)
        ent = -(s.probs * log_probs).sum(1).mean()
        loss = -((r - b) * log_probs.gather(1, s.arms.to(self.device))).mean() - self.entropy_coef * ent
        grad_norm = self._step(loss)
        return {"entropy": ent.item(), "loss": loss.item(), "grad_norm": grad_norm,
                "greedy_prob": s.logits.detach().softmax(1).max(1).values.mean().item()}

    def learn(self, images: torch.Tensor, evaluate: Rewarded, step: Rewarded) -> dict[str, float]:
        """Sample S arms per image; the first is taken (``step``), the others only rewarded (``evaluate``)."""
        s = self.sample(images)
        arms = s.arms.numpy()
        others = [evaluate(arms[:, j])["reward"] for j in range(1, arms.shape[1])]
        baseline = evaluate(s.greedy)["reward"] if arms.shape[1] == 1 else None
        out = step(arms[:, 0])
        rewards = np.stack([out["reward"], *others], axis=1)
        shown = rewards.mean(1) if baseline is None else baseline  # the leave-one-out baselines average to it
        return (batch_stats(rewards, shown, out, self.masks[arms[:, 0]]) | self.update(s, rewards, baseline)
                | {"distinct_arms": float(len(np.unique(s.greedy)))})


# ---- cascade: the next architecture, or STOP ---------------------------------------------------------------
class CascadeLearner(_Learner):
    """A :class:`~instanas_gym.agents.cascade.CascadePolicy` and its update over whole cascades."""

    default_entropy = 0.5

    def learn_cascades(self, venv: Any, indices: np.ndarray) -> dict[str, float]:
        """Run ``samples`` cascades on each image of ``indices`` (B,) on ``venv`` (a cascade vector env of
        B x samples sub-environments), then one update on their returns."""
        from instanas_gym.agents.cascade import as_tensors

        s = self.cfg.samples
        n = len(indices) * s
        obs, _ = venv.reset(options={"index": np.repeat(indices, s)})
        done = np.zeros(n, dtype=bool)
        log_prob = torch.zeros(n, device=self.device)
        entropies, returns, final = [], np.zeros(n), {}
        while not done.all():
            logits = self.network(as_tensors(obs, self.device))
            valid = torch.isfinite(logits)
            probs = (1 - self.cfg.mix) * logits.softmax(1) + self.cfg.mix * valid / valid.sum(1, keepdim=True)
            actions = torch.multinomial(probs.detach().cpu(), 1, generator=self.generator).reshape(-1)
            alive = torch.as_tensor(~done, device=self.device)
            chosen = probs.gather(1, actions.to(self.device).reshape(-1, 1)).reshape(-1)
            log_prob = log_prob + torch.where(alive, torch.log(chosen + 1e-8), torch.zeros_like(chosen))
            ent = -(probs * torch.log(probs + 1e-8)).sum(1)
            entropies.append(ent[alive].mean())
            acts = actions.numpy()
            acts = np.where(done, np.where(obs["stage"] == 0, 0, self.network.k), acts)  # ended: ignored
            obs, rewards, ended, _, info = venv.step(acts)
            new = ended & ~done
            if new.any():
                returns[new] = rewards[new]
                for key in ("correct", "network_latency_ms", "stages", "reward_arch"):
                    final.setdefault(key, np.zeros(n))[new] = info["final_info"][key][new]
            done |= ended
        r = torch.as_tensor(returns.reshape(-1, s), dtype=torch.float32, device=self.device)
        b = (r.sum(1, keepdim=True) - r) / max(s - 1, 1) if s >= 2 else r.mean()
        ent = torch.stack(entropies).mean()
        loss = -((r - b).reshape(-1) * log_prob).mean() - self.entropy_coef * ent
        grad_norm = self._step(loss)
        return {"reward": float(returns.mean()), "accuracy": float(final["correct"].mean()),
                "network_latency_ms": float(final["network_latency_ms"].mean()),
                "stages": float(final["stages"].mean()), "reward_arch": float(final["reward_arch"].mean()),
                "entropy": ent.item(), "loss": loss.item(), "grad_norm": grad_norm}
