"""REINFORCE over a family of K architectures, top to bottom: a categorical controller.

The paper's controller samples 85 independent bits, and collapses onto one to three masks. Here it
chooses one of K fixed architectures (an :class:`~instanas_gym.space.family.ArchitectureFamily`, e.g. the
family a router was fitted with) per image, on the env's training split, and is judged on the test
split against the static frontier (:mod:`.instance_aware`). Per update, on a batch of B images:

1. pi = softmax(logits); the behaviour policy mixes in the uniform: pi' = (1 - mix) pi + mix / K
   (the paper's encouragement alpha, generalised: every arm keeps at least mix / K);
2. S arms per image drawn from pi' (with replacement), each rewarded by the env on that image;
3. baseline: with S >= 2, each sample's leave-one-out mean of the image's other S - 1 rewards; with
   S = 1, the reward of the greedy arm (argmax pi) on the same image (self-critical, as the paper);
4. loss = -mean(A * log pi'(a)) - entropy_coef * H(pi'); Adam, gradients clipped.

Optionally the network is first warm-started by supervision (``warm_start_images`` > 0): it learns
to predict each arm's correctness on that many training images
(:func:`~instanas_gym.agents.router.train_router`), so the policy starts at the arms most likely
right, before REINFORCE trades accuracy for latency.

Defaults, measured on the bundled family (``benchmarks/bench_family_reinforce.py``): the entropy
bonus is 2.0 (rewards are +-10). With a bonus of 0.01 and the bound annealed from the paper's 0.7 x
all ops, the policy settled on one arm within a few thousand images, while the bound still paid
the slow arms well (its softmax saturated: the other arms' log-probability gradients vanish), and
stayed there as the bound fell: the MobileNetV2 path for most test images, far below the
supervised router's reward. With 2.0 it keeps two or three arms and earns the router's reward. The
bound does not anneal by default (``RewardConfig(anneal=False)``): the policy learns under the
bounds it is judged by, which earned more than the annealed schedule at the tighter bound. UB ends
at :data:`UPPER_END_FRAC` x the MobileNetV2 path's cells.

The network is a :class:`~instanas_gym.agents.router.Router` (the controller's body, K outputs),
and the result is saved as a router file with price 0: its routing rule, argmax over arms of its
outputs, is then exactly the greedy policy, and everything that takes a router takes it
(``instanas-gym demo --controller``, :func:`~instanas_gym.agents.router.load_router`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from instanas_gym.agents.controller import ControllerConfig
from instanas_gym.agents.router import (
    Router,
    resolve_family,
    save_router,
    train_router,
)
from instanas_gym.envs.config import EnvConfig
from instanas_gym.envs.reward import RewardConfig
from instanas_gym.latency import LatencyTable
from instanas_gym.model.outcomes import score_architectures
from instanas_gym.space.data import ImageSet
from instanas_gym.space.family import ArchitectureFamily
from instanas_gym.utils.checks import check_int, check_number
from instanas_gym.utils.runlog import RunLogger, progress_bar

#: Where the default reward's UB sits, x the MobileNetV2 path's cells: R_A peaks halfway between
#: the fastest mask and UB, so the band pays the cheaper arms and the MobileNetV2 path.
UPPER_END_FRAC = 1.5


@dataclass(frozen=True)
class FamilyPGConfig:
    """Settings of the categorical REINFORCE update."""

    lr: float = 1e-3
    """Adam learning rate."""
    mix: float = 0.1
    """Share of the uniform policy in the behaviour policy (every arm keeps >= mix / K)."""
    entropy_coef: float = 2.0
    """Weight of the entropy bonus of pi' (nats; rewards are +-10)."""
    samples: int = 4
    """Arms drawn per image; >= 2 uses the leave-one-out baseline, 1 the greedy arm's reward."""
    max_grad_norm: float = 5.0
    """Gradient clipping (L2 norm)."""

    def __post_init__(self) -> None:
        check_number("lr", self.lr, low=0, low_open=True)
        check_number("mix", self.mix, low=0, high=1)
        check_number("entropy_coef", self.entropy_coef, low=0)
        check_number("max_grad_norm", self.max_grad_norm, low=0, low_open=True)
        check_int("samples", self.samples)


@dataclass
class ArmSample:
    """The policy's decision on a batch: logits (B, K), behaviour probabilities pi' (B, K), the
    drawn arms (B, S, on the CPU) and the greedy arms (B,)."""

    logits: torch.Tensor
    probs: torch.Tensor
    arms: torch.Tensor

    @property
    def greedy(self) -> np.ndarray:
        return self.logits.detach().argmax(1).cpu().numpy()


class FamilyReinforce:
    """A K-output network, its Adam optimizer and the update of the module docstring.

    Use: ``s = pg.sample(images)``; reward ``s.arms`` (B, S) (and, with S = 1, ``s.greedy``) on the
    same images; ``stats = pg.update(s, rewards, baseline)``.
    """

    def __init__(self, policy: torch.nn.Module, k: int, cfg: FamilyPGConfig, generator: torch.Generator) -> None:
        self.policy, self.k, self.cfg, self.generator = policy, check_int("k", k), cfg, generator
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr)

    def sample(self, images: torch.Tensor) -> ArmSample:
        """``cfg.samples`` arms per image of ``images`` (as the network takes them), drawn from pi' on
        the network's device (the draw itself on the CPU, from ``generator``: the same arms on any device)."""
        logits = self.policy(images.to(next(self.policy.parameters()).device))
        probs = (1 - self.cfg.mix) * logits.softmax(1) + self.cfg.mix / self.k
        arms = torch.multinomial(probs.detach().cpu(), self.cfg.samples, replacement=True, generator=self.generator)
        return ArmSample(logits, probs, arms)

    def update(self, s: ArmSample, rewards: np.ndarray, baseline: np.ndarray | None = None) -> dict[str, float]:
        """One step on rewards (B, S) of ``s.arms``; ``baseline`` (B,) is needed when S = 1."""
        device = s.probs.device
        r = torch.as_tensor(np.asarray(rewards, dtype=np.float64), dtype=torch.float32, device=device)
        if r.shape != s.arms.shape:
            raise ValueError(f"rewards must have shape {tuple(s.arms.shape)}, got {tuple(r.shape)}")
        n = r.shape[1]
        if n >= 2:
            b = (r.sum(1, keepdim=True) - r) / (n - 1)  # leave-one-out mean
        elif baseline is None:
            raise ValueError("with one sample per image, pass the greedy arm's rewards as the baseline")
        else:
            b = torch.as_tensor(np.asarray(baseline, dtype=np.float64), dtype=torch.float32, device=device)
            b = b.reshape(-1, 1)
        log_probs = torch.log(s.probs + 1e-8)
        ent = -(s.probs * log_probs).sum(1).mean()
        loss = -((r - b) * log_probs.gather(1, s.arms.to(device))).mean() - self.cfg.entropy_coef * ent
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        return {"entropy": ent.item(), "loss": loss.item(), "grad_norm": float(grad_norm),
                "greedy_prob": s.logits.detach().softmax(1).max(1).values.mean().item()}


@dataclass(frozen=True)
class FamilyReinforceConfig:
    """Arguments of :func:`train_family_reinforce` (``instanas-gym train-family`` exposes each as a flag)."""

    env: EnvConfig = field(
        default_factory=lambda: EnvConfig(reward=RewardConfig(upper_end_frac=UPPER_END_FRAC, anneal=False)))
    """The environment it learns on (its training split) and is judged on (its test split); by default
    the reward's UB sits at ``UPPER_END_FRAC`` x the MobileNetV2 path's cells throughout."""
    family: str | None = None
    """Family file (``instanas_gym.space.family.save_family``) or router file whose family to use; None:
    the bundled family (bundled data set only)."""
    lookup: bool = True
    """Step the family view in lookup mode (each image's outcome under each arm computed once and
    stored beside the family file; same rewards as live, at table speed); else run the supernet live."""
    pg: FamilyPGConfig = field(default_factory=FamilyPGConfig)
    """The update."""
    controller: ControllerConfig = field(default_factory=lambda: ControllerConfig(widths=(8, 16, 32), input_size=14))
    """The network's body (the demo controller's 0.65-MMAC size by default)."""
    total_steps: int = 48_000
    """Training images seen (each rewarded ``pg.samples`` times)."""
    batch_size: int = 32
    """Images per update (= sub-environments)."""
    warm_start_images: int = 0
    """Training images of the supervised warm start (0: none)."""
    warm_start_epochs: int = 4
    anneal_upper: bool = True
    """Anneal the latency upper bound over the run, when the reward anneals (``env.reward.anneal``);
    else keep it where it starts."""
    seed: int = 0
    threads: int = 2
    """Torch intra-op threads."""
    judge_limit: int | None = None
    """Judge on the first N test images only (None: all)."""
    out: str = "runs/family_reinforce"
    """Folder of log.csv, controller.pt (a router file) and the judgement."""
    log_every: int = 10
    """Updates between log rows."""

    def __post_init__(self) -> None:
        for name in ("total_steps", "batch_size", "threads", "log_every", "warm_start_epochs"):
            check_int(name, getattr(self, name))
        check_int("warm_start_images", self.warm_start_images, minimum=0)
        check_int("judge_limit", self.judge_limit, optional=True)




def _describe(row: dict[str, Any]) -> str:
    return (f"R {row['reward']:+.2f} acc {row['accuracy']:.3f} L {row['latency_ms']:.3f}ms "
            f"H {row['entropy']:.2f} arms {row['distinct_arms']:.1f} UB {row['upper_ms']:.3f}ms")


def arm_correctness(bandit: Any, family: ArchitectureFamily, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` images of ``bandit``'s split (uint8 (n, H, W, C)) and whether each arm of
    ``family`` classifies each right (bool (K, n)): looked up where the bandit stores the arms'
    outcomes (lookup mode), else run by the supernet."""
    n = min(n, bandit.num_images)
    if getattr(bandit, "outcomes", None) is not None:  # lookup mode: already computed
        return bandit.data.images[:n], bandit.outcomes["correct"][:, :n]
    data = ImageSet(bandit.data.images[:n], bandit.data.labels[:n], bandit.data.spec, bandit.data.split,
                    bandit.data.source)
    return data.images, score_architectures(bandit.model, data, bandit.table, family.masks)[0]


def warm_start(router: Router, bandit: Any, family: ArchitectureFamily, n: int, epochs: int, seed: int) -> None:
    """Train ``router`` by supervision on the first ``n`` images of ``bandit``'s split to predict
    each arm's correctness (:func:`arm_correctness`, :func:`~instanas_gym.agents.router.train_router`)."""
    images, correct = arm_correctness(bandit, family, n)
    train_router(router, images, correct, epochs, seed=seed)


def train_family_reinforce(cfg: FamilyReinforceConfig, console: Console | None = None) -> tuple[Router, ArchitectureFamily, list[dict[str, Any]]]:
    """Train a categorical controller over a family with REINFORCE; returns it, the family and the
    logged rows (also in ``out/log.csv``); saves ``out/controller.pt`` (a router file, price 0)."""
    console = console or Console()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    family, source = resolve_family(cfg.family, cfg.env.dataset)
    venv = cfg.env.make_family_vec(cfg.batch_size, family, cfg.lookup, source=source)
    env = venv.unwrapped
    reward = env.bandit.reward
    obs, _ = venv.reset(seed=cfg.seed)
    router = Router(cfg.controller, obs.shape[-1], family.k)
    if cfg.warm_start_images:
        console.print(f"warm start: each arm's correctness on {cfg.warm_start_images} training images")
        warm_start(router, env.bandit, family, cfg.warm_start_images, cfg.warm_start_epochs, cfg.seed)
    router.train()
    pg = FamilyReinforce(router, family.k, cfg.pg, torch.Generator().manual_seed(cfg.seed))
    updates = max(1, cfg.total_steps // cfg.batch_size)
    start = time.perf_counter()
    progress = progress_bar(console)
    task = progress.add_task("REINFORCE (family)", total=updates, stats="")
    log = RunLogger(cfg.out, "log", "env_steps", _describe, progress, task)
    with progress:
        for update in range(updates):
            if cfg.anneal_upper:
                reward.anneal(update / max(1, updates - 1))
            s = pg.sample(torch.from_numpy(obs))
            arms = s.arms.numpy()
            others = [venv.evaluate_current_arms(arms[:, j])["reward"] for j in range(1, arms.shape[1])]
            baseline = venv.evaluate_current_arms(s.greedy)["reward"] if arms.shape[1] == 1 else None
            obs, first, _, _, info = venv.step(arms[:, 0])
            rewards = np.stack([first, *others], axis=1)
            step = info["final_info"]
            log.add({"reward": float(rewards.mean()), "accuracy": float(np.mean(step["correct"])),
                     "latency_ms": float(np.mean(step["network_latency_ms"])),
                     "distinct_arms": float(len(np.unique(s.greedy)))} | pg.update(s, rewards, baseline))
            if (update + 1) % cfg.log_every == 0 or update == updates - 1:
                log.flush(env_steps=(update + 1) * cfg.batch_size, update=update + 1, upper_ms=reward.upper_ms,
                          lower_ms=reward.lower_ms, wall_s=time.perf_counter() - start)
            progress.update(task, advance=1)
    log.close()
    router.eval()
    save_family_policy(router, Path(cfg.out) / "controller.pt", family, env.bandit.table,
                       family_reinforce_config=asdict(cfg), bounds={"lower_ms": reward.lower_ms, "upper_ms": reward.upper_ms})
    return router, family, log.history


def save_family_policy(
    router: Router, path: str | Path, family: ArchitectureFamily, table: LatencyTable, **meta: Any
) -> None:
    """``router``, a categorical policy over ``family``'s arms, as a router file at price 0 (its routing
    rule is then the greedy arm), with each arm's latency by ``table`` and the family's names;
    ``meta``: plain data kept beside (:func:`~instanas_gym.agents.router.save_router`)."""
    save_router(router, path, family.masks, family.network_ms(table), 0.0, family_names=list(family.names), **meta)


