"""Lookup mode: every image's outcome under every arm of a family, computed once, then looked up.

For a family of K architectures (:class:`~instanas_gym.family.ArchitectureFamily`) and one split of N
images, the supernet's answer to each (arm, image) pair (the prediction and its softmax
confidence; right or wrong follows from the label) does not change between episodes: :class:`FamilyLookup`
computes the (K, N) table once, batched (a progress bar shows it), stores it in an ``.npz`` file beside
the family file (``<family>_outcomes_<split>.npz``), and from then on answers an (image, arm) pair by
a lookup. Rewards and infos still come from :meth:`~instanas_gym.bandit.InstaNASBandit.outcome`, the
live environment's code, with each arm's latency from the bandit's current latency table and the
reward's current (annealed) bounds: a lookup step returns what a live step returns.

The outcomes file holds its key: the SHA-256 of the supernet checkpoint, the dataset, the split, the
SHA-256 of the split's images and labels, and of the family's masks. A file whose key differs from
the environment's is stale and is refused (:class:`~instanas_gym.files.FileFormatError` naming the
file and what differs); ``rebuild=True`` recomputes it. The latency table is not part of the key:
latencies are looked up in it at every step, so any table (or a calibrated one) serves the same file.

Scores, for judging: which images of a split each of any set of architectures gets right, and each
image's loss under all ops (what :mod:`instanas_gym.agents.instance_aware` computes to place a policy
against the static frontier), stored beside the supernet checkpoint
(``<supernet>_scores_<split>.npz``, :func:`save_scores`), keyed like the outcomes (supernet, split,
images) and holding its masks; the bundled supernet ships those of the 18 probe architectures and
the bundled family on the test split.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from instanas_gym.bandit import InstaNASBandit
from instanas_gym.checks import check_int
from instanas_gym.family import ArchitectureFamily, as_family
from instanas_gym.files import FileFormatError, atomic_write
from instanas_gym.runlog import progress_bar

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
    :class:`~instanas_gym.files.FileFormatError` naming the file when it is damaged or stale."""
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
    :class:`~instanas_gym.files.FileFormatError` naming it (and, when stale, what differs)."""
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
    if its key is ``key``; a stale or damaged file raises :class:`~instanas_gym.files.FileFormatError`
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


class FamilyLookup(InstaNASBandit):
    """The bandit of a family's K arms in lookup mode: :meth:`evaluate_arms` answers by lookup.

    Args:
        family: an :class:`~instanas_gym.family.ArchitectureFamily` or the path of its file.
        outcomes: the outcomes file; None: :func:`outcomes_path` beside the family file (a family
            given as an object needs one).
        rebuild: recompute the outcomes even when the file exists (a stale file is refused otherwise).
        batch_size: images per supernet call while computing them.
        progress: show a progress bar while computing them.
        **bandit_kwargs: those of :class:`~instanas_gym.bandit.InstaNASBandit` (``supernet`` as a path).

    The outcomes are computed on first use (when the file is missing) and stored; the bandit's own
    :meth:`evaluate` still runs the supernet on any mask.
    """

    def __init__(
        self,
        family: ArchitectureFamily | str | os.PathLike,
        outcomes: str | os.PathLike | None = None,
        rebuild: bool = False,
        batch_size: int = 256,
        progress: bool = True,
        **bandit_kwargs: Any,
    ) -> None:
        self.family = as_family(family)
        if outcomes is None and isinstance(family, ArchitectureFamily):
            raise ValueError("outcomes: a family given as an object needs outcomes=PATH (where its outcomes are stored)")
        super().__init__(**bandit_kwargs)
        if self.family.dataset is not None and self.family.dataset != self.dataset:
            raise ValueError(f"family: its architectures are of a {self.family.dataset} supernet, this one is {self.dataset}")
        self.outcomes_path = Path(outcomes) if outcomes is not None else outcomes_path(family, self.split)  # type: ignore[arg-type]
        key = outcomes_key(self, self.family)
        if rebuild or not self.outcomes_path.is_file():
            self.outcomes = compute_outcomes(self, self.family, batch_size, progress)
            save_outcomes(self.outcomes_path, self.outcomes, key)
        else:
            self.outcomes = load_outcomes(self.outcomes_path, key)
        self._figures: tuple[Any, dict[str, np.ndarray]] | None = None

    def arm_figures(self) -> dict[str, np.ndarray]:
        """:meth:`arch_figures` of the K arms (K,), by the current table (recomputed when it changes,
        as :meth:`calibrate_latency` changes it)."""
        if self._figures is None or self._figures[0] is not self.table:
            self._figures = (self.table, self.arch_figures(self.family.masks))
        return self._figures[1]

    def evaluate_arms(self, indices: np.ndarray, arms: np.ndarray) -> dict[str, Any]:
        """:meth:`evaluate` of images ``indices`` (B,) under the family's masks ``arms`` (B,), by lookup:
        the same arrays and constants, from the stored outcomes and the current table and bounds."""
        arch = {name: value[arms] for name, value in self.arm_figures().items()}
        out = self.outcomes
        return self.outcome(indices, out["prediction"][arms, indices], out["confidence"][arms, indices], arch)
