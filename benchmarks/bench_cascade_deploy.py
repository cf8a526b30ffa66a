"""The deployed cascade against the latency table, in one run: a cascade policy file is exported
(:func:`instanas_gym.deploy.cascade.export_cascade`), served by ONNX Runtime
(:class:`~instanas_gym.deploy.cascade.CascadeModel`, 1 thread), and ``--images`` test images are
timed end to end at batch 1 (one call per image) and in batches of 64, against the table's sum for
the same images' paths (the networks and the policy's decisions). To tell a stale table from the
cascade's own cost, each of the family's architectures is also timed the way the table was built
(its plain graph at batch 1, median of 30 runs, :func:`~instanas_gym.latency.onnx.time_onnx_ms`),
and the images' paths summed by those times; and, as the machine's speed drifts, the table is
calibrated in every round on 10 fresh masks (:func:`~instanas_gym.latency.calibration.calibrate`),
giving the table's sum at that round's speed. All are timed in ``--rounds`` interleaved rounds
(so a change of the machine's speed during the run moves them alike); each ratio is the median
over rounds, with its range. Then one image that stops after stage 1 is timed three ways in
interleaved calls: its plain graph, its graph with the decision folded in, and the whole
``predict``. Also checks that the engine's paths and answers equal the environment's
(lookup) for every image timed.

    python benchmarks/bench_cascade_deploy.py --policy runs/reinforce_cascade/policy.pt --images 500
    python benchmarks/bench_cascade_deploy.py --policy ... --table runs/latency_onnx/latency_onnxruntime.json

Close other programs first (pause background jobs: ``kill -STOP``): this is a measurement of the machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from instanas_gym.agents.cascade import decision_ms, run_policy
from instanas_gym.agents.policy import load_policy
from instanas_gym.deploy.cascade import CascadeModel, export_cascade
from instanas_gym.envs.config import EnvConfig
from instanas_gym.latency.calibration import calibrate
from instanas_gym.latency.onnx import measure_onnx_masks, time_onnx_ms
from instanas_gym.latency.validation import validation_masks
from instanas_gym.model.subnetwork import SubNetwork, onnx_bytes
from instanas_gym.utils.run import RunConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", required=True, help="a cascade policy file (train-reinforce cascade, fit-cascade)")
    p.add_argument("--images", type=int, default=500, help="test images timed")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the three timings")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    p.add_argument("--table", default=None, help="the latency table judged (default: the bundled ONNX Runtime one)")
    a = p.parse_args()
    saved = load_policy(a.policy)
    env = EnvConfig(split="test", latency_table=a.table)
    venv = env.make_cascade_vec(a.images, saved.family, RunConfig(threads=a.threads), progress=False)
    cascade, bandit = venv.cascade, venv.bandit
    shape = bandit.data.spec.image_shape
    cost = decision_ms(saved.network, shape, "onnxruntime", a.threads)
    res = run_policy(saved.actor(), venv, np.arange(a.images))
    plain = [onnx_bytes(SubNetwork(bandit.model, m), shape) for m in cascade.family.masks]
    calib = validation_masks(bandit.model.space, 10, 7)  # fresh masks: the table's level in each round
    rounds = []
    with tempfile.TemporaryDirectory() as folder:
        export_cascade(folder, bandit.model, cascade.family, cascade.network_ms, saved.network, cascade.stages)
        model = CascadeModel.load(folder, a.threads)
        images = bandit.data.images[: a.images]
        out = model.predict(images)
        for _ in range(a.rounds):
            b1 = np.mean([_timed(model, images[i : i + 1]) for i in range(a.images)])
            b64 = np.sum([_timed(model, images[i : i + 64]) for i in range(0, a.images, 64)]) / a.images
            today = np.array([time_onnx_ms(g, shape, a.threads) for g in plain])
            _, report = calibrate(bandit.table, lambda m: measure_onnx_masks(bandit.model, m, a.threads), calib)
            rounds.append((b1, b64, report["scale"], today))
        first = int(np.flatnonzero(out["stages"] == 1)[0])
        one_image = _one_image(model, images[first : first + 1], int(out["arms"][first, 0]), plain, a.threads)
    same_path = float(np.mean(out["stages"] == res["stages"]))
    agree = bool(np.array_equal(out["prediction"] == bandit.data.labels[: a.images], res["correct"].astype(bool)))
    decisions = cost * (out["stages"] + (out["stages"] < cascade.stages))
    table = float(np.mean(out["table_ms"] + decisions))
    print(f"{a.images} test images, {a.threads} thread(s), {a.rounds} rounds; paths equal to the environment's: "
          f"{100 * same_path:.1f}%; every answer right or wrong as there: {agree}")
    print(f"mean stages {out['stages'].mean():.2f}; policy cost per decision {cost:.4f} ms; the table's sum "
          f"{table:.4f} ms per image")
    now = [float(np.mean(np.append(t, 0.0)[out["arms"]].sum(1) + decisions)) for *_, t in rounds]
    _ratio("batch 1, clock / table", [r[0] for r in rounds], [table] * a.rounds)
    at_speed = [float(np.mean(out["table_ms"] * r[2] + decisions)) for r in rounds]
    _ratio("batch 1, clock / the table at the round's speed (calibrated on 10 fresh masks in the round)",
           [r[0] for r in rounds], at_speed)
    _ratio("batch 64, clock / table", [r[1] for r in rounds], [table] * a.rounds)
    _ratio("each architecture's plain graph today / table", [r[3] for r in rounds], [cascade.network_ms] * a.rounds,
           cascade.family.names)
    _ratio("batch 1, clock / the paths by the plain graphs timed today (the cascade's own cost)",
           [r[0] for r in rounds], now)
    print("one image that stops after stage 1, interleaved calls, medians: " +
          ", ".join(f"{name} {ms:.4f} ms" for name, ms in one_image.items()))


def _one_image(model: CascadeModel, image: np.ndarray, k: int, plain: list[bytes], threads: int,
               calls: int = 3000) -> dict[str, float]:
    """Median ms, over ``calls`` interleaved calls each, of one image that stops after architecture ``k``:
    its plain graph, its graph with the decision folded in, and the whole :meth:`CascadeModel.predict`."""
    import onnxruntime as ort

    from instanas_gym.utils.runtime import session_options

    session = ort.InferenceSession(plain[k], session_options(threads), providers=["CPUExecutionProvider"])
    runs = {"plain graph": lambda: session.run(None, {"images": image}), "graph and decision": lambda: model.run_arm(k, image),
            "predict": lambda: model.predict(image)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(calls):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(1e3 * (time.perf_counter() - start))
    return {name: float(np.median(t)) for name, t in times.items()}


def _ratio(what: str, clock: list, table: list, names: tuple[str, ...] | None = None) -> None:
    """Median over rounds of clock / table, with its range (per name when the entries are arrays)."""
    r = np.array(clock, dtype=np.float64) / np.array(table, dtype=np.float64)
    c = np.median(np.array(clock, dtype=np.float64), axis=0)
    if names is None:
        print(f"{what}: {float(np.median(r)):.3f} ({r.min():.3f} to {r.max():.3f}); clock {float(c):.4f} ms")
        return
    print(f"{what}: " + ", ".join(f"{n} {np.median(r[:, k]):.3f} ({r[:, k].min():.3f} to {r[:, k].max():.3f}; "
                                   f"{c[k]:.4f} ms)" for k, n in enumerate(names)))


def _timed(model: CascadeModel, images: np.ndarray) -> float:
    start = time.perf_counter()
    model.predict(images)
    return 1e3 * (time.perf_counter() - start)


if __name__ == "__main__":
    main()
