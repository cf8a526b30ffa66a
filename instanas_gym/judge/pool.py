"""The best single architectures near each latency: the vertices of the static frontier of a pool of
static masks (:func:`~instanas_gym.space.family.static_pool`) scored on the first training images of
the search split. What a cascade is judged against besides the probes and its own family, and where
the bundled cascade family's candidates come from (``benchmarks/cascade_family.py``).

Scoring the pool is the slow part (300 architectures), so its vertices are kept in a small JSON file
beside the supernet, ``<stem>_pool_frontier_<split>.json`` (for the bundled supernet: in
``$INSTANAS_CACHE/outcomes/``, and shipped beside it), keyed by the supernet's bytes, the images, the
pool's latencies by the table and the pool's settings. A file with another key is computed again and
replaced; a damaged one is refused, naming it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from instanas_gym.envs.bandit import InstaNASBandit
from instanas_gym.judge.frontier import static_frontier
from instanas_gym.model.outcomes import OutcomeStore, outcomes_key
from instanas_gym.space.data import ImageSet
from instanas_gym.space.family import static_pool
from instanas_gym.space.masks import validate_mask
from instanas_gym.utils.files import FileFormatError, atomic_write_json
from instanas_gym.utils.paths import beside_checkpoint, rebuild_hint

#: Pool of static masks searched, and the search split's images they are scored on.
POOL_SIZE, POOL_IMAGES = 300, 2000
POOL_FORMAT = "instanas-pool-frontier-v1"


def pool_frontier(search: InstaNASBandit, size: int = POOL_SIZE, images: int = POOL_IMAGES,
                  seed: int = 0) -> tuple[list[str], np.ndarray]:
    """The vertices of the static frontier of ``size`` pool masks scored on the first ``images``
    images of ``search``'s split: (names, masks (V, 17, 5)), fastest first; read from the pool file
    when its key is current, else scored (answers kept in an outcomes file of their own, tag
    ``pool<images>``) and written."""
    names, masks = zip(*static_pool(search.table, size, seed))
    data = search.data
    subset = ImageSet(data.images[:images], data.labels[:images], data.spec, data.split, data.source)
    latency = np.asarray(search.table.network_ms(np.stack(masks)), dtype=np.float64)
    key = outcomes_key(search.supernet_path, subset) | {
        "format": POOL_FORMAT, "pool": len(masks), "seed": seed,
        "latency_sha256": hashlib.sha256(latency.tobytes()).hexdigest()}
    written, shipped = _paths(search.supernet_path, data.split)
    for path in dict.fromkeys([written, shipped]):
        stored = _read(path, key)
        if stored is not None:
            return stored
    accuracy = OutcomeStore(search.model, search.supernet_path, subset, tag=f"pool{len(subset)}").get(
        np.stack(masks)).correct.mean(1)
    vertices = static_frontier(latency, accuracy)[0]
    keep = [int(np.flatnonzero(latency == ms)[0]) for ms in vertices]
    found = [names[i] for i in keep], np.stack([masks[i] for i in keep])
    atomic_write_json(written, {"key": key, "names": found[0], "masks": found[1].tolist()})
    return found


def _paths(checkpoint: str | Path, split: str) -> tuple[Path, Path]:
    """Where the pool file is written, and where one ships beside the checkpoint."""
    name = f"{Path(checkpoint).stem}_pool_frontier_{split}.json"
    return beside_checkpoint(checkpoint, name, "outcomes"), Path(checkpoint).with_name(name)


def _read(path: Path, key: dict[str, Any]) -> tuple[list[str], np.ndarray] | None:
    """The vertices stored at ``path`` if the file exists and its key is ``key``; None otherwise."""
    if not path.is_file():
        return None
    hint = rebuild_hint(path, "the pool is scored again")
    try:
        stored = json.loads(path.read_text())
        if stored["key"] != key:
            return None
        names, masks = [str(n) for n in stored["names"]], validate_mask(np.asarray(stored["masks"]), batched=True)
    except (ValueError, KeyError, TypeError) as err:
        raise FileFormatError(f"{path} is not a readable pool frontier file ({type(err).__name__}); {hint}") from None
    if len(names) != len(masks) or not len(names):
        raise FileFormatError(f"{path} is damaged: {len(names)} names for {len(masks)} masks; {hint}")
    return names, masks.astype(np.uint8)
