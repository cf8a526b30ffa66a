"""The InstaNAS search after one-shot pre-training: phases 2 and 3 of the paper.

The controller has one of two action views (``view``): the paper's, 85 Bernoulli bits per image,
or one of the K architectures of a family per image (categorical); either way it learns by the
REINFORCE update of :mod:`instanas_gym.agents.policy_gradient`, *samples* masks (its behaviour
policy) and has *greedy* masks (what the deployed model runs); the steps below use only that.

Phase 2 alternates, for ``epochs`` epochs:

1. **controller**: REINFORCE against the current supernet (frozen, eval mode, live: it changes, so
   there is no lookup mode) on training images, while the reward's latency upper bound anneals
   linearly from ``upper_start_frac`` x all-ops to ``upper_end_frac`` x MobileNetV2-path latency
   over the whole phase (``reward.anneal_step``);
2. **supernet**: SGD on training images (augmented), each under a mask the controller samples for it
   (Bernoulli of the bounded probabilities; family: one arm drawn from pi'), so the supernet learns
   the paths it will run.

Phase 3, **finetune**: the controller is fixed; the supernet trains under the controller's greedy
masks (bounded p >= 0.5; family: the arm of the largest logit), the masks the deployed model uses,
with a cosine learning rate.

Everything lives in one checkpoint, ``out/search.pt`` (both networks, both optimizers, the stage and
step, every RNG, the history, the family's masks), written atomically every ``checkpoint_every``
steps, at each stage's end and on Ctrl-C: ``resume=True`` continues a killed search with nothing
lost. At the end the searched supernet (``out/supernet.pt``, loadable by the environments) and the
controller (``out/policy.pt``, a policy file, :func:`~instanas_gym.agents.policy.load_policy`) are
written beside it, with ``out/controller_log.csv`` and ``out/supernet_log.csv``;
:func:`load_search` reads them back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console

from instanas_gym.agents.config import SearchConfig
from instanas_gym.agents.policy import load_policy
from instanas_gym.agents.router_file import resolve_family
from instanas_gym.agents.search_controllers import BitsController, ControllerKind, FamilyController
from instanas_gym.envs.bandit import InstaNASBandit
from instanas_gym.model.batchnorm import freeze_bn
from instanas_gym.model.checkpoint import load_supernet, supernet_state
from instanas_gym.space.data import augment
from instanas_gym.utils.devices import autocast, resolve_device, to_device
from instanas_gym.utils.files import FileFormatError, atomic_save, load_torch
from instanas_gym.utils.paths import default_supernet
from instanas_gym.utils.run import flat_settings
from instanas_gym.utils.runlog import progress_bar, window_means, write_csv

SEARCH_FORMAT = "instanas-search-v1"
#: Settings a resumed search may change (the folder may have moved): every other one must match.
RESUMABLE_CHANGES = ("resume", "run.out", "run.device", "run.threads")


def stages(cfg: SearchConfig) -> list[tuple[str, int]]:
    """The search as (kind, epoch) stages: controller/supernet per epoch, then finetune."""
    out = [(kind, e) for e in range(cfg.epochs) for kind in ("controller", "supernet")]
    return out + ([("finetune", cfg.epochs)] if cfg.finetune_images > 0 else [])


def stage_steps(cfg: SearchConfig, kind: str) -> int:
    """Optimisation steps of one stage of ``kind``."""
    if kind == "controller":
        return math.ceil(cfg.controller_images / cfg.batch_size)
    images = cfg.supernet_images if kind == "supernet" else cfg.finetune_images
    return math.ceil(images / cfg.supernet_batch_size)


class _Search:
    """The state of one search and its steps; :func:`search` drives it."""

    def __init__(self, cfg: SearchConfig) -> None:
        self.cfg = cfg
        torch.set_num_threads(cfg.run.threads)
        torch.manual_seed(cfg.run.seed)
        net_path = Path(cfg.env.supernet) if cfg.env.supernet else default_supernet(cfg.env.dataset)
        self.device = resolve_device(cfg.run.device)
        self.model, _ = load_supernet(net_path)
        self.memory_format = torch.channels_last if cfg.run.channels_last else torch.contiguous_format
        self.model.to(self.device, memory_format=self.memory_format)
        env = cfg.env
        self.bandit = InstaNASBandit(env.dataset, env.train_split, env.data.root, env.data.download,
                                     supernet=self.model, latency_table=env.latency_table, reward=env.reward,
                                     latency_backend=env.latency_backend, device=str(self.device),
                                     precision=cfg.run.precision)
        self.data = self.bandit.data
        self.images, self.labels = self.data.tensors()
        self.gen = torch.Generator().manual_seed(cfg.run.seed)
        channels = self.data.spec.image_shape[2]
        self.family = resolve_family(env.family, env.dataset)[0] if cfg.view == "family" else None
        self.kind: ControllerKind = (
            BitsController(cfg, channels, self.device, self.gen) if self.family is None
            else FamilyController(cfg, channels, self.device, self.gen, self.family))
        self.controller = self.kind.network
        self.supernet_opt = torch.optim.SGD(
            self.model.parameters(), lr=cfg.supernet_lr, momentum=cfg.momentum,
            weight_decay=cfg.weight_decay, nesterov=True,
        )
        self.rng = np.random.default_rng(cfg.run.seed)
        self.stage, self.step = 0, 0
        self.history: dict[str, list[dict[str, float]]] = {"controller": [], "supernet": []}
        self.window: list[dict[str, float]] = []
        self.out = Path(cfg.run.out or "runs/search")
        self.path = self.out / "search.pt"
        self.wall = 0.0

    # ---- checkpoint ------------------------------------------------------------------------------
    def save(self) -> None:
        state = {
            "format": SEARCH_FORMAT,
            "config": asdict(self.cfg),
            "supernet": supernet_state(self.model, self.cfg.env.dataset),
            "controller": {"config": self.controller.config, "state_dict": self.controller.state_dict()},
            "controller_opt": self.kind.optimizer.state_dict(),
            "family": None if self.family is None else torch.from_numpy(self.family.masks.copy()),
            "supernet_opt": self.supernet_opt.state_dict(),
            "stage": self.stage, "step": self.step, "window": self.window,
            "bounds": {"lower_ms": self.bandit.reward.lower_ms, "upper_ms": self.bandit.reward.upper_ms},
            "rng": {"numpy": self.rng.bit_generator.state, "torch_gen": self.gen.get_state(),
                    "torch": torch.get_rng_state()},
            "history": self.history, "wall_s": self.wall,
        }
        atomic_save(state, self.path)
        for kind, rows in self.history.items():
            write_csv(rows, self.out / f"{kind}_log.csv")

    def load(self, state: dict[str, Any]) -> None:
        """Continue from ``state``, a checkpoint :func:`resume_state` read and checked."""
        saved_family = state.get("family")  # the same file name may hold another family now
        if saved_family is not None and not np.array_equal(saved_family.numpy(), self.family.masks):
            raise ValueError(f"{self.path} was written with another family than {self.cfg.env.family} holds now; "
                             f"resume with the same family or use another --run.out")
        self.model.load_state_dict(state["supernet"]["model"])
        self.controller.load_state_dict(state["controller"]["state_dict"])
        self.kind.optimizer.load_state_dict(state["controller_opt"])
        self.supernet_opt.load_state_dict(state["supernet_opt"])
        self.stage, self.step, self.window = state["stage"], state["step"], state["window"]
        self.bandit.reward.set_bounds(**state["bounds"])
        self.rng.bit_generator.state = state["rng"]["numpy"]
        self.gen.set_state(state["rng"]["torch_gen"])
        torch.set_rng_state(state["rng"]["torch"])
        self.history, self.wall = state["history"], state["wall_s"]

    # ---- one step of each kind -------------------------------------------------------------------
    def controller_step(self, step: int, steps: int) -> dict[str, float]:
        """One REINFORCE update on a batch of training images; UB set for ``step`` of phase 2's ``steps``."""
        reward = self.bandit.reward
        reward.anneal_step(step, steps)
        self.model.eval()
        self.controller.train()
        idx = self.rng.integers(len(self.labels), size=self.cfg.batch_size)
        return self.kind.learn(self.bandit, idx, self.images[torch.from_numpy(idx)]) | {"upper_ms": reward.upper_ms}

    def supernet_step(self, lr: float, greedy: bool) -> dict[str, float]:
        """One SGD step of the supernet on augmented training images under the controller's masks
        (sampled, or greedy in phase 3)."""
        cfg = self.cfg
        self.controller.eval()
        self.model.train()
        if cfg.bn_stats == "frozen":
            freeze_bn(self.model)
        idx = torch.from_numpy(self.rng.integers(len(self.labels), size=cfg.supernet_batch_size))
        x = to_device(augment(self.images[idx], self.data.spec, self.gen), self.device)
        y = to_device(self.labels[idx], self.device)
        masks = self.kind.masks(x, greedy)
        for group in self.supernet_opt.param_groups:
            group["lr"] = lr
        with autocast(self.device, cfg.run.precision):
            logits = self.model(x.contiguous(memory_format=self.memory_format), masks)
            loss = F.cross_entropy(logits.float(), y)
        self.supernet_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.supernet_opt.step()
        m = masks.numpy()
        return {
            "loss": loss.item(), "accuracy": (logits.argmax(1) == y).float().mean().item(),
            "latency_ms": float(np.mean(self.bandit.table.cells_ms(m))), "ops_per_cell": float(m.sum(-1).mean()),
            "lr": lr,
        }

    def run_step(self, kind: str, epoch: int, steps: int) -> dict[str, float]:
        cfg = self.cfg
        if kind == "controller":
            return self.controller_step(epoch * steps + self.step, cfg.epochs * steps)
        if kind == "supernet":
            return self.supernet_step(cfg.supernet_lr, greedy=False)
        return self.supernet_step(0.5 * cfg.finetune_lr * (1 + math.cos(math.pi * self.step / steps)), greedy=True)


def resume_state(cfg: SearchConfig, path: Path) -> dict[str, Any]:
    """The search checkpoint at ``path``, refused (a ValueError naming the settings) when it was written
    with settings that change the search."""
    hint = "resume needs the search.pt a search wrote; start a new search in another --run.out"
    keys = ("config", "supernet", "controller", "controller_opt", "supernet_opt", "stage", "step", "window",
            "bounds", "rng", "history", "wall_s")
    state = load_torch(path, "instanas-gym search checkpoint", SEARCH_FORMAT, keys, hint)
    if not isinstance(state["config"], dict):
        raise FileFormatError(f"{path} is a damaged search checkpoint (config is not a dict); {hint}")
    defaults = flat_settings(asdict(SearchConfig()))  # settings older files lack
    saved = flat_settings(state["config"])
    changed = {k for k, v in flat_settings(asdict(cfg)).items()
               if k not in RESUMABLE_CHANGES and saved.get(k, defaults.get(k)) != v}
    if changed:
        raise ValueError(f"{path} was written with other settings ({sorted(changed)}); "
                         f"resume with the same ones or use another --run.out")
    return state


def search(
    cfg: SearchConfig, console: Console | None = None, on_step: Callable[[int], None] | None = None
) -> Path:
    """Run (or, with ``cfg.resume``, continue) phases 2 and 3; returns the output folder.

    ``on_step(global_step)`` is called after every step (tests use it to interrupt a search).
    """
    console = console or Console()
    path = Path(cfg.run.out or "runs/search") / "search.pt"
    state = resume_state(cfg, path) if cfg.resume and path.is_file() else None  # before any data loads
    s = _Search(cfg)
    plan = stages(cfg)
    if state is not None:
        s.load(state)
        console.print(f"resumed {s.path} at stage {s.stage + 1}/{len(plan)}, step {s.step}")
    sizes = [stage_steps(cfg, kind) for kind, _ in plan]
    progress = progress_bar(console)
    try:
        with progress:
            task = progress.add_task("search", total=sum(sizes), completed=sum(sizes[: s.stage]) + s.step, stats="")
            while s.stage < len(plan):
                _run_stage(s, plan[s.stage], sizes, progress, task, on_step)
    except KeyboardInterrupt:
        s.save()
        console.print(f"interrupted: search saved to {s.path}; rerun with resume (--resume) to continue")
        raise
    atomic_save(supernet_state(s.model.eval(), cfg.env.dataset, search_config=asdict(cfg)), s.out / "supernet.pt")
    s.kind.save(s.out / "policy.pt", s.bandit.table, search_config=asdict(cfg),
                bounds={"lower_ms": s.bandit.reward.lower_ms, "upper_ms": s.bandit.reward.upper_ms})
    return s.out


def _run_stage(s: _Search, stage: tuple[str, int], sizes: list[int], progress: Any, task: Any,
               on_step: Callable[[int], None] | None) -> None:
    """The rest of the current stage, from ``s.step``: steps, log rows, checkpoints; then the next stage."""
    cfg, (kind, epoch), steps = s.cfg, stage, sizes[s.stage]
    label = f"{kind} {epoch + 1}/{cfg.epochs}" if kind != "finetune" else "finetune"
    history = s.history["controller" if kind == "controller" else "supernet"]
    progress.update(task, description=label)
    while s.step < steps:
        t0 = time.perf_counter()
        s.window.append(s.run_step(kind, epoch, steps))
        s.step += 1
        s.wall += time.perf_counter() - t0
        done = sum(sizes[: s.stage]) + s.step
        if s.step % cfg.log_every == 0 or s.step == steps:
            row = {"stage": kind, "epoch": epoch + 1, "step": s.step, "global_step": done}
            history.append(row | window_means(s.window) | {"wall_s": s.wall})
            s.window = []
            progress.update(task, stats=_stats_text(history[-1]))
        progress.update(task, completed=done)
        if on_step is not None:
            on_step(done)
        if s.step % cfg.checkpoint_every == 0 and s.step < steps:
            s.save()
    progress.console.log(f"{label}: {_stats_text(history[-1])}")
    s.stage, s.step = s.stage + 1, 0
    s.save()


def _stats_text(row: dict[str, Any]) -> str:
    if row["stage"] == "controller":
        return (f"R {row['reward']:+.2f} acc {row['accuracy']:.3f} L {row['latency_ms']:.2f}ms "
                f"R_A {row['reward_arch']:.2f} ops/cell {row['ops_per_cell']:.2f} UB {row['upper_ms']:.2f}ms")
    return (f"loss {row['loss']:.3f} acc {row['accuracy']:.3f} L {row['latency_ms']:.2f}ms "
            f"ops/cell {row['ops_per_cell']:.2f} lr {row['lr']:.4f}")


def load_search(folder: str | Path) -> tuple[Any, torch.nn.Module, dict[str, Any]]:
    """The searched supernet (eval mode), controller and search config of a finished search folder.

    The controller maps uint8 images to mask logits (B, 17, 5) (greedy masks: logit >= 0): the
    :class:`~instanas_gym.agents.controller.Controller`, or for a search over a family its network
    with the greedy arm as a :class:`~instanas_gym.agents.router.RoutedController` (eval mode)."""
    folder = Path(folder)
    for name in ("supernet.pt", "policy.pt"):
        if not (folder / name).is_file():
            where = "the folder itself is missing" if not folder.is_dir() else f"{name} is missing"
            raise FileNotFoundError(f"{folder} is not a finished search ({where}): `instanas-gym search --run.out "
                                    f"{folder}` writes supernet.pt and policy.pt there")
    model, ckpt = load_supernet(folder / "supernet.pt")
    policy = load_policy(folder / "policy.pt")
    return model, policy.controller(), ckpt.get("search_config") or policy.meta.get("search_config", {})
