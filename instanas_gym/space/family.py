"""A family of K architectures of one supernet, and its file: the arms of a categorical (K-way) action.

An :class:`ArchitectureFamily` holds K distinct masks (K, 17, 5), a name for each, optionally each
one's latency in ms by a latency table, the dataset and supernet it was chosen for, and free
metadata. :func:`save_family` writes it as JSON (format ``"instanas-family-v1"``)::

    {"format": "instanas-family-v1", "ops": [op names], "dataset": "fashion_mnist" | null,
     "supernet": "path/to/last.pt" | null, "meta": {...},
     "arms": [{"name": "MobileNetV2 path", "mask": [[0/1] x 5] x 17, "latency_ms": 0.372 | null}, ...]}

and :func:`load_family` reads it back; every error names the file and the field.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from instanas_gym.space.masks import (
    all_ops_mask,
    fastest_mask,
    flatten_mask,
    mobilenetv2_mask,
    one_op_masks,
    random_masks,
    single_op_mask,
    validate_mask,
)
from instanas_gym.space.search_space import FALLBACK_OP, OPS
from instanas_gym.utils.files import FileFormatError, atomic_write_text, load_json
from instanas_gym.utils.paths import BUNDLED_CASCADE_FAMILY, BUNDLED_DATASET

if TYPE_CHECKING:
    from instanas_gym.latency.table import LatencyTable

FAMILY_FORMAT = "instanas-family-v1"
HINT = "write one with instanas_gym.space.family.save_family"


@dataclass(frozen=True, eq=False)
class ArchitectureFamily:
    """K distinct architectures of one supernet, the arms a policy chooses among.

    Args:
        masks: (K, 17, 5) 0/1 masks, K >= 1, no two the same; stored as uint8.
        names: one name per arm; None: ``"arm 0"``, ``"arm 1"``, ...
        latency_ms: (K,) each arm's latency (ms, finite, >= 0) by the latency table the family was
            chosen with (say which in ``meta``); None when not known. For reading only: environments
            look each arm's latency up in their own table.
        dataset: the dataset the supernet was trained on ("fashion_mnist", ...), or None.
        supernet: the supernet checkpoint the family was chosen on (a path, as given), or None.
        meta: free plain data (numbers, strings, lists, dicts), kept as is.

    Raises ``ValueError`` (a wrong value) or ``TypeError`` (``dataset``, ``supernet`` not a string,
    ``meta`` not a dict) naming the field.
    """

    masks: np.ndarray
    names: tuple[str, ...] | None = None
    latency_ms: np.ndarray | None = None
    dataset: str | None = None
    supernet: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        masks = np.asarray(self.masks)
        if masks.ndim == 3 and len(masks) == 0:
            raise ValueError("masks: a family needs K >= 1 masks, got 0")
        masks = validate_mask(masks, batched=True, name="masks")
        flat = flatten_mask(masks)
        _, first, inverse = np.unique(flat, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        dupes = [i for i in range(len(masks)) if first[inverse[i]] != i]
        if dupes:
            raise ValueError(f"masks: arm {dupes[0]} repeats arm {first[inverse[dupes[0]]]}; a family's masks must differ")
        k = len(masks)
        names = tuple(f"arm {i}" for i in range(k)) if self.names is None else tuple(self.names)
        if len(names) != k or not all(isinstance(n, str) for n in names):
            raise ValueError(f"names: {k} strings expected (one per mask), got {len(names)} names {list(names)[:4]}")
        lat = None
        if self.latency_ms is not None:
            lat = np.asarray(self.latency_ms, dtype=np.float64)
            if lat.shape != (k,) or not np.isfinite(lat).all() or (lat < 0).any():
                raise ValueError(f"latency_ms: {k} finite values >= 0 expected (ms, one per mask), got {lat.tolist()}")
        for name in ("dataset", "supernet"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise TypeError(f"{name}: a string or None expected, got {getattr(self, name)!r}")
        if not isinstance(self.meta, dict):
            raise TypeError(f"meta: a dict expected, got {type(self.meta).__name__}")
        masks.setflags(write=False)
        object.__setattr__(self, "masks", masks)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "latency_ms", lat)

    @property
    def k(self) -> int:
        """The number of arms."""
        return len(self.masks)

    def __len__(self) -> int:
        return self.k

    def network_ms(self, table: LatencyTable) -> np.ndarray:
        """(K,) each arm's whole-network latency by ``table`` (ms), whatever ``latency_ms`` holds."""
        return np.asarray(table.network_ms(self.masks), dtype=np.float64).reshape(self.k)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as :func:`save_family` writes it."""
        lat = [None] * self.k if self.latency_ms is None else self.latency_ms.tolist()
        return {
            "format": FAMILY_FORMAT,
            "ops": [op.name for op in OPS],
            "dataset": self.dataset,
            "supernet": self.supernet,
            "meta": self.meta,
            "arms": [{"name": n, "mask": m.tolist(), "latency_ms": ms} for n, m, ms in zip(self.names, self.masks, lat)],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "family") -> ArchitectureFamily:
        """The family of :meth:`to_dict`'s data; ``FileFormatError`` names ``source`` and the field."""
        if data.get("format") != FAMILY_FORMAT:
            raise FileFormatError(f"{source}: field 'format' must be {FAMILY_FORMAT!r}, "
                                  f"found {data.get('format')!r:.80}; {HINT}")
        ops = [op.name for op in OPS]
        if data.get("ops") != ops:
            raise FileFormatError(f"{source}: field 'ops' must name the search space's ops in order, {ops}, found "
                                  f"{data.get('ops')!r:.120} (its masks' columns would mean other ops); {HINT}")
        for name in ("dataset", "supernet"):
            if data.get(name) is not None and not isinstance(data[name], str):
                raise FileFormatError(f"{source}: field {name!r} must be text or null, "
                                      f"found {data[name]!r:.80}; {HINT}")
        if not isinstance(data.get("meta") or {}, dict):
            raise FileFormatError(f"{source}: field 'meta' must be an object, found {data.get('meta')!r:.80}; {HINT}")
        arms = data.get("arms")
        if not isinstance(arms, list) or not arms:
            raise FileFormatError(f"{source}: field 'arms' must be a list of K >= 1 arms, found {arms!r:.80}; {HINT}")
        masks, names, lat = [], [], []
        for i, arm in enumerate(arms):
            if not isinstance(arm, dict) or "mask" not in arm:
                raise FileFormatError(f"{source}: field 'arms[{i}]' must be an object with a 'mask'; {HINT}")
            try:
                masks.append(validate_mask(arm["mask"], name=f"field 'arms[{i}].mask'"))
            except ValueError as err:
                raise FileFormatError(f"{source}: {err}; {HINT}") from None
            names.append(arm.get("name", f"arm {i}"))
            lat.append(arm.get("latency_ms"))
        if any(v is None for v in lat) and not all(v is None for v in lat):
            raise FileFormatError(f"{source}: field 'arms[*].latency_ms' must be given for every arm or none; {HINT}")
        try:
            return cls(np.stack(masks), tuple(names), None if lat[0] is None else np.asarray(lat, dtype=np.float64),
                       data.get("dataset"), data.get("supernet"), data.get("meta") or {})
        except (TypeError, ValueError) as err:
            raise FileFormatError(f"{source}: field {err}; {HINT}") from None


def save_family(path: str | os.PathLike, family: ArchitectureFamily) -> None:
    """Write ``family`` as JSON at ``path`` atomically (format ``"instanas-family-v1"``)."""
    if not isinstance(family, ArchitectureFamily):
        raise TypeError(f"family must be an ArchitectureFamily, got {type(family).__name__}")
    text = json.dumps(family.to_dict(), indent=1, allow_nan=False)
    atomic_write_text(path, re.sub(r"\[\s*([01](?:,\s*[01])*)\s*\]", _one_line, text))  # a mask row per line


def _one_line(row: re.Match) -> str:
    return "[" + ", ".join(re.findall(r"[01]", row.group(1))) + "]"


def load_family(path: str | os.PathLike) -> ArchitectureFamily:
    """The family in the file ``path`` (of :func:`save_family`); errors name the file and the field."""
    path = Path(path)
    return ArchitectureFamily.from_dict(load_json(path, "architecture family file", HINT), str(path))


def check_family_dataset(family: ArchitectureFamily, dataset: str, source: Any = None) -> None:
    """Refuse a family chosen for another data set's supernet (when it names one); ``source``: the
    family as given (its file, when a path, is named)."""
    if family.dataset is not None and family.dataset != dataset:
        where = f" {source}" if isinstance(source, (str, os.PathLike)) else ""
        raise ValueError(f"family{where}: its architectures are of a {family.dataset} supernet, this one is {dataset}")


def as_family(family: ArchitectureFamily | str | os.PathLike) -> ArchitectureFamily:
    """A family from itself or from the path of its file."""
    if isinstance(family, ArchitectureFamily):
        return family
    if isinstance(family, (str, os.PathLike)):
        return load_family(family)
    raise TypeError(f"family must be an ArchitectureFamily or the path of a family file, got {type(family).__name__}")


#: Keep probabilities of the probe set's Bernoulli masks (two masks each).
PROBE_KEEP = (0.15, 0.3, 0.45, 0.6, 0.7)

def probe_masks(table: LatencyTable, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """A fixed set of 18 named masks spanning the latency range, the same for the same ``seed``:
    MobileNetV2 path, all ops, basic-block-only, the fastest valid mask by ``table``'s ms, four
    single-op random masks and two Bernoulli masks per keep probability in :data:`PROBE_KEEP`."""
    rng = np.random.default_rng(seed)
    probes = [
        ("mobilenetv2", mobilenetv2_mask()),
        ("all_ops", all_ops_mask()),
        ("basic_only", single_op_mask(FALLBACK_OP)),
        ("fastest", fastest_mask(table.ops_ms, table.empty_ms)),
    ]
    probes += [(f"single_op_{i}", m) for i, m in enumerate(one_op_masks(rng, 4))]
    for p in PROBE_KEEP:
        probes += [(f"bernoulli_{p:.2f}_{i}", m) for i, m in enumerate(random_masks(rng, 2, p))]
    return probes


def uniform_paths(table: LatencyTable) -> list[tuple[str, np.ndarray]]:
    """The five same-op-everywhere paths (``"path_<op>"``: one op in every cell), fastest first by ``table``."""
    paths = [(f"path_{op.name}", single_op_mask(j)) for j, op in enumerate(OPS)]
    return sorted(paths, key=lambda named: float(np.asarray(table.network_ms(named[1]))))


def default_cascade_family(dataset: str, space: Any, table: LatencyTable) -> ArchitectureFamily:
    """The family a cascade chooses among when none is given: the one shipped for the bundled data set
    (chosen on its static frontier, ``benchmarks/README.md``), else three architectures every supernet
    has: the fastest same-op path, the MobileNetV2 path and all ops."""
    if dataset == BUNDLED_DATASET and BUNDLED_CASCADE_FAMILY.is_file():
        return load_family(BUNDLED_CASCADE_FAMILY)
    fastest_name, fastest = uniform_paths(table)[0]
    named = {fastest_name: fastest, "mobilenetv2": mobilenetv2_mask(), "all_ops": all_ops_mask()}
    masks = {m.tobytes(): (n, m) for n, m in named.items()}  # the fastest path may be the MobileNetV2 path
    names, arrays = zip(*masks.values())
    return ArchitectureFamily(np.stack(arrays), names, dataset=dataset)


def static_pool(table: LatencyTable, n: int = 300, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """``n`` distinct static architectures spanning the latency range, the same for the same ``seed``:
    the 18 probes (:func:`probe_masks`), the five same-op paths, then single-op masks and Bernoulli
    masks of keep probabilities evenly spread over [0.1, 0.9] (names ``pool_<i>``). What a search
    for the best single architecture near a latency budget scores."""
    rng = np.random.default_rng([seed, 1])
    pool = {m.tobytes(): (name, m) for name, m in probe_masks(table, seed) + uniform_paths(table)}
    i = 0
    while len(pool) < n:
        mask = one_op_masks(rng, 1)[0] if i % 4 == 0 else random_masks(rng, 1, 0.1 + 0.8 * rng.random())[0]
        pool.setdefault(mask.tobytes(), (f"pool_{i}", mask))
        i += 1
    return list(pool.values())[:n]
