"""Judging searches on the test split: tables, a Pareto plot, a mask embedding, a latency histogram.

For each search folder (written by :func:`instanas_gym.agents.search.search`): the instance-aware model (the
controller's greedy masks on the searched supernet) against the MobileNetV2 path and the other fixed
single architectures of the same supernet, and the MobileNetV2 path of the pre-trained supernet the
search started from. Latency three ways: the latency table (17 cells, and the whole network), and the
clock (dynamic execution, batch 1 per image and batch 64 per image).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import instanas_gym
from instanas_gym.agents.policy import Policy, controller_policy, fixed_policy
from instanas_gym.agents.search import load_search
from instanas_gym.envs.bandit import InstaNASBandit
from instanas_gym.judge.awareness import judge_instance_awareness
from instanas_gym.judge.evaluation import evaluate_policy
from instanas_gym.judge.plots import latency_histogram, mask_embedding, pareto_plot
from instanas_gym.latency.onnx import controller_latency_ms
from instanas_gym.model.checkpoint import load_supernet
from instanas_gym.space.masks import fixed_architectures, mask_counts, mobilenetv2_mask, save_mask
from instanas_gym.utils.devices import cpu_copy, resolve_device
from instanas_gym.utils.display import markdown_table
from instanas_gym.utils.files import atomic_write_text
from instanas_gym.utils.paths import default_supernet


@torch.inference_mode()
def batch_ms(policy: Policy, bandit: InstaNASBandit, batch: int = 64, images: int = 1024, repeats: int = 3) -> float:
    """Wall-clock ms per image of the supernet (dynamic execution) on test images in batches of
    ``batch``, each image under its own mask (best of ``repeats`` passes over ``images`` images), on the CPU."""
    model = cpu_copy(bandit.model).eval()
    n = min(images, bandit.num_images)
    batches = []
    for start in range(0, n - batch + 1, batch):
        idx = np.arange(start, start + batch)
        masks = torch.from_numpy(np.ascontiguousarray(policy(bandit.data.images[idx]), dtype=np.uint8)).bool()
        batches.append((bandit.images[idx].cpu().contiguous(), masks))
    model(*batches[0])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for x, m in batches:
            model(x, m)
        best = min(best, (time.perf_counter() - t) * 1e3 / (len(batches) * batch))
    return best


def judge(
    policies: dict[str, Policy], bandit: InstaNASBandit, measure: int, limit: int | None,
    controller_ms: dict[str, float] | None = None,
) -> dict[str, dict[str, float]]:
    """Test-split metrics of each policy, the clock at batch 1 (``measure`` images) and at batch 64;
    end to end for the policies ``controller_ms`` names (their controller's ms)."""
    out = {}
    for name, policy in policies.items():
        result = evaluate_policy(policy, bandit, measure=measure, limit=limit,
                                 controller_ms=(controller_ms or {}).get(name))
        if measure:
            result["measured_b64_ms"] = batch_ms(policy, bandit)
        out[name] = result
    return out


def evaluate_search(
    folder: str | Path,
    measure: int = 200,
    limit: int | None = None,
    data_root: str | None = None,
    references: dict[str, tuple[str, str | None]] | None = None,
    instance_aware: bool = False,
    device: str = "cpu",
    own_limit: int | None = None,
) -> dict[str, Any]:
    """Everything the report of one search shows. Returns ``results`` (name -> metrics), per-image
    ``masks``, ``labels`` and ``network_ms`` of the searched model, and ``controller_ms``; with
    ``instance_aware``, also ``instance_aware``: the searched policy against the static frontier
    (:func:`~instanas_gym.judge.awareness.judge_instance_awareness`, files written to ``folder``).

    ``references`` maps a name to (supernet checkpoint, latency table or None for the search's own):
    the MobileNetV2 path of each is judged too, as ``"MobileNetV2 path (name)"``: e.g. that path
    fine-tuned alone with the search's budget (``instanas-gym train-supernet --mask-sampling mobilenetv2``),
    or a plain MobileNetV2 of another width with a table built for it. A checkpoint trained on one
    fixed mask (``--mask-sampling fixed``, e.g. the search's ``top_mask.json`` retrained alone) is
    judged on that mask, as ``"trained alone (name)"``. The pre-trained supernet the search started
    from is always one of them.

    The networks run on ``device`` (:func:`~instanas_gym.utils.devices.resolve_device`); the clock
    columns time CPU copies, in the runtime the latency table describes."""
    model, controller, cfg = load_search(folder)
    controller.to(resolve_device(device))
    env = cfg.get("env") or {}
    dataset = instanas_gym.ENV_IDS.get(env.get("env_id", ""), {}).get("dataset", "fashion_mnist")
    kwargs = dict(data_root=data_root or (env.get("data") or {}).get("root"), reward=env.get("reward"), device=device)
    bandit = InstaNASBandit(dataset, "test", supernet=model, latency_table=env.get("latency_table"), **kwargs)
    bandit.reward.anneal(1.0)  # the bounds the search ended on
    policy = controller_policy(controller)
    policies = {"InstaNAS (searched)": policy} | {k: fixed_policy(m) for k, m in fixed_architectures().items()}
    table = bandit.table.meta
    ctrl_ms = controller_latency_ms(controller, bandit.data.spec.image_shape, table.get("runtime", "torch"),
                                    bandit.table.threads)
    results = judge(policies, bandit, measure, limit, {"InstaNAS (searched)": ctrl_ms})

    pre_path = env.get("supernet") or str(default_supernet(dataset))
    references = {"pre-trained supernet": (pre_path, None)} | (references or {})
    results |= _references(references, dataset, env.get("latency_table"), kwargs, measure, limit)

    n = bandit.num_images if limit is None else min(limit, bandit.num_images)
    aware = judge_instance_awareness(policy, bandit, ctrl_ms, folder, f"InstaNAS (searched) {Path(folder).name}",
                                     limit, own_limit) if instance_aware else None
    masks = np.concatenate([policy(bandit.data.images[i : min(i + 500, n)]) for i in range(0, n, 500)])
    return {
        "results": results,
        "masks": masks,
        "labels": bandit.data.labels[:n],
        "network_ms": np.asarray(bandit.table.network_ms(masks)),
        "controller_ms": ctrl_ms,
        "class_names": bandit.data.spec.class_names,
        "config": cfg,
        "bounds": (bandit.reward.lower_ms, bandit.reward.upper_ms),
        "instance_aware": aware,
    }


def _references(references: dict[str, tuple[str, str | None]], dataset: str, table: str | None,
                kwargs: dict[str, Any], measure: int, limit: int | None) -> dict[str, dict[str, float]]:
    """Each reference checkpoint's MobileNetV2 path (or the mask it was trained on alone) judged on the test split."""
    results = {}
    for name, (checkpoint, own_table) in references.items():
        ref_model, ckpt = load_supernet(checkpoint)
        ref_bandit = InstaNASBandit(dataset, "test", supernet=ref_model, latency_table=own_table or table, **kwargs)
        ref_bandit.reward.anneal(1.0)
        trained = ckpt.get("train_mask")  # a checkpoint of train_supernet --mask-sampling fixed
        mask = mobilenetv2_mask() if trained is None else np.asarray(trained, np.uint8)
        result = judge({"ref": fixed_policy(mask)}, ref_bandit, measure, limit)["ref"]
        results[f"{'MobileNetV2 path' if trained is None else 'trained alone'} ({name})"] = result
    return results


def reduction(results: dict[str, dict[str, float]], key: str, ref: str = "MobileNetV2 path") -> tuple[float, float]:
    """(latency change % by ``key``, accuracy change in percentage points) of the searched model against ``ref``."""
    ours, base = results["InstaNAS (searched)"], results[ref]
    return 100 * (ours[key] / base[key] - 1), 100 * (ours["accuracy"] - base["accuracy"])


def write_report(folder: str | Path, ev: dict[str, Any]) -> Path:
    """``report.md`` with the table, the comparison against the MobileNetV2 path and three plots,
    written into the search folder; returns its path."""
    folder = Path(folder)
    results = ev["results"]
    label = folder.name
    mask_embedding(ev["masks"], ev["labels"], ev["class_names"], folder / "masks_embedding.png",
                   f"masks chosen for test images, {label}")
    fastest = min((k for k in results if k.startswith("all cells")), key=lambda k: results[k]["network_latency_ms"])
    refs = {k: results[k]["network_latency_ms"] for k in ("MobileNetV2 path", fastest)}
    latency_histogram(ev["network_ms"], refs, folder / "latency_histogram.png",
                      f"per-image latency of the searched model, {label}")
    points = {k: (v.get("measured_ms", v["network_latency_ms"]), 100 * v["accuracy"]) for k, v in results.items()
              if k != "all ops"}
    xlabel = "measured latency (ms, batch 1)" if "measured_ms" in results["MobileNetV2 path"] else "LUT latency (ms)"
    pareto_plot(points, folder / "pareto.png", xlabel, f"test accuracy vs latency, {label}",
                highlight=["InstaNAS (searched)"])
    lines = [f"# InstaNAS search `{label}`", "", f"Test split, {len(ev['labels'])} images; the reward bounds at the "
             f"end of the search: LB {ev['bounds'][0]:.3f} ms, UB {ev['bounds'][1]:.3f} ms (17 cells).", "",
             markdown_table(results), "",
             "LUT: latency table (17 cells / whole network); measured: the clock in the table's runtime, "
             "batch 1 (per-image masks), and dynamic execution per image at batch 64. The controller takes "
             f"{ev['controller_ms']:.3f} ms per image (batch 1, the table's runtime): the e2e columns include it.", ""]
    for ref in (k for k in results if k.startswith(("MobileNetV2 path", "trained alone ("))):
        for key, what in (("network_latency_ms", "LUT"), ("measured_ms", "clock, batch 1"),
                          ("measured_b64_ms", "clock, batch 64")):
            if key in results[ref]:
                lat, acc = reduction(results, key, ref)
                lines.append(f"- vs {ref}, {what}: latency {lat:+.1f}%, accuracy {acc:+.2f} points")
        if "measured_ms" in results[ref]:
            with_controller = results["InstaNAS (searched)"]["measured_ms"] + ev["controller_ms"]
            lines.append(f"- vs {ref}, clock, batch 1, controller included: latency "
                         f"{100 * (with_controller / results[ref]['measured_ms'] - 1):+.1f}%")
    lines += ["", "![accuracy vs latency](pareto.png)", "", "![masks](masks_embedding.png)", "",
              "![latency histogram](latency_histogram.png)", ""]
    distinct, counts = mask_counts(ev["masks"])
    save_mask(folder / "top_mask.json", distinct[0])
    lines += [f"The most used mask ({counts[0]} of {len(ev['masks'])} images) is in `top_mask.json`; "
              "`instanas-gym train-supernet --mask-sampling fixed --fixed-mask top_mask.json` trains it "
              "alone, and `instanas-gym evaluate --reference NAME=CHECKPOINT` judges that network here.", ""]
    path = folder / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def family_report(evaluations: dict[str, dict[str, Any]], out: str | Path) -> Path:
    """The A-E family: every search's model on one Pareto plot with the fixed architectures of the
    first search's supernet and the reference MobileNetV2 paths (pre-trained supernet, and any
    ``references``); ``out/family.md`` and ``out/pareto.png``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    first_name, first_ev = next(iter(evaluations.items()))
    first = first_ev["results"]
    key = "measured_ms" if "measured_ms" in first["MobileNetV2 path"] else "network_latency_ms"
    fixed = {(k if k.startswith(("MobileNetV2 path (", "trained alone (")) else f"{k} ({first_name}'s supernet)"): v
             for k, v in first.items() if k != "InstaNAS (searched)"}
    rows = {}
    for name, ev in evaluations.items():
        rows[f"InstaNAS {name} (UB end {ev['config'].get('reward', {}).get('upper_end_frac')} x MobileNetV2)"] = \
            ev["results"]["InstaNAS (searched)"]
    rows |= fixed
    points = {k: (v[key], 100 * v["accuracy"]) for k, v in rows.items() if not k.startswith("all ops")}
    xlabel = "measured latency (ms, batch 1)" if key == "measured_ms" else "LUT latency (ms)"
    pareto_plot(points, out / "pareto.png", xlabel, "InstaNAS family vs fixed architectures",
                highlight=[k for k in rows if k.startswith("InstaNAS ")])
    path = out / "family.md"
    atomic_write_text(path, "# InstaNAS family\n\n" + markdown_table(rows) + "\n\n![pareto](pareto.png)\n")
    return path
