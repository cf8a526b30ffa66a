"""InstaNAS as a Gymnasium contextual bandit: one image per episode, one mask per image."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from instanas_gym.envs.bandit import IMAGE_ORDERS, ImageOrder, InstaNASBandit
from instanas_gym.envs.render import draw
from instanas_gym.space.masks import validate_mask
from instanas_gym.space.search_space import MASK_SHAPE
from instanas_gym.utils.checks import check_int

RESET_OPTIONS = ("index",)


def check_seed(seed: Any) -> int | None:
    """``seed`` as reset accepts it: None, or a Python / numpy integer >= 0."""
    return check_int("seed", seed, minimum=0, optional=True)


def check_options(options: Any) -> dict[str, Any]:
    """``options`` as reset accepts it: None or a dict whose keys are in :data:`RESET_OPTIONS`."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be None or a dict, got {type(options).__name__}")
    unknown = sorted(map(str, set(options) - set(RESET_OPTIONS)))
    if unknown:
        raise ValueError(f"options: unknown keys {unknown}; reset takes {list(RESET_OPTIONS)}")
    return options


def check_common(order: Any, render_mode: Any, render_modes: list[str]) -> None:
    """The arguments both environments take besides the bandit's."""
    if order not in IMAGE_ORDERS:
        raise ValueError(f"order must be one of {IMAGE_ORDERS}, got {order!r}")
    if render_mode is not None and render_mode not in render_modes:
        raise ValueError(f"render_mode must be one of {render_modes} or None, got {render_mode!r}")


class LatencyBounds:
    """``set_latency_bounds`` / ``latency_bounds`` for environments that hold a ``bandit``."""

    bandit: InstaNASBandit

    def set_latency_bounds(self, lower_ms: float | None = None, upper_ms: float | None = None) -> None:
        """Set the reward's latency bounds LB/UB in ms (None keeps the current one)."""
        self.bandit.reward.set_bounds(lower_ms, upper_ms)

    def calibrate_latency(self, n_masks: int = 20, seed: int = 0) -> dict[str, float]:
        """Fit the latency table (and the bounds) to this machine by timing ``n_masks`` (<= 20) masks
        (:meth:`instanas_gym.envs.bandit.InstaNASBandit.calibrate_latency`); returns the scale and the error
        before and after."""
        return self.bandit.calibrate_latency(n_masks, seed)

    @property
    def latency_bounds(self) -> tuple[float, float]:
        """(LB, UB) in ms."""
        return self.bandit.reward.lower_ms, self.bandit.reward.upper_ms


class InstaNASEnv(LatencyBounds, gym.Env):
    """Pick a sub-network of a pre-trained one-shot supernet for one image.

    ## Description
    Instance-aware neural architecture search (InstaNAS, Cheng et al., AAAI 2020) as a contextual
    bandit. Each episode shows one image; the agent answers with a mask choosing, in each of the 17
    cells of a MobileNetV2-style supernet, which of 5 candidate ops run. The supernet classifies the
    image with that sub-network; the reward trades correctness against the sub-network's latency.

    ## Action Space
    ``MultiBinary((17, 5))``: row = cell, column = op (inverted residual 3x3 expand 6, 3x3 expand 3,
    5x5 expand 6, 5x5 expand 3, basic block). Several ops in a cell are merged by their mean (or
    their sum, for a supernet trained with ``cell_merge="sum"``), plus one residual where shapes allow. An empty
    cell is the identity, except where the cell changes stride or
    channels: there the basic block runs instead (and its latency counts). Values must be 0/1
    (bool or integer dtype).

    ## Observation Space
    ``Box(0, 255, (H, W, C), uint8)``: the image, (28, 28, 1) for Fashion-MNIST, (32, 32, 3) for CIFAR.

    ## Rewards
    With L the latency table's latency of the mask's 17 cells in ms and [LB, UB] the latency bounds:

        R_T = +c if the prediction is right, else -c                 (c = ``correct_reward`` = 10)
        R_A = max(0, (UB - L)(L - LB)) / ((UB - LB) / 2)^2            (``reward_shape="parabola"``)
        R_A = clip((UB - L) / (UB - LB), 0, 1)^2                      (``reward_shape="monotone"``)
        R   = R_T * R_A if right, else R_T

    LB defaults to the fastest mask's latency and UB to 0.7 x the all-ops latency; an agent anneals
    UB with :meth:`set_latency_bounds` (towards 0.5 x the MobileNetV2 path's latency in the paper).

    ## Starting State
    ``reset`` draws an image of the split through ``self.np_random`` (``order="random"``) or takes the
    next one in order (``order="sequential"``); ``options={"index": i}`` picks image ``i`` (an
    integer in [0, number of images)). Seeding goes only through ``reset(seed=)``.

    ## Episode End
    Every episode is one step: ``terminated=True``, ``truncated=False``.

    ## Info
    ``step`` returns: ``correct``, ``label``, ``prediction``, ``confidence`` (softmax probability of
    the prediction), ``latency_ms`` (L), ``network_latency_ms`` (L plus stem, head and classifier),
    ``reward_task`` (R_T), ``reward_arch`` (R_A), ``macs`` (of the sub-network, batch 1),
    ``empty_cells``, and the constants ``reward_shape``, ``correct_reward``, ``lower_ms``, ``upper_ms``.
    ``reset`` returns ``image_index``.

    ## Arguments
    ``order`` and ``render_mode`` ("rgb_array"), and those of :class:`instanas_gym.envs.bandit.InstaNASBandit`:
    ``dataset`` ("fashion_mnist", "cifar10", "cifar100"), ``split``, ``data_root``, ``download``,
    ``supernet`` and ``latency_table`` (paths; the bundled ones for Fashion-MNIST), ``latency_backend``
    (whose default table: "onnxruntime", the deployed model, by default, or "torch", eager PyTorch), ``reward`` (a
    :class:`instanas_gym.envs.reward.RewardConfig`, or a dict of its fields: ``correct_reward``, ``shape``,
    ``lower_ms``, ``upper_ms``, ``upper_start_frac``, ``upper_end_frac``), ``mode`` ("dynamic" or
    "masked" execution), ``device`` ("cpu", "cuda", "cuda:N" or "auto"), ``precision`` ("fp32" or
    "bf16" autocast), ``threads`` (torch threads, process-wide). Invalid arguments
    raise ``ValueError`` or ``TypeError`` naming the argument; missing or broken files raise
    ``FileNotFoundError`` or :class:`instanas_gym.utils.files.FileFormatError` naming the file.

    ## Version History
    * v0: the reward's settings are one ``reward`` argument (a ``RewardConfig``); actions and
      observations are unchanged since the first release. The reward's default latency table is
      ONNX Runtime's (the deployed model's) since 0.2; ``latency_backend="torch"`` gives the eager
      PyTorch table of earlier releases.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(
        self, order: ImageOrder = "random", render_mode: str | None = None, **bandit_kwargs: Any
    ) -> None:
        check_common(order, render_mode, self.metadata["render_modes"])
        self.bandit = InstaNASBandit(**bandit_kwargs)
        self.order: ImageOrder = order
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0, 255, self.bandit.data.spec.image_shape, np.uint8)
        self.action_space = spaces.MultiBinary(MASK_SHAPE)
        self._cursor = 0
        self._index: int | None = None  # the image awaiting an action
        self._shown: int | None = None  # the image last shown (for render)
        self._last_mask: np.ndarray | None = None

    # ---- Gymnasium API --------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        seed = check_seed(seed)
        options = check_options(options)
        super().reset(seed=seed)
        if seed is not None:
            self._cursor = 0
        if "index" in options:
            self._index = self.bandit.check_index(options["index"])
        else:
            self._index, self._cursor = self.bandit.draw(self.np_random, self.order, self._cursor)
        self._last_mask, self._shown = None, self._index
        return self.bandit.data.images[self._index].copy(), {"image_index": self._index}

    def step(self, action):
        if self._index is None:
            raise RuntimeError("call reset() before step(): every episode is one step on one image")
        mask = validate_mask(action, name="action")
        out = self.bandit.evaluate(np.array([self._index]), mask[None])
        obs = self.bandit.data.images[self._index].copy()
        self._last_mask, self._index = mask, None
        info = {k: (v[0].item() if isinstance(v, np.ndarray) else v) for k, v in out.items() if k != "reward"}
        return obs, float(out["reward"][0]), True, False, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._shown is None:
            raise RuntimeError("call reset() before render()")
        mask = self._last_mask
        effective = None if mask is None else self.bandit.model.space.effective_mask(mask)
        return draw(self.bandit.data.images[self._shown], mask, effective)
