"""Files on disk: atomic writes, and checked loaders that name the file in every error.

Writes go to a temporary file in the same folder, are flushed to disk (``fsync``) and renamed over
the target, so a crash leaves either the old file or the new one, never half of one; temporary files
left by a process killed mid-write are removed at the next write of the same file.

Reads never execute code: torch files load with ``weights_only=True`` (tensors and plain Python
containers only). A torch file in torch's zip format is checked against the CRC-32 that the zip
stores for each of its members before it is loaded, so a file damaged after it was written (flipped
bits, a bad copy) is refused rather than loaded with changed weights. A file that is missing raises
:class:`FileNotFoundError`; one that exists but is not what it should be raises
:class:`FileFormatError`; both messages name the file, say what is wrong and what to do.

torch is imported only where a torch file is read or written: the ONNX Runtime engine uses the
JSON loader and the error type without it.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import pickle
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

#: Largest JSON file read (bytes): every JSON file the package writes is far smaller.
MAX_JSON_BYTES = 64 << 20


class FileFormatError(ValueError):
    """A file exists but is not a valid file of the kind expected (the message names it).
    ``found_format``: the format tag the file holds, where it is a readable file of another format."""

    def __init__(self, message: str, found_format: str | None = None) -> None:
        super().__init__(message)
        self.found_format = found_format


def _remove_stray_temps(path: Path) -> None:
    for stray in path.parent.glob(f"{path.name}*.tmp"):
        stray.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temporary binary file beside ``path``, fsync it, rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stray_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself reaches the disk
    finally:
        os.close(dir_fd)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` atomically (see :func:`atomic_write`)."""
    import torch  # here, not at the top: the command line imports this module to parse its settings

    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically; NaN and infinities are refused."""
    atomic_write_text(path, json.dumps(obj, indent=1, allow_nan=False))


def _require_file(path: Path, what: str, hint: str) -> None:
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "nothing"
        raise FileNotFoundError(f"no {what} at {path} ({kind} there); {hint}")


def zip_damage(path: Path) -> str | None:
    """What is wrong with the zip archive at ``path`` (torch's file format): the first member whose
    bytes do not match the CRC-32 stored for it, a header that does not fit, or a compressed member
    (torch writes none, and one could expand to any size); None when every member matches. The
    members are checked in place (memory mapped)."""
    with open(path, "rb") as f, zipfile.ZipFile(f) as archive, \
            mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                return f"member {info.filename!r} is compressed, which torch never writes"
            header = data[info.header_offset : info.header_offset + zipfile.sizeFileHeader]
            if len(header) != zipfile.sizeFileHeader or header[:4] != zipfile.stringFileHeader:
                return f"the local header of member {info.filename!r} is damaged"
            name_len, extra_len = struct.unpack("<2H", header[26:30])
            start = info.header_offset + zipfile.sizeFileHeader + name_len + extra_len
            if data[start - extra_len - name_len : start - extra_len] != info.orig_filename.encode():
                return f"the local header of member {info.filename!r} does not name it"
            end = start + info.compress_size
            if end > len(data) or zlib.crc32(data[start:end]) != info.CRC:
                return f"member {info.filename!r} does not match the checksum stored with it"
    return None


def _check_integrity(path: Path, what: str, hint: str) -> None:
    """Refuse a zip-format torch file whose members do not match their stored CRC-32 (older torch
    files, plain pickles, are not zips and carry no checksum)."""
    if not zipfile.is_zipfile(path):
        return
    try:
        problem = zip_damage(path)
    except Exception as err:  # any failure to parse the archive means it is damaged
        problem = f"its zip structure is unreadable ({type(err).__name__}: {err})"
    if problem is not None:
        raise FileFormatError(f"{path} is a damaged {what}: {problem} (it changed after it was written); {hint}")


def load_torch(path: str | os.PathLike, what: str, fmt: str, keys: Iterable[str] = (), hint: str = "") -> dict[str, Any]:
    """Load a torch file of format ``fmt`` safely (``weights_only=True``, checksums verified first)
    and check its keys.

    Args:
        path: the file.
        what: what the file should be, for messages ("supernet checkpoint").
        fmt: the value its ``"format"`` key must hold.
        keys: keys it must have besides ``"format"``.
        hint: what to do if it is missing or broken (a command), appended to the messages.
    """
    import torch

    path = Path(path)
    _require_file(path, what, hint)
    if path.stat().st_size == 0:
        raise FileFormatError(f"{path} is empty, not a valid {what}; {hint}")
    _check_integrity(path, what, hint)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FileFormatError(
            f"{path} is not a valid {what}: it holds objects other than tensors and plain data, or is not a "
            f"torch file at all, and is not loaded (that could run code) ({first}); {hint}"
        ) from None
    except Exception as err:  # any failure to parse the file means it is damaged
        raise FileFormatError(
            f"{path} is not a readable {what} (truncated or corrupt: {type(err).__name__}: {err}); {hint}"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise FileFormatError(f"{path} is not a valid {what} (format {fmt!r} expected, found {found!r:.80}); {hint}",
                              found if isinstance(obj, dict) and isinstance(found, str) else None)
    missing = [k for k in keys if k not in obj]
    if missing:
        raise FileFormatError(f"{path} is a damaged {what}: it lacks {missing}; {hint}")
    return obj


def check_weights(path: str | os.PathLike, state: Any, what: str, hint: str = "") -> None:
    """Refuse a state dict (name -> tensor, from the file ``path``) that is not one, or whose
    floating-point weights are not all finite; the message names the file and the first bad tensor."""
    import torch

    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FileFormatError(f"{path} is a damaged {what}: its weights are not a dict of tensors; {hint}")
    floats = [t.reshape(-1) for t in state.values() if t.is_floating_point()]
    if not floats or bool(torch.isfinite(torch.cat(floats)).all()):
        return  # one pass over every weight; the loop below only names the first bad one
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise FileFormatError(f"{path} is a damaged {what}: weights {name!r} hold NaN or infinite values; {hint}")


def build_module(make: Callable[[], Any], state: dict[str, Any]) -> Any:
    """``make()`` (a torch module) with the weights ``state`` loaded: first built on the meta device,
    where it takes no memory, and refused (ValueError) unless its weights' names and shapes are those
    of ``state``, so a file's settings cannot make it allocate more than the file holds."""
    import torch

    with torch.device("meta"):
        shell = make()
    want = {k: tuple(v.shape) for k, v in shell.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    if want != have:
        diff = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))[:3]
        raise ValueError("its settings and its weights do not fit together ("
                         + ", ".join(f"{k}: settings {want.get(k)} vs weights {have.get(k)}" for k in diff) + ")")
    module = make()
    module.load_state_dict(state)
    return module


def check_finite_numbers(path: str | os.PathLike, value: Any, field: str, positive: bool = False) -> list[float]:
    """``value`` (a list of numbers from the file ``path``) as floats, each finite (and > 0 with
    ``positive``); FileFormatError naming the file and ``field`` otherwise."""
    ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive)
        for v in value)
    if not ok:
        kind = "positive finite numbers" if positive else "finite numbers"
        raise FileFormatError(f"{path}: {field} must be a non-empty list of {kind}, found {value!r:.80}")
    return [float(v) for v in value]


def load_json(path: str | os.PathLike, what: str, hint: str = "") -> dict[str, Any]:
    """Read a JSON object from ``path``; errors name the file (see module docstring). Files over
    :data:`MAX_JSON_BYTES`, nesting too deep for the parser and numbers too long to convert are
    refused as damaged."""
    path = Path(path)
    _require_file(path, what, hint)
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise FileFormatError(f"{path} is not a valid {what}: {size} bytes, more than any such file holds "
                              f"({MAX_JSON_BYTES}); {hint}")
    try:
        obj = json.loads(path.read_bytes())
    except (UnicodeDecodeError, ValueError, RecursionError) as err:  # ValueError: JSONDecodeError, huge ints
        raise FileFormatError(f"{path} is not a valid {what}: not valid JSON ({type(err).__name__}: {err}); "
                              f"{hint}") from None
    if not isinstance(obj, dict):
        raise FileFormatError(f"{path} is not a valid {what}: a JSON object expected, found a {type(obj).__name__}; {hint}")
    return obj
