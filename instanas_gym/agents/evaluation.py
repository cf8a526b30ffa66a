"""Judging a policy on the test split: accuracy, LUT latency and wall-clock latency.

A *policy* maps a uint8 image batch (B, H, W, C) to masks (B, 17, 5). The controller learns on the
training (search) split; everything here runs on the ``test`` split.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from instanas_gym.bandit import InstaNASBandit
from instanas_gym.deploy.export import onnx_bytes
from instanas_gym.devices import cpu_copy
from instanas_gym.latency.measure import measure_masks, median_ms, torch_threads
from instanas_gym.latency.onnx import measure_onnx_masks, time_onnx_ms
from instanas_gym.masks import all_ops_mask, mask_counts, mobilenetv2_mask
from instanas_gym.search_space import MASK_SHAPE

from instanas_gym.agents.controller import Controller, greedy_masks

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


def module_latency_ms(
    module: torch.nn.Module, image_shape: tuple[int, int, int], output: str, runtime: str = "torch", threads: int = 1,
    repeats: int = 50,
) -> float:
    """Median ms of ``module`` (uint8 images (B, H, W, C) -> one tensor, named ``output`` in its
    graph) on one image (batch 1) in ``runtime``: "torch" (eager) or "onnxruntime" (its exported
    graph), with ``threads`` threads, on the CPU. What times every policy's network: a controller, a
    router with its routing rule, an SB3 actor."""
    module = cpu_copy(module)
    if runtime == "onnxruntime":
        return time_onnx_ms(onnx_bytes(module.eval(), image_shape, output), image_shape, threads, repeats)
    x = torch.zeros((1, *image_shape), dtype=torch.uint8)
    with torch.inference_mode(), torch_threads(threads):
        return median_ms(lambda: module(x), repeats)


def controller_latency_ms(
    controller: Controller, image_shape: tuple[int, int, int], runtime: str = "torch", threads: int = 1, repeats: int = 50
) -> float:
    """Median ms of the controller on one image (batch 1) in ``runtime``: "torch" (eager) or
    "onnxruntime" (its exported graph), with ``threads`` threads, on the CPU."""
    return module_latency_ms(controller, image_shape, "mask_logits", runtime, threads, repeats)


def measured_network_ms(bandit: InstaNASBandit, masks: np.ndarray, repeats: int = 5) -> float:
    """Mean wall-clock ms at batch 1 of the masks (B, 17, 5) in the runtime the bandit's latency table
    describes (eager dynamic execution, or each architecture's ONNX graph), the table's thread count;
    each distinct mask is timed once and weighted by how often it occurs."""
    distinct, counts = mask_counts(masks)
    eff = bandit.model.space.effective_mask(distinct)
    threads = int(bandit.table.meta.get("threads", 1))
    model = cpu_copy(bandit.model)  # the tables describe the CPU, wherever the bandit runs
    if bandit.table.meta.get("runtime") == "onnxruntime":
        ms = measure_onnx_masks(model, eff, threads, repeats=max(repeats, 20))
    else:
        ms = measure_masks(model, eff, threads, repeats=repeats)
    return float((ms * counts).sum() / counts.sum())


def evaluate_policy(
    policy: Policy, bandit: InstaNASBandit, batch_size: int = 500, measure: int = 0, limit: int | None = None,
    controller_ms: float | None = None,
) -> dict[str, float]:
    """Mean over the split's images: accuracy (fraction), reward, LUT latency of the cells and of the whole
    network (ms), MACs, ops per cell; and how many distinct masks the policy chose (an instance-aware
    policy uses many; a policy collapsed onto one architecture, one). With ``measure`` > 0, also the
    mean wall-clock latency at batch 1 of the masks of the first ``measure`` images, in the table's
    runtime (:func:`measured_network_ms`). With ``controller_ms`` (the policy's controller, in the
    table's runtime), the end-to-end latency: controller + whole network, by the table (``e2e_ms``)
    and by the clock (``e2e_measured_ms``)."""
    n = bandit.num_images if limit is None else min(limit, bandit.num_images)
    sums: dict[str, float] = {}
    chosen = []
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n))
        masks = np.asarray(policy(bandit.data.images[idx]), dtype=np.uint8)
        out = bandit.evaluate(idx, masks)
        for key in ("correct", "reward", "latency_ms", "network_latency_ms", "macs"):
            sums[key] = sums.get(key, 0.0) + float(np.sum(out[key]))
        sums["ops_per_cell"] = sums.get("ops_per_cell", 0.0) + float(masks.sum(-1).mean(-1).sum())
        chosen.append(masks)
    result = {k: v / n for k, v in sums.items()}
    result["accuracy"] = result.pop("correct")
    all_masks = np.concatenate(chosen)
    result["distinct_masks"] = float(len(mask_counts(all_masks)[1]))
    if measure:
        result["measured_ms"] = measured_network_ms(bandit, all_masks[:measure])
    if controller_ms is not None:
        result["controller_ms"] = controller_ms
        result["e2e_ms"] = result["network_latency_ms"] + controller_ms
        if measure:
            result["e2e_measured_ms"] = result["measured_ms"] + controller_ms
    return result


def reference_policies() -> dict[str, Policy]:
    """The fixed architectures every comparison shows: the MobileNetV2 path and all ops."""
    return {"MobileNetV2 path": fixed_policy(mobilenetv2_mask()), "all ops": fixed_policy(all_ops_mask())}
