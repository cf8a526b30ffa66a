"""The deployed cascade against the latency table, in one run: a cascade policy file is exported
(:func:`instanas_gym.deploy.cascade.export_cascade`), served by ONNX Runtime
(:class:`~instanas_gym.deploy.cascade.CascadeModel`, 1 thread), and each of ``--images`` test
images is timed end to end at batch 1 (median of ``--repeats`` runs), and batches of 64 per image,
against the table's sum for the same images' paths; and, to tell the table's error from the cascade's
own cost, against the sum of each architecture's graph timed alone in the same run. Also checks that
the engine's answers equal the environment's (lookup) for every image timed.

    python benchmarks/bench_cascade_deploy.py --policy runs/reinforce_cascade/policy.pt --images 500

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
from instanas_gym.latency.measure import median_ms
from instanas_gym.utils.run import RunConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", required=True, help="a cascade policy file (train-reinforce cascade, fit-cascade)")
    p.add_argument("--images", type=int, default=500, help="test images timed at batch 1")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per image (median)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    a = p.parse_args()
    saved = load_policy(a.policy)
    env = EnvConfig(split="test")
    run = RunConfig(threads=a.threads)
    venv = env.make_cascade_vec(a.images, saved.family, run, progress=False)
    cascade, bandit = venv.cascade, venv.bandit
    shape = bandit.data.spec.image_shape
    cost = decision_ms(saved.network, shape, "onnxruntime", a.threads)
    res = run_policy(saved.actor(), venv, np.arange(a.images))
    with tempfile.TemporaryDirectory() as folder:
        export_cascade(folder, bandit.model, cascade.family, cascade.network_ms, saved.network, cascade.stages)
        model = CascadeModel.load(folder, a.threads)
        images = bandit.data.images[: a.images]
        out = model.predict(images)
        agree = float(np.mean(out["prediction"] == bandit.data.labels[: a.images]) == np.mean(res["correct"]))
        same_path = float(np.mean(out["stages"] == res["stages"]))
        b1 = np.array([np.median([_timed(model, images[i : i + 1]) for _ in range(a.repeats)])
                       for i in range(a.images)])
        b64 = np.median([_timed(model, images[i : i + 64]) / len(images[i : i + 64])
                         for i in range(0, a.images, 64) for _ in range(a.repeats)])
        alone = np.array([median_ms(lambda k=k: model.run_arm(k, images[:1]), 200) for k in range(cascade.k)])
    decisions = cost * (out["stages"] + (out["stages"] < cascade.stages))
    table = out["table_ms"] + decisions
    graphs = np.append(alone, 0.0)[out["arms"]].sum(1) + decisions  # each image's graphs, timed alone
    print(f"{a.images} test images, {a.threads} thread(s); paths equal to the environment's: {100 * same_path:.1f}%; "
          f"accuracy equal: {bool(agree)}")
    print(f"mean stages {out['stages'].mean():.2f}; policy cost per decision {cost:.4f} ms")
    print(f"batch 1: clock {b1.mean():.4f} ms vs table {table.mean():.4f} ms per image: ratio {b1.mean() / table.mean():.3f}")
    print(f"batch 64: clock {b64:.4f} ms per image vs table {table.mean():.4f}: ratio {b64 / table.mean():.3f}")
    print("each architecture's graph alone, batch 1: " + ", ".join(
        f"{name} {ms:.4f} ms (table {t:.4f}, ratio {ms / t:.3f})"
        for name, ms, t in zip(cascade.family.names, alone, cascade.network_ms)))
    print(f"batch 1: clock {b1.mean():.4f} ms vs {graphs.mean():.4f} ms by the graphs timed alone: "
          f"ratio {b1.mean() / graphs.mean():.3f} (the cascade's own cost)")


def _timed(model: CascadeModel, images: np.ndarray) -> float:
    start = time.perf_counter()
    model.predict(images)
    return 1e3 * (time.perf_counter() - start)


if __name__ == "__main__":
    main()
