"""A comparison's finished agent x seed results, kept so that a rerun reuses them, and what they are
keyed by: the comparison's settings and the contents of the files and data those settings name.

Each result (``out/<agent>_seed<seed>/result.json``) holds the settings it was computed with
(:func:`comparison_settings`): every setting of the comparison but the agents, seeds, threads and
output folder, and the SHA-256 of the supernet and latency table files, the family's masks and the
training and test splits (:func:`content_hashes`), as the outcomes store keys its answers. A rerun
reuses a result only when all of them match (:func:`finished_result`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instanas_gym.agents.router_file import resolve_family
from instanas_gym.envs.bandit import cached_split
from instanas_gym.space.data import data_sha256
from instanas_gym.utils.files import FileFormatError, file_sha256, load_json
from instanas_gym.utils.paths import BUNDLED_DATASET, default_latency_table, default_supernet
from instanas_gym.utils.run import flat_settings

if TYPE_CHECKING:
    from instanas_gym.judge.config import CompareConfig


def content_hashes(cfg: CompareConfig) -> dict[str, str | None]:
    """SHA-256 of what the settings name, so that a file replaced at the same path is told apart: the
    supernet's and the latency table's files, the family's masks (None where no family applies) and
    the training and test splits' images and labels."""
    env = cfg.env
    supernet = Path(env.supernet) if env.supernet else default_supernet(env.dataset)
    table = Path(env.latency_table) if env.latency_table else default_latency_table(env.dataset, env.latency_backend)
    family = None
    if env.family is not None or env.dataset == BUNDLED_DATASET:
        family = hashlib.sha256(resolve_family(env.family, env.dataset)[0].masks.tobytes()).hexdigest()
    root = env.data.root
    return {"supernet_sha256": file_sha256(supernet), "latency_table_sha256": file_sha256(table),
            "family_masks_sha256": family,
            "train_data_sha256": data_sha256(cached_split(env.dataset, env.train_split, root, env.data.download)),
            "test_data_sha256": data_sha256(cached_split(env.dataset, "test", root, env.data.download))}


def comparison_settings(cfg: CompareConfig) -> dict[str, Any]:
    """The settings an agent x seed's result depends on (``cfg`` without agents, seeds, threads and
    out), as JSON, and the contents they name (``"content"``: :func:`content_hashes`)."""
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("agents", "seeds", "run")}
    settings["run"] = {k: v for k, v in asdict(cfg.run).items() if k not in ("threads", "out")}
    settings["content"] = content_hashes(cfg)
    return json.loads(json.dumps(settings))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def finished_result(path: Path, settings: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, float]] | None:
    """The log rows and judgement stored in ``path`` (a :data:`RESULT_FILE`) by a comparison with the same
    ``settings`` and the same contents; None when there is none.

    A result of other settings, or of the same settings over other files (a supernet replaced at the
    same path, say), is refused, not recomputed: it is a finished run's output, which a rerun must not
    overwrite unasked, and mixing it with new results would report a comparison that never ran. The
    ValueError names the file and what differs; a damaged file raises FileFormatError naming it."""
    if not path.exists():
        return None
    hint = f"it is not reused: move {path.parent} out of the way to run this agent and seed again"
    stored = load_json(path, "comparison result", hint)
    before = stored.get("settings")
    if not isinstance(before, dict):
        raise FileFormatError(f"{path} is a damaged comparison result: 'settings' must be an object; {hint}")
    if before != settings:
        now, was = flat_settings(settings), flat_settings(before)
        diff = sorted(k for k in now.keys() | was.keys() if now.get(k) != was.get(k))
        raise ValueError(f"{path}: written by a comparison with other settings or files ({', '.join(diff[:8])}"
                         f"{', ...' if len(diff) > 8 else ''}); its results do not hold for this one: choose another "
                         f"out folder (--run.out), or move {path.parent} out of the way to run it again")
    rows, result = stored.get("rows"), stored.get("result")
    rows_ok = isinstance(rows, list) and all(isinstance(r, dict) and _number(r.get("env_steps")) and
                                              _number(r.get("reward")) for r in rows)
    if not rows_ok or not isinstance(result, dict) or not all(_number(v) for v in result.values()):
        raise FileFormatError(f"{path} is a damaged comparison result: 'rows' must be a list of log rows and "
                              f"'result' an object of finite numbers; {hint}")
    return rows, result
