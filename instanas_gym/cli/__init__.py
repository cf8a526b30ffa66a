"""The ``instanas-gym`` command: one subcommand per job, each a dataclass of documented arguments
parsed by tyro (``instanas-gym COMMAND --help``). The command line sits on top of the library, like
``examples/``: nothing in the library imports it. A command's module is imported only when that
command runs, so ``instanas-gym --help`` answers without loading torch.

Exit codes: 0 done; 1 a file is missing or damaged (the message names it and what to do); 2 a bad
argument (the message names the flag and what it takes); 130 interrupted (a resumable command has
saved its checkpoint first).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import NamedTuple


class Command(NamedTuple):
    """A subcommand: where its settings and runner live (imported on use) and one line of help."""

    module: str
    """Module under ``instanas_gym.cli`` holding the runner and the settings."""
    runner: str
    """``run_<name>(argv, prog, description)`` in that module."""
    settings: str
    """The settings (a dataclass, or a Union of them for subcommands) in that module: one flag per field."""
    help: str
    """One plain sentence."""


COMMANDS: dict[str, Command] = {
    "train-supernet": Command("train", "run_train_supernet", "TrainConfig",
                              "Pre-train a one-shot supernet (resumable)."),
    "build-latency-table": Command("train", "run_build_latency_table", "LatencyTableConfig",
                                   "Measure this machine's latency table and check it."),
    "prepare": Command("train", "run_prepare", "PrepareConfig", "Data, supernet and latency table for a data set."),
    "export-supernet": Command("train", "run_export_supernet", "ExportConfig",
                               "Strip a training checkpoint of its resume state."),
    "train-reinforce": Command("agents", "run_train_reinforce", "ReinforceCommand",
                               "Train a REINFORCE policy and judge it on the test split."),
    "fit-cascade": Command("agents", "run_fit_cascade", "CascadeFitConfig",
                           "Fit a threshold cascade to a latency budget and judge it."),
    "search": Command("agents", "run_search", "SearchConfig", "Run the paper's search, phases 2 and 3 (resumable)."),
    "compare": Command("agents", "run_compare", "CompareConfig", "Compare every agent over seeds on the same budget."),
    "evaluate": Command("judge", "run_evaluate", "EvaluateConfig",
                        "Judge the bundled router, or searches, on the test split."),
    "compute-outcomes": Command("judge", "run_compute_outcomes", "OutcomesConfig",
                                "Store single architectures' answers on a split."),
    "demo": Command("demo", "run_demo", "DemoConfig", "Serve a local web page: the architecture each image gets."),
}


def usage() -> str:
    """The main help: every command and its sentence, at most 80 columns wide."""
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {cmd.help}" for name, cmd in COMMANDS.items()]
    return ("usage: instanas-gym COMMAND [--help | ARGS]\n\nInstance-aware neural architecture search as a "
            "Gymnasium environment.\n\ncommands:\n" + "\n".join(lines)
            + "\n\n`instanas-gym COMMAND --help` lists a command's flags.")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``instanas-gym`` console script."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"instanas-gym: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        raise SystemExit(2)
    cmd = COMMANDS[name]
    runner = getattr(importlib.import_module(f"instanas_gym.cli.{cmd.module}"), cmd.runner)
    try:
        runner(rest, f"instanas-gym {name}", cmd.help)
    except BrokenPipeError:  # the reader of the output left (`instanas-gym CMD --help | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
