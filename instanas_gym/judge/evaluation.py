"""Judging a policy on the test split: accuracy, LUT latency and wall-clock latency.

A *policy* maps a uint8 image batch (B, H, W, C) to masks (B, 17, 5). The controller learns on the
training (search) split; everything here runs on the ``test`` split.
"""

from __future__ import annotations

import numpy as np

from instanas_gym.agents.policy import Policy
from instanas_gym.envs.bandit import InstaNASBandit
from instanas_gym.latency.measure import measure_masks
from instanas_gym.latency.onnx import measure_onnx_masks
from instanas_gym.space.masks import mask_counts
from instanas_gym.utils.devices import cpu_copy


def clock_ms(bandit: InstaNASBandit, masks: np.ndarray, repeats: int = 5) -> np.ndarray:
    """Wall-clock ms at batch 1 of each mask (M, 17, 5), in the runtime the bandit's latency table
    describes (eager dynamic execution, or each architecture's ONNX graph) with the table's thread count."""
    eff = bandit.model.space.effective_mask(masks)
    model = cpu_copy(bandit.model)  # the tables describe the CPU, wherever the bandit runs
    if bandit.table.meta.get("runtime") == "onnxruntime":
        return measure_onnx_masks(model, eff, bandit.table.threads, repeats=max(repeats, 20))
    return measure_masks(model, eff, bandit.table.threads, repeats=repeats)


def measured_network_ms(bandit: InstaNASBandit, masks: np.ndarray, repeats: int = 5) -> float:
    """Mean wall-clock ms at batch 1 of the masks (B, 17, 5) (:func:`clock_ms`); each distinct mask is
    timed once and weighted by how often it occurs."""
    distinct, counts = mask_counts(masks)
    ms = clock_ms(bandit, distinct, repeats)
    return float((ms * counts).sum() / counts.sum())


def clock_report(images: int, clock_ms: float, table_ms: float) -> dict[str, float]:
    """A judging report's ``clock``: the networks of ``images`` test images, their mean wall-clock and
    table latency per image (ms), and the ``ratio`` of the two."""
    return {"images": images, "clock_ms": clock_ms, "table_ms": table_ms, "ratio": clock_ms / table_ms}


def clock_against_table(bandit: InstaNASBandit, masks: np.ndarray, table_ms: np.ndarray) -> dict[str, float]:
    """The networks of ``masks`` (M, 17, 5), one per image, timed on the clock (:func:`measured_network_ms`)
    against their table latency ``table_ms`` (M,): :func:`clock_report`."""
    return clock_report(len(masks), measured_network_ms(bandit, masks), float(np.mean(table_ms)))


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


