"""What every command shares: parsing its settings and turning errors into one line and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import tyro

from instanas_gym.utils.files import FileFormatError

T = TypeVar("T")


def fail(prog: str, message: str, code: int) -> None:
    """Print ``prog: message`` on stderr and exit with ``code``."""
    print(f"{prog}: {message}", file=sys.stderr)
    raise SystemExit(code)


def parse(cls: type[T], argv: list[str], prog: str, description: str, default: T | None = None) -> T:
    """The settings ``cls`` from ``argv`` (tyro); a value a setting refuses exits 2 with its message."""
    try:
        extra = {} if default is None else {"default": default}
        return tyro.cli(cls, args=argv, prog=prog, description=description, **extra)
    except (ValueError, TypeError) as err:  # a __post_init__ check: the message names the setting
        fail(prog, str(err), 2)
        raise


@contextmanager
def reported(prog: str) -> Iterator[None]:
    """Run a command: a bad value found late exits 2, a missing or damaged file 1, Ctrl-C 130, each as one line."""
    try:
        yield
    except (FileNotFoundError, FileFormatError) as err:  # the message names the file and what to do
        fail(prog, str(err), 1)
    except (ValueError, TypeError) as err:
        fail(prog, str(err), 2)
    except KeyboardInterrupt:
        fail(prog, "interrupted", 130)
