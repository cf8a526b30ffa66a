"""Command lines from dataclasses of arguments: one flag per field, the field's default as the flag's."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")

_TYPES = {"int": int, "float": float, "str": str}


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """``--field-name`` for every field of ``cls`` (bool fields: ``--name`` / ``--no-name``)."""
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        kind = str(field.type).split(" ")[0]  # "int | None" -> "int"
        default = field.default
        if kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif kind in _TYPES:
            parser.add_argument(flag, type=_TYPES[kind], default=default, help=f"default: {default}")
        else:
            raise TypeError(f"{cls.__name__}.{field.name}: no flag for type {field.type}")


def parse_dataclass(cls: type[T], description: str | None, argv: list[str] | None = None) -> T:
    """Parse ``argv`` (default: the command line) into an instance of the dataclass ``cls``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_flags(parser, cls)
    values: dict[str, Any] = vars(parser.parse_args(argv))
    return cls(**values)
