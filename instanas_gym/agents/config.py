"""The agents' settings: the controller network (:class:`ControllerConfig`), the REINFORCE update
(:class:`PolicyGradientConfig`), the REINFORCE agent (:class:`ReinforceConfig` and the measured
defaults of each action view, :func:`preset`) and the search (:class:`SearchConfig`).

Light on purpose: the command line imports this module to parse its flags (each field's docstring is
its flag's help, one plain sentence), so it imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Literal

import tyro

from instanas_gym.envs.config import EnvConfig, JudgeConfig
from instanas_gym.envs.reward import RewardConfig
from instanas_gym.utils.checks import check_int, check_number
from instanas_gym.utils.run import RunConfig

if TYPE_CHECKING:
    from instanas_gym.agents.controller import Controller

View = Literal["masks", "family", "cascade"]
VIEWS = ("masks", "family", "cascade")


@dataclass(frozen=True)
class ControllerConfig:
    """The controller's shape (the paper's for 32 x 32 inputs: 16/32/64 channels, full size)."""

    widths: tuple[int, ...] = (16, 32, 64)
    """Channels of the network's stages, one number per stage."""
    input_size: int | None = None
    """Side in pixels the image is resized to first; unset, images keep their size."""

    def __post_init__(self) -> None:
        if not self.widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in self.widths):
            raise ValueError(f"controller.widths must be positive integers, got {self.widths!r}")
        if self.input_size is not None and (not isinstance(self.input_size, int) or self.input_size < 4):
            raise ValueError(f"controller.input_size must be an integer >= 4 (pixels), got {self.input_size!r}")

    def build(self, in_channels: int) -> Controller:
        """The controller network of this shape for images of ``in_channels`` channels."""
        from instanas_gym.agents.controller import Controller

        strides = (1, 2, 2, 2, 2, 2)[: len(self.widths)]
        return Controller(in_channels, self.widths, strides, input_size=self.input_size)


@dataclass(frozen=True)
class PolicyGradientConfig:
    """Settings of the REINFORCE update, every action view (the paper's defaults for masks)."""

    lr: float = 1e-3
    """Adam learning rate of the policy."""
    alpha: float = 0.8
    """Masks view: every keep probability stays in [1 - alpha, alpha] (the paper's encouragement)."""
    mix: float = 0.1
    """Family and cascade views: share of the uniform policy mixed in, so every action keeps some chance."""
    samples: int = 4
    """Family and cascade views: actions (cascades) drawn per image, compared with each other's rewards."""
    entropy_coef: float | None = None
    """Weight of the entropy bonus; unset, the view's own: 0.8 masks, 2.0 family, 0.5 cascade."""
    max_grad_norm: float = 5.0
    """Gradients are clipped to this L2 norm."""
    logit_penalty: float = 0.0
    """Masks view: weight of an L2 penalty on the logits, which pulls saturated probabilities back."""

    def __post_init__(self) -> None:
        check_number("pg.alpha", self.alpha, low=0.5, high=1, low_open=True)
        check_number("pg.mix", self.mix, low=0, high=1)
        check_int("pg.samples", self.samples)
        for name in ("lr", "max_grad_norm"):
            check_number(f"pg.{name}", getattr(self, name), low=0, low_open=True)
        check_number("pg.entropy_coef", self.entropy_coef, low=0, optional=True)
        check_number("pg.logit_penalty", self.logit_penalty, low=0)

    def entropy_weight(self, view_default: float) -> float:
        return view_default if self.entropy_coef is None else self.entropy_coef


@dataclass(frozen=True)
class ReinforceConfig:
    """Arguments of :func:`~instanas_gym.agents.reinforce.train_reinforce` (``instanas-gym
    train-reinforce VIEW`` takes each as a flag)."""

    view: Annotated[View, tyro.conf.Suppress] = "family"
    """What the policy chooses per image, "masks" (85 bits), "family" (one of K architectures) or
    "cascade" (architectures one after another until it stops): on the command line, the subcommand
    of train-reinforce."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """The environment the policy learns on (its training split) and is judged on (its test split)."""
    run: RunConfig = field(default_factory=lambda: RunConfig(out="runs/reinforce"))
    """Seed, threads, device and the output folder (log.csv, policy.pt and the judgement)."""
    pg: PolicyGradientConfig = field(default_factory=PolicyGradientConfig)
    """The REINFORCE update."""
    controller: ControllerConfig = field(default_factory=lambda: ControllerConfig(widths=(8, 16, 32), input_size=14))
    """The policy network's body (0.65 million multiply-adds on a 28 x 28 image by default)."""
    cascade_image: bool = False
    """Cascade view: the policy also looks at the image, not only at the answers so far."""
    total_steps: int = 48_000
    """Training images the policy sees in all."""
    batch_size: int = 32
    """Images per update, one per sub-environment."""
    warm_start_images: int = 0
    """Family view: training images of a supervised warm start on each arm's correctness (0: none)."""
    warm_start_epochs: int = 4
    """Family view: passes of the warm start over its images."""
    log_every: int = 10
    """Updates between rows of log.csv."""
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    """How the trained policy is judged on the test split."""

    def __post_init__(self) -> None:
        if self.view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {self.view!r}")
        for name in ("total_steps", "batch_size", "log_every", "warm_start_epochs"):
            check_int(name, getattr(self, name))
        check_int("warm_start_images", self.warm_start_images, minimum=0)


def preset(view: View) -> ReinforceConfig:
    """The measured defaults of ``view`` (see :mod:`instanas_gym.agents.reinforce`)."""
    if view == "masks":
        return ReinforceConfig(view="masks", env=EnvConfig(reward=RewardConfig(upper_end_frac=1.0)),
                               pg=PolicyGradientConfig(alpha=0.95), total_steps=96_000,
                               run=RunConfig(out="runs/reinforce_masks"))
    if view == "cascade":
        # UB far above any cascade (100 x the MobileNetV2 path): the monotone R_A then prices latency almost
        # linearly (about 0.57 of the right answer's 10 per ms), so a second stage pays where it turns wrong
        # answers right; at 3 x, the reward's optimum is to stop after the first stage (benchmarks/README.md)
        reward = RewardConfig(shape="monotone", upper_end_frac=100.0, anneal=False)
        return ReinforceConfig(view="cascade", env=EnvConfig(reward=reward), total_steps=96_000,
                               run=RunConfig(out="runs/reinforce_cascade"))
    return ReinforceConfig(view="family", env=EnvConfig(reward=RewardConfig(upper_end_frac=1.5, anneal=False)))


@dataclass(frozen=True)
class SearchConfig:
    """Arguments of :func:`~instanas_gym.agents.search.search` (``instanas-gym search`` takes each as
    a flag)."""

    view: View = "masks"
    """What the controller chooses per image: "masks" (the paper's 85 bits) or "family" (one of env.family's)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """Images searched on, the pre-trained supernet, latency table, reward and, for the family view, the family."""
    run: RunConfig = field(default_factory=lambda: RunConfig(out="runs/search"))
    """Seed, threads, device, precision and the output folder (supernet.pt, policy.pt, search.pt)."""
    pg: PolicyGradientConfig = field(default_factory=PolicyGradientConfig)
    """The controller's REINFORCE update."""
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    """The controller network (for the family view, its body with K outputs)."""
    epochs: int = 4
    """Phase 2: epochs, each training the controller then the supernet."""
    controller_images: int = 8_000
    """Phase 2: controller training images per epoch."""
    supernet_images: int = 8_000
    """Phase 2: supernet training images per epoch."""
    batch_size: int = 32
    """Controller images per REINFORCE update."""
    supernet_batch_size: int = 128
    """Supernet images per SGD step."""
    supernet_lr: float = 0.01
    """Phase 2: the supernet's SGD learning rate (Nesterov momentum, constant)."""
    bn_stats: Literal["frozen", "batch"] = "frozen"
    """How the supernet's BatchNorm trains: "frozen" keeps its running statistics, "batch" (the paper's)
    uses the batch's."""
    momentum: float = 0.9
    """SGD momentum of the supernet."""
    weight_decay: float = 4e-5
    """SGD weight decay of the supernet."""
    finetune_images: int = 16_000
    """Phase 3: images the supernet fine-tunes on under the fixed controller's masks (0: no phase 3)."""
    finetune_lr: float = 0.01
    """Phase 3: peak learning rate, cosine to 0."""
    checkpoint_every: int = 100
    """Steps between checkpoints (one is also written at every stage's end)."""
    log_every: int = 10
    """Steps between log rows."""
    resume: bool = False
    """Continue from search.pt in the output folder if it is there (the same settings are required)."""

    def __post_init__(self) -> None:
        for name in ("epochs", "controller_images", "supernet_images", "batch_size", "supernet_batch_size",
                     "checkpoint_every", "log_every"):
            check_int(name, getattr(self, name))
        check_int("finetune_images", self.finetune_images, minimum=0)
        if self.view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {self.view!r}")
        if self.bn_stats not in ("frozen", "batch"):
            raise ValueError(f"bn_stats must be 'frozen' or 'batch', got {self.bn_stats!r}")
        for name in ("supernet_lr", "finetune_lr"):
            check_number(name, getattr(self, name), low=0, low_open=True)
        for name in ("momentum", "weight_decay"):
            check_number(name, getattr(self, name), low=0, high=1, high_open=True)
