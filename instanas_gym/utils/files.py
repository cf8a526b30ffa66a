"""Files on disk: atomic writes, and checked loaders that name the file in every error.

Writes go to a temporary file in the same folder, are flushed to disk (``fsync``) and renamed over
the target, so a crash leaves either the old file or the new one, never half of one; temporary files
left by a process killed mid-write are removed at the next write of the same file.

Reads never execute code: torch files load with ``weights_only=True`` (tensors and plain Python
containers only). A file that is missing raises :class:`FileNotFoundError`; one that exists but is
not what it should be raises :class:`FileFormatError`; both messages name the file, say what is
wrong and what to do.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any


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


def load_torch(path: str | os.PathLike, what: str, fmt: str, keys: Iterable[str] = (), hint: str = "") -> dict[str, Any]:
    """Load a torch file of format ``fmt`` safely (``weights_only=True``) and check its keys.

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
        raise FileFormatError(f"{path} is not a valid {what} (format {fmt!r} expected, found {found!r}); {hint}",
                              found if isinstance(obj, dict) and isinstance(found, str) else None)
    missing = [k for k in keys if k not in obj]
    if missing:
        raise FileFormatError(f"{path} is a damaged {what}: it lacks {missing}; {hint}")
    return obj


def load_json(path: str | os.PathLike, what: str, hint: str = "") -> dict[str, Any]:
    """Read a JSON object from ``path``; errors name the file (see module docstring)."""
    path = Path(path)
    _require_file(path, what, hint)
    try:
        obj = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FileFormatError(f"{path} is not a valid {what}: not valid JSON ({err}); {hint}") from None
    if not isinstance(obj, dict):
        raise FileFormatError(f"{path} is not a valid {what}: a JSON object expected, found a {type(obj).__name__}; {hint}")
    return obj
