"""What the demo page shows for a cascade: per image, the path it took (the architectures run one after
another until the policy stopped), and where the test images stop.

:class:`CascadeState` is :class:`~.state.DemoState` for a folder of
:func:`~instanas_gym.deploy.cascade.export_cascade`, served by
:class:`~instanas_gym.deploy.cascade.CascadeModel`. At start every session is run once at batch 1,
then the whole test split runs through the cascade once (batches of 64). That gives each
architecture's share of the runs (of all the architectures run on the test split, the fraction that
were it), the share of the images that stop after each stage, overall and in each fifth of difficulty
(the same yardstick as for a single architecture: the loss of the family's largest architecture by the
table), and each image's final architecture (the one whose answer it gets), which the gallery and the
thumbnails' colours follow.

A request runs alone (batch 1). Latency, in ms, per stage: "by the table" is the policy's cost of a
decision (its median time in ONNX Runtime at batch 1, timed at start; 0 for a threshold rule, a
comparison) plus the latency table's figure for the architecture that stage ran; "measured" is the
engine's wall clock of that stage for this request in the server (the decision, then the network). A
cascade that stops before its last stage pays one more decision, STOP, timed the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from instanas_gym.demo.state import BATCH, Architecture, DemoState
from instanas_gym.deploy.cascade import CascadeModel
from instanas_gym.deploy.engine import mask_bits


class CascadeState(DemoState):
    """The page's state for a cascade export folder (arguments: those of :class:`~.state.DemoState`).
    :attr:`architectures` are the family's, in its order (index k: the cascade's action k)."""

    kind = "cascade"
    engine: CascadeModel

    # ---- at start ------------------------------------------------------------------------------
    def _load_model(self, threads: int) -> None:
        self.engine = CascadeModel.load(self.folder, threads)
        self.manifest = self.engine.manifest

    def _controller_ms(self, threads: int) -> float:
        return self.engine.decision_ms(self.spec.image_shape)

    def _network_logits(self, arch: int, images: np.ndarray) -> np.ndarray:
        return self.engine.run_arm(arch, images)[0]

    def _build_sessions(self) -> None:
        """Every architecture's session and the whole cascade, each run twice at batch 1."""
        one = self.test.images[:1]
        for _ in range(2):
            self.engine.predict(one)
            for k in range(self.engine.k):
                self.engine.run_arm(k, one)

    def _judge_test_split(self, batch: int = BATCH) -> None:
        outs = [self.engine.predict(self.test.images[i : i + batch]) for i in range(0, len(self.test), batch)]
        self.arms = np.concatenate([o["arms"] for o in outs])
        """Each test image's path: (N, T) the architecture run at each stage, K where none ran."""
        self.stages = np.concatenate([o["stages"] for o in outs])
        """Each test image's number of stages run (N,)."""
        self.prediction = np.concatenate([o["prediction"] for o in outs])
        k, n, t = self.engine.k, len(self.test), self.engine.stages
        masks = [np.asarray(a["mask"], np.uint8) for a in self.manifest["architectures"]]
        table_ms = np.array([float(self.table.network_ms(m)) for m in masks])
        self.served = self.arms[np.arange(n), self.stages - 1]
        runs = np.bincount(self.arms[self.arms < k], minlength=k)
        right = self.prediction == self.test.labels
        xy = self._embed(masks)
        self.architectures = [
            Architecture(mask_bits(m), m, float(runs[i] / runs.sum()),
                         float(right[self.served == i].mean()) if (self.served == i).any() else float("nan"),
                         float(table_ms[i]), (float(xy[i, 0]), float(xy[i, 1])), str(a["name"]))
            for i, (m, a) in enumerate(zip(masks, self.manifest["architectures"]))
        ]
        self.arch_index = {a.key: i for i, a in enumerate(self.architectures)}
        decisions = self.stages + (self.stages < t)
        self.image_ms = np.append(table_ms, 0.0)[self.arms].sum(1) + self.controller_ms * decisions
        self.accuracy = float(right.mean())

    # ---- what the page asks for ----------------------------------------------------------------
    def stops(self, members: np.ndarray) -> list[float]:
        """Of the test images ``members`` (bool (N,)), the share that stops after each stage (T,)."""
        stages = self.stages[members]
        return (np.bincount(stages - 1, minlength=self.engine.stages) / len(stages)).tolist()

    def _bin_row(self, members: np.ndarray) -> dict[str, Any]:
        """:meth:`~.state.DemoState._bin_row`, plus where those images stop (``stops``) and their mean
        number of stages."""
        return super()._bin_row(members) | {"stops": self.stops(members),
                                            "mean_stages": float(self.stages[members].mean())}

    def _image_entry(self, index: int) -> dict[str, Any]:
        return super()._image_entry(index) | {"stages": int(self.stages[index])}

    def summary(self) -> dict[str, Any]:
        """:meth:`~.state.DemoState.summary` (``kind`` "cascade") with the stages T, the rule
        (``policy``: "thresholds" with ``order`` and ``thresholds``, or "network"), ``decision_ms``
        (= ``controller_ms``), where the test images stop (``stops``), their mean stages and latency by
        the table, and each architecture's share of the answers (``answers``) beside its share of the
        runs (``share``)."""
        out = super().summary()
        answers = np.bincount(self.served, minlength=self.engine.k) / len(self.test)
        for entry, share in zip(out["architectures"], answers):
            entry["answers"] = float(share)
        rule = self.manifest["policy"]
        policy = {"kind": rule["kind"]} | ({"order": rule["order"], "thresholds": rule["thresholds"]}
                                          if rule["kind"] == "thresholds" else {})
        everyone = np.ones(len(self.test), bool)
        return out | {"stages": self.engine.stages, "policy": policy,
                      "decision_ms": self.controller_ms, "stops": self.stops(everyone),
                      "mean_stages": float(self.stages.mean()), "mean_ms": float(self.image_ms.mean())}

    def classify(self, image: np.ndarray) -> dict[str, Any]:
        """Run one uint8 image (H, W, C) of the data set's shape through the cascade: its ``path`` (per
        stage: the architecture, its mask, answer, confidence, the rule's threshold where there is one,
        and the stage's latency by the table and measured), where it ``stop``-ped, the final answer
        (``prediction``, ``confidence``, ``top``, ``architecture``: the one that answered), the latency
        end to end (ms) and how far the image is from the test split."""
        image = self.checked_image(image)
        out = self.engine.predict(image[None])
        n, walls = int(out["stages"][0]), out["stage_wall_ms"]
        thresholds = self.manifest["policy"].get("thresholds", [])
        path = []
        for s, k in enumerate(out["arms"][0][:n]):
            a = self.architectures[int(k)]
            path.append({"stage": s + 1, "architecture": int(k), "name": a.name, "mask": a.mask.tolist(),
                         "prediction": self.spec.class_names[int(out["stage_prediction"][0, s])],
                         "confidence": float(out["stage_confidence"][0, s]),
                         "threshold": float(thresholds[s]) if s < len(thresholds) else None,
                         "latency_ms": {"table": self.controller_ms + a.table_ms, "network_table": a.table_ms,
                                        "measured": float(walls[s])}})
        stopped = n < self.engine.stages
        stop = {"after": n, "by": "policy" if stopped else "last stage",
                "latency_ms": {"table": self.controller_ms, "measured": float(walls[n])} if stopped else None}
        probs = out["probs"][0]
        top = np.argsort(-probs)[:3]
        networks = sum(p["latency_ms"]["network_table"] for p in path)
        decisions = n + stopped
        return {
            "kind": "cascade", "path": path, "stop": stop, "architecture": path[-1]["architecture"],
            "prediction": self.spec.class_names[int(top[0])], "confidence": float(probs[top[0]]),
            "top": [{"class": self.spec.class_names[int(c)], "probability": float(probs[c])} for c in top],
            "latency_ms": {
                "table": {"networks": networks, "decisions": decisions * self.controller_ms,
                          "decision_count": decisions,
                          "e2e": networks + decisions * self.controller_ms},
                "measured": {"e2e": float(walls.sum())},
            },
            "typicality": self.typicality.score(image),
        }
