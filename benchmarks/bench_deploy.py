"""Latency of the deployed model: the ONNX Runtime engine against eager PyTorch, and its table.

    python benchmarks/bench_deploy.py --controller runs/reinforce/controller.pt [--json out.json]
    python benchmarks/bench_deploy.py                # trains the demo preset first (--train-steps)

On the bundled default, with one thread everywhere, on the first ``--images`` test images:

1. batch-1 end-to-end latency (controller + the image's architecture) of the same policy: eager
   PyTorch with dynamic execution (what the environment runs) against the ONNX Runtime engine
   (``instanas_gym.deploy``): mean ms per image and the ratio;
2. the static MobileNetV2 path in ONNX Runtime, and the controller's share of an end-to-end pass
   through it;
3. batch-64 throughput of the engine (controller, then the images grouped by architecture, one call
   per group) against one static network, without a controller, whose MACs are closest to the
   policy's mean MACs;
4. the bundled ONNX Runtime latency table against ONNX Runtime's clock on fresh masks (Spearman,
   MAPE, share within +-10%), as built and after calibration on 20 other masks; and the clock
   against itself: the same masks exported and timed a second time, scored with the same three
   figures, which bound what any table can reach on this machine.

Ratios come from one run; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table

from instanas_gym.agents.config import preset
from instanas_gym.agents.controller import load_controller
from instanas_gym.agents.reinforce import train_reinforce
from instanas_gym.deploy.engine import InstaNASModel
from instanas_gym.deploy.export import export_model
from instanas_gym.latency.calibration import calibrate
from instanas_gym.latency.onnx import controller_latency_ms, measure_onnx_masks, time_onnx_ms
from instanas_gym.latency.table import LatencyTable
from instanas_gym.latency.validation import compare, validation_masks
from instanas_gym.model.checkpoint import load_supernet
from instanas_gym.model.subnetwork import SubNetwork, onnx_bytes
from instanas_gym.space.data import load_split
from instanas_gym.space.masks import mask_counts, mobilenetv2_mask, spread_masks
from instanas_gym.utils.paths import BUNDLED_ONNX_LATENCY_TABLE, BUNDLED_SUPERNET
from instanas_gym.utils.run import RunConfig
from instanas_gym.utils.runtime import session_options


def eager_ms(model, controller, images: np.ndarray) -> float:
    """Mean wall-clock ms per image of controller + supernet (dynamic execution) at batch 1."""
    times = []
    with torch.inference_mode():
        for img in images:
            x = torch.from_numpy(img[None])
            start = time.perf_counter()
            mask = (controller(x) >= 0).to(torch.uint8)[0].numpy()
            model(x.permute(0, 3, 1, 2).contiguous(), mask)
            times.append(time.perf_counter() - start)
    return 1e3 * float(np.mean(times[1:]))


def engine_ms(engine: InstaNASModel, images: np.ndarray) -> tuple[float, float]:
    """Mean ms per image at batch 1 through the engine: (end to end, controller)."""
    engine.predict(images[:2])
    total, ctrl = [], []
    for img in images:
        out = engine.predict(img[None])
        total.append(out["controller_ms"] + out["network_ms"])
        ctrl.append(out["controller_ms"])
    return float(np.mean(total)), float(np.mean(ctrl))


def throughput(fn, images: np.ndarray, batch: int, rounds: int = 3) -> float:
    """Best-of-``rounds`` images/s of ``fn(batch)`` over ``images`` in batches of ``batch``."""
    batches = [images[i : i + batch] for i in range(0, len(images) - batch + 1, batch)]
    fn(batches[0])
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for b in batches:
            fn(b)
        best = max(best, len(batches) * batch / (time.perf_counter() - start))
    return best


def three(v: dict) -> str:
    """Spearman / MAPE / share within +-10% of a table check, as one cell."""
    return f"{v['spearman']:.3f} / {v['mape_pct']:.1f}% / {v['within_10pct']:.0f}%"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--controller", default=None, help="controller.pt; default: train the demo preset first")
    p.add_argument("--train-steps", type=int, default=32_000, help="env steps of that training")
    p.add_argument("--supernet", default=str(BUNDLED_SUPERNET))
    p.add_argument("--table", default=str(BUNDLED_ONNX_LATENCY_TABLE), help="ONNX Runtime latency table")
    p.add_argument("--images", type=int, default=300, help="test images timed at batch 1")
    p.add_argument("--batch-images", type=int, default=1024, help="test images for the batch-64 throughput")
    p.add_argument("--masks", type=int, default=60, help="fresh masks for the table check")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    console = Console()
    model, _ = load_supernet(a.supernet)
    if a.controller:
        controller, _ = load_controller(a.controller)
    else:
        out = tempfile.mkdtemp()
        controller, _ = train_reinforce(replace(preset("masks"), total_steps=a.train_steps, run=RunConfig(threads=1, out=out)),
                                        console)
    controller.eval()
    test = load_split("fashion_mnist", "test")
    images = test.images[: max(a.images, a.batch_images)]
    folder = tempfile.mkdtemp()
    manifest = export_model(folder, model, controller, images)
    engine = InstaNASModel.load(folder, cache_size=64, threads=1)
    shape = tuple(images.shape[1:])
    r: dict[str, float] = {"architectures": len(manifest["architectures"])}
    r["eager_ms"] = eager_ms(model, controller, images[: a.images])
    r["engine_ms"], r["engine_controller_ms"] = engine_ms(engine, images[: a.images])
    r["speedup_b1"] = r["eager_ms"] / r["engine_ms"]
    r["mbv2_onnx_ms"] = time_onnx_ms(onnx_bytes(SubNetwork(model, mobilenetv2_mask()), shape), shape, 1, 100)
    r["controller_onnx_ms"] = controller_latency_ms(controller, shape, "onnxruntime", threads=1, repeats=100)
    r["controller_share_mbv2"] = r["controller_onnx_ms"] / (r["controller_onnx_ms"] + r["mbv2_onnx_ms"])

    masks = engine.masks(images[: a.batch_images])
    distinct, counts = mask_counts(masks)
    mean_macs = float((model.space.macs(masks)).mean())
    candidates = spread_masks(np.random.default_rng(5), 200)
    static = candidates[int(np.abs(model.space.macs(candidates) - mean_macs).argmin())]
    static_net = ort.InferenceSession(onnx_bytes(SubNetwork(model, static), shape), session_options(1),
                                      providers=["CPUExecutionProvider"])
    r["b64_engine_img_s"] = throughput(engine.predict, images[: a.batch_images], 64)
    r["b64_static_img_s"] = throughput(lambda b: static_net.run(None, {"images": b}), images[: a.batch_images], 64)
    r["b64_ratio"] = r["b64_engine_img_s"] / r["b64_static_img_s"]
    r["b64_archs"] = len(counts)

    table = LatencyTable.load(a.table, model.space)
    fresh = validation_masks(model.space, a.masks, seed=11)
    measured = measure_onnx_masks(model, fresh, 1, 30)
    built = compare(np.asarray(table.network_ms(fresh)), measured)
    calib = validation_masks(model.space, 20, seed=12)
    scaled, report = calibrate(table, lambda m: measure_onnx_masks(model, m, 1, 30), calib)
    after = compare(np.asarray(scaled.network_ms(fresh)), measured)
    again = compare(measure_onnx_masks(model, fresh, 1, 30), measured)
    r |= {f"clock_again_{k}": v for k, v in again.items()}
    r |= {f"table_{k}": v for k, v in built.items()} | {f"calibrated_{k}": v for k, v in after.items()}
    r["calibration_scale"] = report["scale"]

    out = Table(title=f"deployment latency, {a.images} test images at batch 1, 1 thread")
    out.add_column("figure")
    out.add_column("value", justify="right")
    out.add_column("target", justify="right")
    rows = [
        ("architectures the policy uses", f"{r['architectures']}", ""),
        ("eager PyTorch, end to end (ms)", f"{r['eager_ms']:.3f}", ""),
        ("ONNX Runtime engine, end to end (ms)", f"{r['engine_ms']:.3f}", ""),
        ("engine speed-up at batch 1", f"{r['speedup_b1']:.1f}x", ">= 5x"),
        ("MobileNetV2 path, static, ONNX Runtime (ms)", f"{r['mbv2_onnx_ms']:.3f}", ""),
        ("controller, ONNX Runtime (ms)", f"{r['controller_onnx_ms']:.3f}", ""),
        ("controller share of controller + MobileNetV2", f"{100 * r['controller_share_mbv2']:.1f}%", "<= 10%"),
        (f"batch 64: engine / static of equal MACs ({r['b64_archs']} archs)", f"{r['b64_ratio']:.2f}", ">= 0.8"),
        ("table: Spearman / MAPE / within 10%", three(built), ">= 0.95 / <= 5% / >= 95%"),
        (f"after calibration (x{report['scale']:.3f})", three(after), "the same"),
        ("the clock timed again against itself", three(again), "(a table's ceiling)"),
    ]
    for row in rows:
        out.add_row(*row)
    console.print(out)
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
