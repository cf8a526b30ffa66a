"""Which images each architecture gets right: the answers of single architectures of one supernet on
one split, computed once and kept in one file.

An architecture's answer to an image (a mask run alone, in eval mode) does not change between
episodes or judgements. :class:`OutcomeStore` computes, for any set of masks, every image's
prediction, its softmax confidence and the whole softmax output, and each image's cross-entropy
under all ops (its difficulty), and keeps them in one ``.npz`` file per (supernet, split, BatchNorm
statistics). Lookup mode (:mod:`instanas_gym.envs.lookup`), the cascade view, judging
(:mod:`instanas_gym.judge.awareness`), ``compare`` and router fitting all read it; an architecture is
run again only when the file does not hold it yet.

The file (format ``"instanas-outcomes-v2"``) lies beside the supernet checkpoint,
``<checkpoint stem>_outcomes_<split>[_own].npz``; for a checkpoint inside the installed package (the
bundled supernet, whose shipped files never change) what is added goes to
``$INSTANAS_CACHE/outcomes/`` instead. Its arrays, for M architectures on the split's first n images:

    key         JSON: format, supernet_sha256, dataset, split, images (N), data_sha256, statistics, scored_images (n)
    masks       uint8 (M, 17, 5): the effective masks (the ops that really run), in the order added
    prediction  int16 (M, n); confidence float32 (M, n), the softmax probability of the prediction
    probs       float16 (M, n, C): the softmax output
    loss        float32 (n,): each image's cross-entropy under all ops (nats)

A file whose key does not match the supernet and data at hand (the checkpoint was replaced, say) is
stale: its answers are recomputed and the file replaced. A damaged file (unreadable, arrays of the
wrong shape, values out of range) raises :class:`~instanas_gym.utils.files.FileFormatError` naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from instanas_gym.model.supernet import Supernet
from instanas_gym.space.data import ImageSet
from instanas_gym.space.masks import all_ops_mask, validate_mask
from instanas_gym.space.search_space import MASK_SHAPE
from instanas_gym.utils.checks import check_int
from instanas_gym.utils.files import FileFormatError, atomic_write
from instanas_gym.utils.paths import ASSETS, cache_dir
from instanas_gym.utils.runlog import progress_bar

OUTCOMES_FORMAT = "instanas-outcomes-v2"
Statistics = Literal["shared", "own"]
STATISTICS = ("shared", "own")
ARRAYS = ("masks", "prediction", "confidence", "probs", "loss")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_sha256(data: ImageSet) -> str:
    """SHA-256 (hex) of a split's images and labels."""
    h = hashlib.sha256(np.ascontiguousarray(data.images).tobytes())
    h.update(np.ascontiguousarray(data.labels).tobytes())
    return h.hexdigest()


def outcomes_key(checkpoint: str | os.PathLike, data: ImageSet, statistics: Statistics = "shared") -> dict[str, Any]:
    """What every stored answer depends on: the checkpoint's bytes, the split's images and labels,
    and which BatchNorm statistics ran."""
    return {"format": OUTCOMES_FORMAT, "supernet_sha256": file_sha256(checkpoint), "dataset": data.spec.name,
            "split": data.split, "images": len(data), "data_sha256": data_sha256(data), "statistics": statistics}


def _name(checkpoint: Path, split: str, statistics: Statistics, tag: str) -> str:
    return f"{checkpoint.stem}_outcomes_{split}{'_own' if statistics == 'own' else ''}{f'_{tag}' if tag else ''}.npz"


def outcomes_path(checkpoint: str | os.PathLike, split: str, statistics: Statistics = "shared", tag: str = "") -> Path:
    """The outcomes file of ``checkpoint`` on ``split``: beside it, or in ``$INSTANAS_CACHE/outcomes/``
    for a checkpoint inside the installed package (where nothing is written)."""
    path = Path(checkpoint)
    name = _name(path, split, statistics, tag)
    if path.resolve().is_relative_to(ASSETS.resolve()):
        return cache_dir() / "outcomes" / name
    return path.with_name(name)


def shipped_outcomes_path(checkpoint: str | os.PathLike, split: str, statistics: Statistics = "shared",
                          tag: str = "") -> Path:
    """The outcomes file beside ``checkpoint`` (for the bundled supernet: the one shipped with it)."""
    path = Path(checkpoint)
    return path.with_name(_name(path, split, statistics, tag))


# ---- running the supernet --------------------------------------------------------------------------
@torch.inference_mode()
def answers(
    model: Supernet, data: ImageSet, masks: np.ndarray | Callable[[int], np.ndarray], batch_size: int = 256,
    n: int | None = None,
) -> dict[str, np.ndarray]:
    """Run ``model`` (eval mode, restored after, on its device) on the first ``n`` images of ``data``
    under one mask (17, 5) or ``masks(b)`` per-image masks: ``prediction`` int64 (n,), ``confidence``
    float32 (n,), ``probs`` float32 (n, C) and ``loss`` float64 (n,), the cross-entropy in nats."""
    n = len(data) if n is None else min(n, len(data))
    was_training = model.training
    model.eval()
    images, labels = data.tensors()
    device = model.mean.device
    probs, losses = [], []
    for i in range(0, n, batch_size):
        x = images[i : min(i + batch_size, n)].to(device)
        m = masks(len(x)) if callable(masks) else np.broadcast_to(masks, (len(x), *np.shape(masks)))
        logits = model(x, torch.from_numpy(np.asarray(m, dtype=bool))).float().cpu()  # as the environments run it
        probs.append(logits.softmax(1))
        losses.append(F.cross_entropy(logits, labels[i : i + len(x)], reduction="none"))
    model.train(was_training)
    if not probs:
        c = data.spec.num_classes
        return {"prediction": np.zeros(0, np.int64), "confidence": np.zeros(0, np.float32),
                "probs": np.zeros((0, c), np.float32), "loss": np.zeros(0)}
    p = torch.cat(probs)
    confidence, prediction = p.max(1)
    return {"prediction": prediction.numpy(), "confidence": confidence.numpy(), "probs": p.numpy(),
            "loss": torch.cat(losses).numpy().astype(np.float64)}


def correct_per_image(
    model: Supernet, data: ImageSet, masks: np.ndarray | Callable[[int], np.ndarray], batch_size: int = 256
) -> np.ndarray:
    """Bool (N,): which images of ``data`` are classified right under one fixed mask (17, 5) or
    ``masks(n)`` per-image masks (eval mode, restored after), on the model's device."""
    return answers(model, data, masks, batch_size)["prediction"] == data.labels


def per_image_loss(model: Supernet, data: ImageSet, mask: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Cross-entropy (nats, float64 (N,)) of each image of ``data`` under one fixed mask (17, 5), in
    eval mode (the model's mode is restored after), on the model's device. With the all-ops mask: the
    images' difficulty."""
    return answers(model, data, validate_mask(mask), batch_size)["loss"]


# ---- the store -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcomes:
    """Answers of M architectures on the first n images of a split (rows in the order asked for)."""

    masks: np.ndarray
    """uint8 (M, 17, 5), the effective masks."""
    prediction: np.ndarray
    """int64 (M, n)."""
    confidence: np.ndarray
    """float64 (M, n): the softmax probability of the prediction."""
    probs: np.ndarray
    """float16 (M, n, C): the softmax output."""
    labels: np.ndarray
    """int64 (n,)."""

    @property
    def correct(self) -> np.ndarray:
        """bool (M, n): whether architecture m classifies image i right."""
        return self.prediction == self.labels[None]


class OutcomeStore:
    """The outcomes of single architectures of ``model`` on ``data``, computed on demand and kept.

    Args:
        model: the supernet (run in eval mode, on its device).
        checkpoint: the file ``model`` was loaded from; None keeps the outcomes in memory only (a
            supernet being trained has no file).
        data: the split.
        statistics: which BatchNorm statistics ran ("shared", or "own": each architecture's own),
            part of the file's name and key.
        batch_size: images per supernet call.
        progress: show a progress bar while computing.
        rebuild: recompute whatever is asked for, even when the file holds it.
        tag: a name for a store of a subset of the split (``data`` then holds that subset), kept in a
            file of its own (``..._<tag>.npz``).
    """

    def __init__(
        self, model: Supernet, checkpoint: str | os.PathLike | None, data: ImageSet, statistics: Statistics = "shared",
        batch_size: int = 256, progress: bool = True, rebuild: bool = False, tag: str = "",
    ) -> None:
        if statistics not in STATISTICS:
            raise ValueError(f"statistics must be one of {STATISTICS}, got {statistics!r}")
        self.model, self.data, self.statistics = model, data, statistics
        self.batch_size, self.progress = check_int("batch_size", batch_size), progress
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.key = None if self.checkpoint is None else outcomes_key(self.checkpoint, data, statistics)
        self.tag = tag
        self.path = None if self.checkpoint is None else outcomes_path(self.checkpoint, data.split, statistics, tag)
        self._rows: dict[bytes, dict[str, np.ndarray]] = {}
        self._loss: np.ndarray | None = None
        self._n = 0  # images every kept row covers
        if self.checkpoint is not None and not rebuild:
            self._read()

    # ---- files -----------------------------------------------------------------------------------
    def _candidates(self) -> list[Path]:
        assert self.checkpoint is not None and self.path is not None
        shipped = shipped_outcomes_path(self.checkpoint, self.data.split, self.statistics, self.tag)
        return [self.path] if shipped == self.path else [self.path, shipped]

    def _read(self) -> None:
        """Keep the rows of the first readable, current file (written first, shipped second)."""
        for path in self._candidates():
            if path.is_file():
                stored = read_outcomes(path, self.key)
                if stored is not None:
                    arrays, n = stored
                    self._n, self._loss = n, arrays["loss"].astype(np.float64)
                    for i, m in enumerate(arrays["masks"]):
                        self._rows[m.tobytes()] = {name: arrays[name][i] for name in ("prediction", "confidence", "probs")}
                    return

    def _write(self) -> None:
        if self.path is None or not self._rows:
            return
        masks = np.stack([np.frombuffer(k, dtype=np.uint8).reshape(MASK_SHAPE) for k in self._rows])
        rows = list(self._rows.values())
        write_outcomes(self.path, self.key | {"scored_images": self._n}, masks,
                       np.stack([r["prediction"] for r in rows]), np.stack([r["confidence"] for r in rows]),
                       np.stack([r["probs"] for r in rows]), self._loss)

    # ---- answers ---------------------------------------------------------------------------------
    def _images(self, n: int | None) -> int:
        n = len(self.data) if n is None else check_int("n", n)
        return min(n, len(self.data))

    def _ensure(self, effective: np.ndarray, n: int) -> None:
        if n > self._n:  # more images than kept: every kept row is recomputed with them
            effective = np.concatenate([np.stack([np.frombuffer(k, np.uint8).reshape(MASK_SHAPE) for k in self._rows]),
                                        effective]) if self._rows else effective
            self._rows, self._loss, self._n = {}, None, n
        todo = list(dict.fromkeys(m.tobytes() for m in effective if m.tobytes() not in self._rows))
        if not todo and self._loss is not None:
            return
        n = self._n  # every kept row covers the same images
        with progress_bar(disable=not self.progress) as bar:
            task = bar.add_task(f"answers of {len(todo)} architectures on {n} {self.data.split} images",
                                total=len(todo) + (self._loss is None), stats="")
            for key in todo:
                a = answers(self.model, self.data, np.frombuffer(key, np.uint8).reshape(MASK_SHAPE), self.batch_size, n)
                self._rows[key] = {"prediction": a["prediction"].astype(np.int16),
                                   "confidence": a["confidence"].astype(np.float32),
                                   "probs": a["probs"].astype(np.float16)}
                bar.advance(task)
            if self._loss is None:
                self._loss = answers(self.model, self.data, all_ops_mask(), self.batch_size, n)["loss"]
                bar.advance(task)
        self._write()

    def get(self, masks: np.ndarray, n: int | None = None) -> Outcomes:
        """The answers of each mask of ``masks`` (M, 17, 5) run alone on the first ``n`` images (all
        when None), computing those not kept yet (and storing them)."""
        masks = validate_mask(masks, batched=True)
        effective = self.model.space.effective_mask(masks).astype(np.uint8)
        n = self._images(n)
        self._ensure(effective, n)
        rows = [self._rows[m.tobytes()] for m in effective]
        c = self.data.spec.num_classes
        return Outcomes(
            masks=effective,
            prediction=np.array([r["prediction"][:n] for r in rows], dtype=np.int64).reshape(len(rows), n),
            confidence=np.array([r["confidence"][:n] for r in rows], dtype=np.float64).reshape(len(rows), n),
            probs=np.array([r["probs"][:n] for r in rows], dtype=np.float16).reshape(len(rows), n, c),
            labels=self.data.labels[:n],
        )

    def loss(self, n: int | None = None) -> np.ndarray:
        """float64 (n,): each of the first ``n`` images' cross-entropy under all ops (nats)."""
        n = self._images(n)
        self._ensure(np.zeros((0, *MASK_SHAPE), dtype=np.uint8), n)
        assert self._loss is not None
        return self._loss[:n].copy()

    def stored_masks(self) -> np.ndarray:
        """uint8 (M, 17, 5): the effective masks kept now."""
        return np.stack([np.frombuffer(k, np.uint8).reshape(MASK_SHAPE) for k in self._rows]) if self._rows \
            else np.zeros((0, *MASK_SHAPE), dtype=np.uint8)


def write_outcomes(
    path: str | os.PathLike, key: dict[str, Any], masks: np.ndarray, prediction: np.ndarray, confidence: np.ndarray,
    probs: np.ndarray, loss: np.ndarray,
) -> None:
    """Write one outcomes file atomically (no pickled objects); ``key`` holds ``scored_images``."""
    arrays = {"masks": np.asarray(masks, np.uint8), "prediction": np.asarray(prediction, np.int16),
              "confidence": np.asarray(confidence, np.float32), "probs": np.asarray(probs, np.float16),
              "loss": np.asarray(loss, np.float32), "key": np.array(json.dumps(key))}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def read_outcomes(path: str | os.PathLike, key: dict[str, Any] | None) -> tuple[dict[str, np.ndarray], int] | None:
    """The arrays of the outcomes file ``path`` and its image count n, or None when its key differs
    from ``key`` (stale; None: any key). A damaged file raises
    :class:`~instanas_gym.utils.files.FileFormatError` naming it."""
    path = Path(path)
    hint = "delete it to have it computed again"
    try:
        with np.load(path, allow_pickle=False) as f:
            stored = json.loads(str(f["key"]))
            arrays = {name: f[name] for name in ARRAYS}
    except FileNotFoundError:
        raise
    except Exception as err:  # any failure to parse the file means it is damaged
        raise FileFormatError(f"{path} is not a readable outcomes file ({type(err).__name__}: {err}); {hint}") from None
    if not isinstance(stored, dict) or stored.get("format") != OUTCOMES_FORMAT:
        raise FileFormatError(f"{path} is not an outcomes file of format {OUTCOMES_FORMAT}; {hint}")
    if key is not None and any(stored.get(name) != value for name, value in key.items()):
        return None
    _check_arrays(path, stored, arrays, hint)
    return arrays, int(stored["scored_images"])


def _check_arrays(path: Path, stored: dict[str, Any], a: dict[str, np.ndarray], hint: str) -> None:
    """Refuse arrays that do not fit together or hold impossible values."""
    n = stored.get("scored_images")
    images = stored.get("images")
    m = len(a["masks"])
    problem = None
    if not isinstance(n, int) or not isinstance(images, int) or not 0 < n <= images:
        problem = f"scored_images {n!r} is not in [1, images={images!r}]"
    elif a["masks"].shape != (m, *MASK_SHAPE) or ((a["masks"] != 0) & (a["masks"] != 1)).any():
        problem = f"masks are not 0/1 of shape (M, {MASK_SHAPE[0]}, {MASK_SHAPE[1]})"
    elif a["prediction"].shape != (m, n) or a["confidence"].shape != (m, n) or a["loss"].shape != (n,):
        problem = f"prediction, confidence ({m}, {n}) and loss ({n},) expected"
    elif a["probs"].ndim != 3 or a["probs"].shape[:2] != (m, n):
        problem = f"probs ({m}, {n}, classes) expected"
    elif m and ((a["prediction"] < 0) | (a["prediction"] >= a["probs"].shape[2])).any():
        problem = f"a prediction is outside [0, {a['probs'].shape[2]})"
    elif not (np.isfinite(a["confidence"]).all() and np.isfinite(a["loss"]).all() and np.isfinite(a["probs"]).all()):
        problem = "it holds values that are not finite"
    elif m and ((a["confidence"] < 0) | (a["confidence"] > 1)).any() or (a["loss"] < 0).any():
        problem = "a confidence is outside [0, 1] or a loss is negative"
    if problem:
        raise FileFormatError(f"{path} is damaged: {problem}; {hint}")
