"""The deploy folder's ``manifest.json``: what :func:`~instanas_gym.deploy.export.export_model` writes
and :class:`~instanas_gym.deploy.engine.InstaNASModel` (and so the demo) reads, checked field by field.

A manifest (format :data:`MANIFEST_FORMAT`) is a JSON object::

    {"format": "instanas-deploy-v1", "image_shape": [H, W, C], "num_classes": N,
     "controller": "controller.onnx", "opset": 17, "batchnorm": "shared",
     "architectures": [{"file": "arch_<key>.onnx", "mask": [[0/1] x 5] x 17, "share": 0.25}, ...],
     ...free keys of ``extra``}

Every file it names is a relative path that stays inside the folder: no absolute paths, no ``..``,
no symbolic link that leads out of it. A manifest that breaks any rule raises
:class:`~instanas_gym.utils.files.FileFormatError` naming the file and the field; a file it names
that is not there raises :class:`FileNotFoundError` naming both.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from instanas_gym.space.search_space import MASK_SHAPE
from instanas_gym.utils.files import FileFormatError, load_json

MANIFEST_FORMAT = "instanas-deploy-v1"
MANIFEST_FILE = "manifest.json"
HINT = "write the folder again with instanas_gym.deploy.export.export_model"
#: Largest image side (pixels) and channel count a manifest may declare.
MAX_IMAGE_SIDE, MAX_CHANNELS = 4096, 4
#: Largest class count a manifest may declare.
MAX_CLASSES = 100_000


def _fail(path: Path, field: str, problem: str) -> FileFormatError:
    return FileFormatError(f"{path}: field {field!r} {problem}; {HINT}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def member(folder: Path, name: Any, path: Path, field: str) -> Path:
    """The file ``name`` (a manifest's field ``field``) as a resolved path inside ``folder``:
    FileFormatError for a name that is not a relative path staying in the folder (symbolic links
    followed), FileNotFoundError when nothing is there."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise _fail(path, field, f"must be a file name in the folder, found {name!r:.80}")
    if os.path.isabs(name) or ".." in Path(name).parts:
        raise _fail(path, field, f"must be a relative path inside the folder, found {name!r:.80}")
    root = folder.resolve()
    target = (folder / name).resolve()
    if not target.is_relative_to(root):
        raise _fail(path, field, f"{name!r:.80} leads outside the folder (to {target})")
    if not target.is_file():
        raise FileNotFoundError(f"{path} names {name!r} in field {field!r}, but there is no such file in {folder}; "
                                f"{HINT}")
    return target


def _check_mask(value: Any, path: Path, field: str) -> None:
    rows, cols = MASK_SHAPE
    ok = isinstance(value, list) and len(value) == rows and all(
        isinstance(row, list) and len(row) == cols and all(_is_int(v) and v in (0, 1) for v in row) for row in value)
    if not ok:
        raise _fail(path, field, f"must be {rows} lists of {cols} integers 0 or 1, found {value!r:.80}")


def _check_architectures(archs: Any, path: Path) -> None:
    if not isinstance(archs, list) or not archs:
        raise _fail(path, "architectures", f"must be a non-empty list, found {archs!r:.80}")
    seen: dict[str, int] = {}
    for i, arch in enumerate(archs):
        field = f"architectures[{i}]"
        if not isinstance(arch, dict) or not {"file", "mask", "share"} <= arch.keys():
            raise _fail(path, field, "must be an object with 'file', 'mask' and 'share'")
        _check_mask(arch["mask"], path, f"{field}.mask")
        share = arch["share"]
        if not isinstance(share, (int, float)) or isinstance(share, bool) or not math.isfinite(share) \
                or not 0 <= share <= 1:
            raise _fail(path, f"{field}.share", f"must be a number in [0, 1], found {share!r:.80}")
        key = str(arch["mask"])
        if key in seen:
            raise _fail(path, f"{field}.mask", f"repeats architectures[{seen[key]}].mask")
        seen[key] = i


def check_manifest(manifest: dict[str, Any], path: Path) -> None:
    """Refuse a manifest (read from ``path``) that breaks the schema of the module docstring (the
    files it names are checked by :func:`member`)."""
    if manifest.get("format") != MANIFEST_FORMAT:
        raise _fail(path, "format", f"must be {MANIFEST_FORMAT!r}, found {manifest.get('format')!r:.80}")
    shape = manifest.get("image_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(v) for v in shape)
            and 1 <= shape[0] <= MAX_IMAGE_SIDE and 1 <= shape[1] <= MAX_IMAGE_SIDE and 1 <= shape[2] <= MAX_CHANNELS):
        raise _fail(path, "image_shape", f"must be [H, W, C], sides in [1, {MAX_IMAGE_SIDE}], "
                                         f"C in [1, {MAX_CHANNELS}], found {shape!r:.80}")
    classes = manifest.get("num_classes")
    if not _is_int(classes) or not 1 <= classes <= MAX_CLASSES:
        raise _fail(path, "num_classes", f"must be an integer in [1, {MAX_CLASSES}], found {classes!r:.80}")
    opset, batchnorm = manifest.get("opset"), manifest.get("batchnorm")
    if opset is not None and not _is_int(opset):
        raise _fail(path, "opset", f"must be an integer, found {opset!r:.80}")
    if batchnorm is not None and batchnorm != "shared" and not (
            isinstance(batchnorm, dict) and batchnorm.get("statistics") == "own"):
        raise _fail(path, "batchnorm", f"must be \"shared\" or an object with \"statistics\": \"own\", "
                                       f"found {batchnorm!r:.80}")
    _check_architectures(manifest.get("architectures"), path)


def read_manifest(folder: str | os.PathLike) -> tuple[dict[str, Any], Path, list[Path]]:
    """The checked manifest of the deploy folder ``folder``, the controller's file and each
    architecture's file (in the order of ``manifest["architectures"]``), resolved inside the folder."""
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST_FILE} in {folder}; {HINT}")
    manifest = load_json(path, "instanas-gym deployment manifest", HINT)
    check_manifest(manifest, path)
    controller = member(folder, manifest.get("controller"), path, "controller")
    files = [member(folder, a["file"], path, f"architectures[{i}].file")
             for i, a in enumerate(manifest["architectures"])]
    return manifest, controller, files
