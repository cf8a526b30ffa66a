"""Lookup mode: every image's outcome under every arm of a family, computed once, then looked up.

For a family of K architectures (:class:`~instanas_gym.space.family.ArchitectureFamily`) and one split of N
images, the supernet's answer to each (arm, image) pair (the prediction and its softmax
confidence; right or wrong follows from the label) does not change between episodes: :class:`FamilyLookup`
computes the (K, N) table once, batched (a progress bar shows it), stores it in an ``.npz`` file beside
the family file (``<family>_outcomes_<split>.npz``), and from then on answers an (image, arm) pair by
a lookup. Rewards and infos still come from :meth:`~instanas_gym.envs.bandit.InstaNASBandit.outcome`, the
live environment's code, with each arm's latency from the bandit's current latency table and the
reward's current (annealed) bounds: a lookup step returns what a live step returns.

The outcomes file holds its key: the SHA-256 of the supernet checkpoint, the dataset, the split, the
SHA-256 of the split's images and labels, and of the family's masks. A file whose key differs from
the environment's is stale and is refused (:class:`~instanas_gym.utils.files.FileFormatError` naming the
file and what differs); ``rebuild=True`` recomputes it. The latency table is not part of the key:
latencies are looked up in it at every step, so any table (or a calibrated one) serves the same file.

Scores, for judging: which images of a split each of any set of architectures gets right, and each
image's loss under all ops (what :mod:`instanas_gym.judge.awareness` computes to place a policy
against the static frontier), stored beside the supernet checkpoint
(``<supernet>_scores_<split>.npz``, :func:`save_scores`), keyed like the outcomes (supernet, split,
images) and holding its masks; the bundled supernet ships those of the 18 probe architectures and
the bundled family on the test split.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from instanas_gym.envs.bandit import InstaNASBandit
from instanas_gym.latency import LatencyTable
from instanas_gym.model.supernet import Supernet
from instanas_gym.space.data import ImageSet
from instanas_gym.space.family import ArchitectureFamily
from instanas_gym.space.masks import validate_mask
from instanas_gym.utils.checks import check_int
from instanas_gym.utils.files import FileFormatError, atomic_write
from instanas_gym.utils.runlog import progress_bar

OUTCOMES_FORMAT = "instanas-outcomes-v1"
SCORES_FORMAT = "instanas-scores-v1"
ARRAYS = ("prediction", "confidence", "correct")


def _sha256(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def split_key(bandit: InstaNASBandit, fmt: str) -> dict[str, Any]:
    """What any stored answer of the bandit's supernet on its split depends on: the supernet file and
    the split's images and labels (``fmt``: the file format's name, kept with them)."""
    if bandit.supernet_path is None:
        raise ValueError("stored outcomes need the supernet as a checkpoint file (supernet=PATH), not a Supernet object")
    data = bandit.data
    return {
        "format": fmt,
        "supernet": str(bandit.supernet_path),
        "supernet_sha256": file_sha256(bandit.supernet_path),
        "dataset": bandit.dataset,
        "split": bandit.split,
        "images": len(data),
        "data_sha256": _sha256(np.ascontiguousarray(data.images).tobytes(), np.ascontiguousarray(data.labels).tobytes()),
    }


def outcomes_key(bandit: InstaNASBandit, family: ArchitectureFamily) -> dict[str, Any]:
    """What an outcomes table depends on: the supernet file, the data split and the family's masks."""
    return split_key(bandit, OUTCOMES_FORMAT) | {
        "arms": family.k, "masks_sha256": _sha256(np.ascontiguousarray(family.masks).tobytes())}


def outcomes_path(family_path: str | os.PathLike, split: str) -> Path:
    """Where the outcomes of the family in ``family_path`` on ``split`` are stored: beside it."""
    path = Path(family_path)
    return path.with_name(f"{path.stem}_outcomes_{split}.npz")


def compute_outcomes(
    bandit: InstaNASBandit, family: ArchitectureFamily, batch_size: int = 256, progress: bool = True
) -> dict[str, np.ndarray]:
    """Run every arm of ``family`` on every image of the bandit's split, ``batch_size`` images per
    supernet call: ``prediction`` int64 (K, N), ``confidence`` float64 (K, N) and ``correct`` bool (K, N)."""
    batch_size = check_int("batch_size", batch_size)
    n, k = bandit.num_images, family.k
    prediction, confidence = np.zeros((k, n), dtype=np.int64), np.zeros((k, n), dtype=np.float64)
    with progress_bar(disable=not progress) as bar:
        task = bar.add_task(f"outcomes of {k} arms on {n} {bandit.split} images", total=k * n, stats="")
        for arm, mask in enumerate(family.masks):
            for start in range(0, n, batch_size):
                idx = np.arange(start, min(start + batch_size, n))
                prediction[arm, idx], confidence[arm, idx] = bandit.classify(idx, np.repeat(mask[None], len(idx), 0))
                bar.advance(task, len(idx))
    return {"prediction": prediction, "confidence": confidence, "correct": prediction == bandit.data.labels[None]}


def save_outcomes(path: str | os.PathLike, outcomes: dict[str, np.ndarray], key: dict[str, Any]) -> None:
    """Write the outcome arrays and their key as one ``.npz`` file, atomically (no pickled objects)."""
    arrays = {"prediction": outcomes["prediction"].astype(np.int16), "confidence": outcomes["confidence"].astype(np.float32),
              "correct": outcomes["correct"].astype(bool), "key": np.array(json.dumps(key))}
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _load_keyed(
    path: Path, key: dict[str, Any], names: tuple[str, ...], what: str, hint: str
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The stored key and the arrays ``names`` of the ``.npz`` file ``path`` of format ``key["format"]``,
    if its key matches ``key`` (but for the supernet's path); raises
    :class:`~instanas_gym.utils.files.FileFormatError` naming the file when it is damaged or stale."""
    try:
        with np.load(path, allow_pickle=False) as f:
            stored = json.loads(str(f["key"]))
            arrays = {name: f[name] for name in names}
    except FileNotFoundError:
        raise
    except Exception as err:  # any failure to parse the file means it is damaged
        raise FileFormatError(f"{path} is not a readable {what} file ({type(err).__name__}: {err}); {hint}") from None
    if not isinstance(stored, dict) or stored.get("format") != key["format"]:
        raise FileFormatError(f"{path} is not of the {what} format {key['format']}; {hint}")
    differ = [name for name in key if name != "supernet" and stored.get(name) != key[name]]
    if differ:
        detail = ", ".join(f"{name} {stored.get(name)!r:.20} there, {key[name]!r:.20} here" for name in differ)
        raise FileFormatError(f"{path} is stale: its {what} were computed for another {', '.join(differ)} "
                              f"(supernet {stored.get('supernet')}; {detail}); {hint}")
    return stored, arrays


def load_outcomes(path: str | os.PathLike, key: dict[str, Any]) -> dict[str, np.ndarray]:
    """The outcome arrays in ``path`` if its key is ``key``; a stale or damaged file raises
    :class:`~instanas_gym.utils.files.FileFormatError` naming it (and, when stale, what differs)."""
    path = Path(path)
    hint = "delete it or pass rebuild=True to recompute it"
    _, arrays = _load_keyed(path, key, ARRAYS, "outcomes", hint)
    shape = (key["arms"], key["images"])
    if any(arrays[name].shape != shape for name in ARRAYS):
        raise FileFormatError(f"{path} is damaged: its arrays are not ({shape[0]} arms, {shape[1]} images); {hint}")
    return {"prediction": arrays["prediction"].astype(np.int64), "confidence": arrays["confidence"].astype(np.float64),
            "correct": arrays["correct"].astype(bool)}


def scores_path(supernet_path: str | os.PathLike, split: str) -> Path:
    """Where the scores of architectures of the supernet in ``supernet_path`` on ``split`` are stored: beside it."""
    path = Path(supernet_path)
    return path.with_name(f"{path.stem}_scores_{split}.npz")


def save_scores(path: str | os.PathLike, masks: np.ndarray, correct: np.ndarray, loss: np.ndarray,
                key: dict[str, Any]) -> None:
    """Write scores atomically: ``masks`` (M, 17, 5) uint8, ``correct`` bool (M, n), whether mask m is
    right on image i of the first n of the split; ``loss`` (n,), each image's all-ops cross-entropy
    (nats); ``key``: :func:`split_key` with format :data:`SCORES_FORMAT`."""
    masks, correct, loss = np.asarray(masks, dtype=np.uint8), np.asarray(correct, dtype=bool), np.asarray(loss)
    if masks.shape[1:] != (17, 5) or correct.shape != (len(masks), len(loss)) or not 0 < len(loss) <= key["images"]:
        raise ValueError(f"scores: masks (M, 17, 5), correct (M, n) and loss (n,) with 0 < n <= {key['images']} "
                         f"expected, got {masks.shape}, {correct.shape}, {loss.shape}")
    arrays = {"masks": masks, "correct": np.packbits(correct, axis=1), "loss": loss.astype(np.float32),
              "key": np.array(json.dumps(key | {"scored_images": len(loss)}))}
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def load_scores(path: str | os.PathLike, key: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scores in ``path`` (``masks`` uint8 (M, 17, 5), ``correct`` bool (M, n), ``loss`` float64 (n,))
    if its key is ``key``; a stale or damaged file raises :class:`~instanas_gym.utils.files.FileFormatError`
    naming it (and, when stale, what differs)."""
    path = Path(path)
    hint = "delete it to score the architectures again"
    stored, arrays = _load_keyed(path, key, ("masks", "correct", "loss"), "scores", hint)
    masks, packed, loss = arrays["masks"], arrays["correct"], arrays["loss"]
    n = stored.get("scored_images")
    if (not isinstance(n, int) or masks.ndim != 3 or masks.shape[1:] != (17, 5) or loss.shape != (n,)
            or packed.shape != (len(masks), (n + 7) // 8)):
        raise FileFormatError(f"{path} is damaged: its arrays do not match its {n} scored images; {hint}")
    return masks.astype(np.uint8), np.unpackbits(packed, axis=1, count=n).astype(bool), loss.astype(np.float64)


@torch.no_grad()
def correct_per_image(
    model: Supernet, data: ImageSet, masks: np.ndarray | Callable[[int], np.ndarray], batch_size: int = 256
) -> np.ndarray:
    """Bool (N,): which images of ``data`` are classified right under one fixed mask (17, 5) or
    ``masks(n)`` per-image masks (eval mode, restored after), on the model's device."""
    was_training = model.training
    model.eval()
    images, labels = data.tensors()
    device = model.mean.device
    right = []
    for i in range(0, len(labels), batch_size):
        x = images[i : i + batch_size].to(device)
        m = masks(len(x)) if callable(masks) else masks
        right.append((model(x, m).argmax(1).cpu() == labels[i : i + batch_size]).numpy())
    model.train(was_training)
    return np.concatenate(right)


@torch.inference_mode()
def per_image_loss(model: Supernet, data: ImageSet, mask: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Cross-entropy (nats, float64 (N,)) of each image of ``data`` under one fixed mask (17, 5), in
    eval mode (the model's mode is restored after), on the model's device. With the all-ops mask: the
    images' difficulty."""
    mask = validate_mask(mask)
    was_training = model.training
    model.eval()
    images, labels = data.tensors()
    device = model.mean.device
    losses = [F.cross_entropy(model(images[i : i + batch_size].to(device), mask).float().cpu(),
                              labels[i : i + batch_size], reduction="none").numpy()
              for i in range(0, len(labels), batch_size)]
    model.train(was_training)
    return np.concatenate(losses).astype(np.float64) if losses else np.zeros(0)

def score_architectures(
    model: Supernet, data: ImageSet, table: LatencyTable, masks: np.ndarray, batch_size: int = 256,
    cache: dict[bytes, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each mask of ``masks`` (K, 17, 5) run alone on every image of ``data``: ``(correct bool (K, N),
    latency_ms (K,))``, the latter the table's latency of the whole network at batch 1 (ms).

    ``cache``: correctness vectors (N,) by the bytes of the uint8 mask, valid for this ``model`` and
    ``data`` only (the caller keeps them together): a mask found there is not run again, and each
    mask run is added. The result is the same with or without it."""
    masks = validate_mask(masks, batched=True)
    rows = []
    for m in masks:
        key = np.ascontiguousarray(m, dtype=np.uint8).tobytes()
        if cache is not None and key in cache:
            rows.append(cache[key])
            continue
        rows.append(correct_per_image(model, data, m, batch_size))
        if cache is not None:
            cache[key] = rows[-1]
    correct = np.array(rows, dtype=bool).reshape(len(masks), len(data))
    return correct, np.asarray(table.network_ms(masks), dtype=np.float64).reshape(len(masks))
