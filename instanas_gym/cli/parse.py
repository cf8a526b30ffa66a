"""What every command shares: parsing its settings (tyro) into a help text for people, and turning
every error into one line and an exit code.

Help: each flag's text is its field's docstring with the line breaks of the source removed; a field
that may be left unset shows its type (``STR``, not ``{None}|STR``), and "(optional)" where unset is
its default;
the help is at most :data:`HELP_WIDTH` columns wide, whatever the terminal.

Errors: a value a setting refuses (tyro's parsing, or a config's ``__post_init__``) is printed as
``prog: --flag must be ..., got ...`` on one line and exits 2, before anything is loaded.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import sys
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from typing import Annotated, Any, TypeVar, Union

import tyro
from tyro.constructors import (
    ConstructorRegistry,
    PrimitiveConstructorSpec,
    PrimitiveTypeInfo,
    StructConstructorSpec,
    StructFieldSpec,
    StructTypeInfo,
)

from instanas_gym.utils.files import FileFormatError

T = TypeVar("T")
#: Widest line of any help text or error.
HELP_WIDTH = 80
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: Python's conversion errors, as the one line says them.
_CONVERSIONS = (
    (re.compile(r"invalid literal for int\(\) with base \d+: (.*)"), r"takes an integer, got \1"),
    (re.compile(r"could not convert string to float: (.*)"), r"takes a number, got \1"),
)


def fail(prog: str, message: str, code: int) -> None:
    """Print ``prog: message`` on stderr and exit with ``code``."""
    print(f"{prog}: {message}", file=sys.stderr)
    raise SystemExit(code)


# ---- help for people ---------------------------------------------------------------------------
_REGISTRY = ConstructorRegistry()
_rule_running = False


def _optional_inner(annotation: Any) -> Any | None:
    """X for ``X | None`` (or ``Optional[X]``), else None."""
    if typing.get_origin(annotation) not in (Union, types.UnionType):
        return None
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if len(args) == 1 and len(typing.get_args(annotation)) == 2 else None


def _plain_field(spec: StructFieldSpec) -> StructFieldSpec:
    """The field with its docstring on one line and, when it may be left unset, shown as optional."""
    text = spec.helptext() if callable(spec.helptext) else spec.helptext
    text = " ".join(text.split()) if text else text
    annotation = spec.type
    inner = _optional_inner(annotation)
    if inner is not None:
        primitive = ConstructorRegistry.get_primitive_spec(PrimitiveTypeInfo.make(inner, set()))
        if isinstance(primitive, PrimitiveConstructorSpec):
            hint = "(optional)" if spec.default is None else None
            annotation = Annotated[annotation, tyro.conf.arg(metavar=primitive.metavar, help_behavior_hint=hint)]
    return dataclasses.replace(spec, type=annotation, helptext=text)


@_REGISTRY.struct_rule
def _plain_dataclass(info: StructTypeInfo) -> StructConstructorSpec | None:
    """tyro's own rule for a dataclass, with every field passed through :func:`_plain_field`."""
    global _rule_running
    if _rule_running or not dataclasses.is_dataclass(info.type):
        return None
    _rule_running = True
    try:
        spec = ConstructorRegistry.get_struct_spec(info)
    finally:
        _rule_running = False
    if not isinstance(spec, StructConstructorSpec):
        return spec
    return dataclasses.replace(spec, fields=tuple(_plain_field(f) for f in spec.fields))


@contextmanager
def _narrow_terminal() -> Iterator[None]:
    """tyro lays its help out for the terminal's width: at most :data:`HELP_WIDTH` columns."""
    before = os.environ.get("COLUMNS")
    try:
        width = int(before) if before else os.get_terminal_size(sys.__stdout__.fileno()).columns
    except (OSError, ValueError, AttributeError):
        width = HELP_WIDTH
    os.environ["COLUMNS"] = str(min(width, HELP_WIDTH))
    try:
        yield
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


# ---- one line per error ------------------------------------------------------------------------
def setting_flags(cls: Any, prefix: str = "") -> dict[str, str]:
    """Every setting of the dataclass ``cls`` (members of a Union of them too) by its dotted name
    ("run.seed", "env.reward.lower_ms") -> its flag ("--run.seed", "--env.reward.lower-ms")."""
    cls = typing.get_args(cls)[0] if typing.get_origin(cls) is Annotated else cls
    if typing.get_origin(cls) in (Union, types.UnionType):
        return {k: v for member in typing.get_args(cls) for k, v in setting_flags(member, prefix).items()}
    if not dataclasses.is_dataclass(cls):
        return {}
    hints = typing.get_type_hints(cls)
    flags: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        nested = setting_flags(hints[f.name], f"{prefix}{f.name}.")
        flags |= nested or {prefix + f.name: "--" + (prefix + f.name).replace("_", "-")}
    return flags


def flag_message(message: str, flags: dict[str, str], argv: list[str]) -> str:
    """``message`` with the setting it opens with ("run.seed must be ...", "total_steps: ...") named
    as its flag: the one with that dotted name, else the only one ending in it (or the one of those
    typed in ``argv``)."""
    match = re.match(r"([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)(?=[ :,=])", message)
    if match is None:
        return message
    name = match.group(1)
    candidates = [flags[name]] if name in flags else [f for k, f in flags.items() if k.endswith("." + name)]
    typed = {a.split("=")[0] for a in argv if a.startswith("--")}
    if len(candidates) > 1:
        candidates = [f for f in candidates if f in typed]
    return candidates[0] + message[match.end():] if len(candidates) == 1 else message


def one_line(box: str) -> str:
    """tyro's boxed error message as one line: the text above the box's first rule, joined (after
    the box's title where the text only says what was expected)."""
    lines = [_ANSI.sub("", line).strip().strip("│").strip() for line in box.strip().splitlines()]
    title = lines[0].strip("╭─╮ ") if lines else ""
    body: list[str] = []
    for line in lines[1:]:
        if line and set(line) <= set("─-╰╯"):
            if body:
                break
            continue  # the title's underline in plain-text boxes
        if line:
            body.append(line)
    text = " ".join(body) or title
    text = re.sub(r"^Error parsing (?!--)\S+: ", "", text)  # a settings class's own check
    text = re.sub(r"^Missing from [\w -]+: (\S+) (.*?)(?: \(required\))?$", r"missing \1: \2", text)
    flag = re.match(r"^Error parsing (--[\w.-]+): (.*)", text)
    if flag is not None:
        detail = flag.group(2)
        for pattern, replacement in _CONVERSIONS:
            detail = pattern.sub(replacement, detail)
        text = f"{flag.group(1)} {detail}" if detail.startswith("takes ") else f"{flag.group(1)}: {detail}"
    if text.startswith("Expected"):  # says what is expected, not what is missing: the title says that
        text = f"{title.lower()}: {text[0].lower()}{text[1:]}"
    return f"{text} (see --help)" if re.match(r"(?i)(unrecognized|missing)", text) else text


def parse(cls: Any, argv: list[str], prog: str, description: str, default: Any = None) -> Any:
    """The settings ``cls`` from ``argv`` (tyro). ``--help`` prints the help and exits 0; a value a
    setting refuses prints one line naming its flag and exits 2."""
    extra = {} if default is None else {"default": default}
    flags = setting_flags(cls)
    errors = io.StringIO()
    try:
        with _narrow_terminal(), redirect_stderr(errors):
            settings = tyro.cli(cls, args=argv, prog=prog, description=description, registry=_REGISTRY, **extra)
    except SystemExit as done:
        if done.code not in (0, None):
            fail(prog, flag_message(one_line(errors.getvalue()), flags, argv), 2)
        raise
    except (ValueError, TypeError) as err:  # a check tyro let through: the message names the setting
        fail(prog, flag_message(str(err), flags, argv), 2)
    sys.stderr.write(errors.getvalue())  # tyro's warnings, if any
    return settings


@contextmanager
def reported(prog: str, cls: Any = None, argv: list[str] = ()) -> Iterator[None]:
    """Run a command: a bad value found late exits 2, a missing or damaged file 1, Ctrl-C 130, each as
    one line (settings of ``cls`` named as the flags in ``argv`` are)."""
    try:
        yield
    except (FileNotFoundError, FileFormatError) as err:  # the message names the file and what to do
        fail(prog, str(err), 1)
    except (ValueError, TypeError) as err:
        fail(prog, flag_message(str(err), setting_flags(cls) if cls is not None else {}, list(argv)), 2)
    except KeyboardInterrupt:
        fail(prog, "interrupted", 130)
