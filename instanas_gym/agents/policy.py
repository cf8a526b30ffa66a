"""TODO."""



from collections.abc import Callable

import numpy as np
import torch

from instanas_gym.agents.controller import Controller, greedy_masks
from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask
from instanas_gym.space.search_space import MASK_SHAPE

Policy = Callable[[np.ndarray], np.ndarray]

def controller_policy(controller: Controller) -> Policy:
    """The controller's greedy masks, p >= 0.5 (the encouragement bound alpha > 0.5 keeps p' >= 0.5
    exactly where p >= 0.5, so it does not change them)."""

    device = next(controller.parameters()).device

    @torch.inference_mode()
    def policy(images: np.ndarray) -> np.ndarray:
        return greedy_masks(torch.sigmoid(controller(torch.from_numpy(images).to(device))))

    return policy

def fixed_policy(mask: np.ndarray) -> Policy:
    """The same mask for every image (a single architecture)."""
    return lambda images: np.broadcast_to(mask, (len(images), *MASK_SHAPE))

def random_policy(seed: int = 0, keep_prob: float = 0.5) -> Policy:
    """Uniform-random masks: every bit Bernoulli(keep_prob)."""
    rng = np.random.default_rng(seed)
    return lambda images: (rng.random((len(images), *MASK_SHAPE)) < keep_prob).astype(np.uint8)

def reference_policies() -> dict[str, Policy]:
    """The fixed architectures every comparison shows: the MobileNetV2 path and all ops."""
    return {"MobileNetV2 path": fixed_policy(mobilenetv2_mask()), "all ops": fixed_policy(all_ops_mask())}
