"""REINFORCE for InstaNAS, as in the paper: encouragement bound, self-critical baseline, entropy bonus.

Per update, on a batch of images from the native vector env:

1. p = sigmoid(controller(images)), bounded: p' = alpha * p + (1 - alpha) * (1 - p)   (17 x 5 each)
2. sample masks a ~ Bernoulli(p'); the greedy masks g = [p' >= 0.5] are the baseline
3. advantage A = R(a) - R(g), both on the same images (the env evaluates g without stepping)
4. loss = -mean_batch(A * sum_bits log p'(a)) - entropy_coef * mean_bits H(p'); Adam, clipped grads

The latency upper bound UB anneals linearly over the run from 0.7 x all-ops to 0.5 x MobileNetV2
latency (``anneal_upper``), as in the paper's search.
"""

from __future__ import annotations

import csv
import importlib.util
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

import instanas_gym  # noqa: F401  (registers the environments)
from instanas_gym.checkpoint import atomic_save

from .controller import Controller, bounded_probs, greedy_masks

CONTROLLER_FORMAT = "instanas-controller-v1"


@dataclass
class ReinforceConfig:
    """Arguments of :func:`train_reinforce`; ``examples/train_reinforce.py`` exposes each as a flag."""

    env_id: str = "InstaNAS-FashionMNIST-v0"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    total_steps: int = 32_000  # env steps = images seen
    batch_size: int = 32  # images per update (= sub-environments)
    lr: float = 1e-3
    alpha: float = 0.8
    entropy_coef: float = 0.8
    max_grad_norm: float = 5.0
    logit_penalty: float = 0.0  # L2 on the controller's logits (0: the paper's loss)
    anneal_upper: bool = True
    widths: tuple[int, ...] = (16, 32, 64)
    controller_input: int | None = None  # resize images to this side for the controller
    seed: int = 0
    threads: int = 2
    out: str = "runs/reinforce"
    log_every: int = 10  # updates between CSV rows


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


def update_controller(
    controller: Controller,
    optimizer: torch.optim.Optimizer,
    logits: torch.Tensor,
    probs: torch.Tensor,
    actions: torch.Tensor,
    advantage: torch.Tensor,
    entropy_coef: float,
    max_grad_norm: float,
    logit_penalty: float = 0.0,
) -> dict[str, float]:
    """One policy-gradient step on :func:`reinforce_loss` plus ``logit_penalty`` x (sum over the 85
    bits of logit^2, batch mean): the entropy bonus cannot pull a saturated sigmoid back (its gradient
    vanishes there), an L2 on the logits can. Returns entropy, loss, grad_norm and logit_rms."""
    loss, ent = reinforce_loss(probs, actions, advantage, entropy_coef)
    if logit_penalty:
        loss = loss + logit_penalty * logits.pow(2).flatten(1).sum(1).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(controller.parameters(), max_grad_norm)
    optimizer.step()
    return {"entropy": ent.item(), "loss": loss.item(), "grad_norm": float(grad_norm),
            "logit_rms": logits.detach().pow(2).mean().sqrt().item()}


def step_stats(rewards: np.ndarray, baseline: np.ndarray, info: dict[str, Any], masks: np.ndarray) -> dict[str, float]:
    """Batch means of what every update logs: rewards, accuracy, LUT latency (ms), R_A, mask shape."""
    return {
        "reward": float(np.mean(rewards)),
        "baseline_reward": float(np.mean(baseline)),
        "accuracy": float(np.mean(info["correct"])),
        "latency_ms": float(np.mean(info["latency_ms"])),
        "reward_arch": float(np.mean(info["reward_arch"])),
        "ops_per_cell": float(masks.sum(-1).mean()),
        "empty_cell_share": float((masks.sum(-1) == 0).mean()),
    }


def save_controller(controller: Controller, path: str | Path, **extra: Any) -> None:
    atomic_save({"format": CONTROLLER_FORMAT, "config": controller.config, "state_dict": controller.state_dict(), **extra}, path)


def load_controller(path: str | Path) -> tuple[Controller, dict[str, Any]]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt.get("format") != CONTROLLER_FORMAT:
        raise ValueError(f"{path} is not an instanas-gym controller ({CONTROLLER_FORMAT})")
    controller = Controller(**ckpt["config"])
    controller.load_state_dict(ckpt["state_dict"])
    return controller.eval(), ckpt


class _Logger:
    """CSV rows (and TensorBoard scalars when tensorboard is installed) in ``out``."""

    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "log.csv"
        self._file = self.path.open("w", newline="")
        self._writer: csv.DictWriter | None = None
        self._tb = None
        if importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(out / "tb"))

    def write(self, row: dict[str, float]) -> None:
        if self._writer is None:
            self._writer = csv.DictWriter(self._file, fieldnames=list(row))
            self._writer.writeheader()
        self._writer.writerow(row)
        self._file.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k != "env_steps":
                    self._tb.add_scalar(k, v, row["env_steps"])

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def train_reinforce(cfg: ReinforceConfig, console: Console | None = None) -> tuple[Controller, list[dict[str, float]]]:
    """Train a controller with REINFORCE; returns it and the logged rows (also in ``out/log.csv``)."""
    console = console or Console()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    venv = gym.make_vec(cfg.env_id, num_envs=cfg.batch_size, vectorization_mode="vector_entry_point", **cfg.env_kwargs)
    env = venv.unwrapped
    reward = env.bandit.reward
    obs, _ = venv.reset(seed=cfg.seed)
    controller = Controller(obs.shape[-1], cfg.widths, input_size=cfg.controller_input)
    optimizer = torch.optim.Adam(controller.parameters(), lr=cfg.lr)
    updates = max(1, cfg.total_steps // cfg.batch_size)
    out = Path(cfg.out)
    logger = _Logger(out)
    history: list[dict[str, float]] = []
    window: list[dict[str, float]] = []
    start = time.perf_counter()
    progress = Progress(
        TextColumn("[bold]REINFORCE"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console,
    )
    with progress:
        task = progress.add_task("reinforce", total=updates, stats="")
        for update in range(updates):
            if cfg.anneal_upper:
                reward.anneal(update / max(1, updates - 1))
            logits = controller(torch.from_numpy(obs))
            probs = bounded_probs(logits, cfg.alpha)
            actions = torch.bernoulli(probs.detach(), generator=gen)
            baseline = env.evaluate_current(greedy_masks(probs))["reward"]
            obs, rewards, _, _, info = venv.step(actions.to(torch.uint8).numpy())
            advantage = torch.as_tensor(rewards - baseline, dtype=torch.float32)
            learned = update_controller(controller, optimizer, logits, probs, actions, advantage,
                                        cfg.entropy_coef, cfg.max_grad_norm, cfg.logit_penalty)
            window.append(step_stats(rewards, baseline, info["final_info"], actions.numpy()) | learned)
            if (update + 1) % cfg.log_every == 0 or update == updates - 1:
                row = {"env_steps": (update + 1) * cfg.batch_size, "update": update + 1}
                row |= {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                row |= {"upper_ms": reward.upper_ms, "lower_ms": reward.lower_ms,
                        "wall_s": time.perf_counter() - start}
                logger.write(row)
                history.append(row)
                window = []
                progress.update(task, stats=(
                    f"R {row['reward']:+.2f} acc {row['accuracy']:.3f} L {row['latency_ms']:.2f}ms "
                    f"R_A {row['reward_arch']:.2f} ops/cell {row['ops_per_cell']:.2f} UB {row['upper_ms']:.2f}ms"
                ))
            progress.update(task, advance=1)
    logger.close()
    save_controller(controller, out / "controller.pt", reinforce_config=asdict(cfg),
                    bounds={"lower_ms": reward.lower_ms, "upper_ms": reward.upper_ms})
    return controller.eval(), history
