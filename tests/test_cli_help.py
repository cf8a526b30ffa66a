"""The command line's help, for people: every command and every flag described in one plain
sentence, no line over 80 columns, defaults drawn from the code, and help that loads nothing heavy."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import subprocess
import sys
import textwrap
import typing

import pytest

from instanas_gym.cli import COMMANDS, main, usage
from instanas_gym.cli.parse import HELP_WIDTH, setting_flags
from instanas_gym.utils.paths import default_latency_table

#: Documentation markup that has no place in a terminal.
MARKUP = ("``", ":func:", ":class:", ":meth:", ":mod:", ":data:", "{None}")
#: Commands with subcommands: each is checked too.
SUBCOMMANDS = {"train-reinforce": ("masks", "family", "cascade")}
#: Settings that are not flags: a positional argument, a subcommand.
NOT_FLAGS = {"prepare": {"--dataset"}, "train-reinforce": {"--view"}}
HEAVY = ("torch", "torchvision", "onnxruntime", "matplotlib", "stable_baselines3", "PIL", "flask")


def settings(name: str) -> typing.Any:
    cmd = COMMANDS[name]
    return getattr(importlib.import_module(f"instanas_gym.cli.{cmd.module}"), cmd.settings)


def dataclasses_of(cls: typing.Any) -> set[type]:
    """Every dataclass a command's settings hold, nested ones and Union members included."""
    cls = typing.get_args(cls)[0] if typing.get_origin(cls) is typing.Annotated else cls
    if typing.get_origin(cls) is typing.Union:
        return set().union(*(dataclasses_of(member) for member in typing.get_args(cls)))
    if not dataclasses.is_dataclass(cls):
        return set()
    hints = typing.get_type_hints(cls)
    return {cls}.union(*(dataclasses_of(hints[f.name]) for f in dataclasses.fields(cls)))


def field_docstrings(cls: type) -> dict[str, str]:
    """Each field's docstring (the string right below it in the class body), one line."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs


def help_text(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code in (0, None)
    return capsys.readouterr().out


ALL = [*COMMANDS, *(f"{name} {sub}" for name, subs in SUBCOMMANDS.items() for sub in subs)]


def test_the_main_help_lists_every_command_in_80_columns(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    assert out.strip() == usage().strip()
    for name, cmd in COMMANDS.items():
        assert re.search(rf"^  {re.escape(name)} +{re.escape(cmd.help)}$", out, re.M), name
        assert cmd.help.endswith(".") and cmd.help.count(". ") == 0, f"{name}: one sentence"
    assert max(map(len, out.splitlines())) <= HELP_WIDTH


@pytest.mark.parametrize("command", ALL)
def test_a_command_help_is_plain_and_fits_80_columns_on_a_wide_terminal(capsys, monkeypatch, command):
    monkeypatch.setenv("COLUMNS", "200")
    out = help_text(capsys, *command.split())
    too_long = [line for line in out.splitlines() if len(line) > HELP_WIDTH]
    assert not too_long, f"{command}: {len(too_long)} lines over {HELP_WIDTH} columns, e.g. {too_long[0]!r}"
    assert not [m for m in MARKUP if m in out], command
    name = command.split()[0]
    if command == name:
        assert COMMANDS[name].help in " ".join(out.split())
    if command in SUBCOMMANDS:  # its flags are under each subcommand
        return
    shown = set(re.findall(r"(--[a-z][\w.-]*)", out))
    hidden = set(setting_flags(settings(name)).values()) - shown - NOT_FLAGS.get(name, set())
    assert not hidden, f"{command}: flags not in the help: {sorted(hidden)}"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_setting_of_every_command_has_one_plain_sentence(command):
    for cls in dataclasses_of(settings(command)):
        docs = field_docstrings(cls)
        for f in dataclasses.fields(cls):
            text = docs.get(f.name, "")
            assert text, f"{command}: {cls.__name__}.{f.name} has no description"
            assert not [m for m in MARKUP if m in text], f"{cls.__name__}.{f.name}: {text}"
            assert not re.search(r"\. [A-Z]", text), f"{cls.__name__}.{f.name}: one sentence: {text}"
            assert text[0].isupper() and text.endswith("."), f"{cls.__name__}.{f.name}: a sentence: {text}"


def test_an_optional_setting_reads_optional_and_defaults_come_from_the_code(capsys):
    out = " ".join(help_text(capsys, "search").split())
    assert "--env.supernet STR" in out and "(optional)" in out
    assert "(default: runs/search)" in out  # the folder the command writes to, from its settings
    for backend in ("onnxruntime", "torch"):  # the files the environment looks for, named as the code names them
        assert default_latency_table("cifar10", backend).name in out
    compare = " ".join(help_text(capsys, "compare").split())
    assert "(default: 0 1 2)" in compare and "(default: 16000)" in compare


def test_help_and_bad_arguments_load_no_heavy_library():
    """``COMMAND --help`` and a refused value import the settings only: no torch, ONNX Runtime, plots."""
    script = textwrap.dedent(f"""
        import sys
        from instanas_gym.cli import COMMANDS, main
        for argv in [[n, "--help"] for n in COMMANDS] + [["search", "--run.seed", "-1"], ["demo", "--port", "0"]]:
            try:
                main(argv)
            except SystemExit:
                pass
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-500:]
