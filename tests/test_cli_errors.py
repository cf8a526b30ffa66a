"""Every bad value on the command line: one line naming the flag and what it takes, exit code 2, no
traceback, and nothing loaded. The cases run in one child process in which loading any data set
fails loudly, so a case that got as far as the data fails its test."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import pytest

from instanas_gym.agents.config import SearchConfig
from instanas_gym.agents.search import SEARCH_FORMAT
from instanas_gym.cli.parse import one_line
from instanas_gym.model.checkpoint import FORMAT, KEYS
from instanas_gym.training.config import TrainConfig
from instanas_gym.utils.files import atomic_save

#: (argv, the exit code, text the one line holds). ``{tmp}``: a folder of the test.
CASES = [
    (["train-supernet", "--dataset", "mnist"], 2, "'--dataset'. Expected one of"),
    (["prepare", "mnist"], 2, "invalid choice 'mnist'"),
    (["search", "--run.seed", "-1"], 2, "--run.seed must be an integer in [0, 4294967295], got -1"),
    (["search", "--run.seed", str(2**70)], 2, "--run.seed must be an integer in [0, 4294967295]"),
    (["search", "--run.seed", "abc"], 2, "--run.seed takes an integer, got 'abc'"),
    (["search", "--env.split", "bogus"], 2, "--env.split must be one of ('train', 'search', 'test')"),
    (["train-reinforce", "family", "--env.split", "bogus"], 2, "--env.split must be one of"),
    (["compute-outcomes", "--env.split", "bogus"], 2, "--env.split must be one of"),
    (["search", "--env.env-id", "InstaNAS-MNIST-v0"], 2, "'--env.env-id'"),
    (["search", "--env.reward.lower-ms", "5", "--env.reward.upper-ms", "1"], 2,
     "--env.reward.lower-ms and upper_ms need lower < upper"),
    (["search", "--run.device", "cuda:99"], 2, "--run.device='cuda:99'"),
    (["search", "--run.device", "tpu"], 2, "--run.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    (["search", "--bogus", "1"], 2, "Unrecognized options: --bogus"),
    (["train-reinforce"], 2, "missing subcommand: expected one of {masks, family, cascade}"),
    (["train-supernet", "--epochs", "1.5"], 2, "--epochs takes an integer, got '1.5'"),
    (["train-supernet", "--lr", "fast"], 2, "--lr takes a number, got 'fast'"),
    (["compare", "--seeds"], 2, "--seeds needs at least one seed"),
    (["compare", "--num-envs", "0"], 2, "--num-envs must be >= 1, got 0"),
    (["compare", "--judge.limit", "0"], 2, "--judge.limit must be >= 1, got 0"),
    (["compare", "--total-steps", "0"], 2, "--total-steps must be >= 1, got 0"),
    (["compare", "--judge.own-archs", "-1"], 2, "--judge.own-archs must be >= 0, got -1"),
    (["compare", "--agents", "REINFORCE", "VW-family"], 2, "--agents: VW-family needs vowpalwabbit"),
    (["evaluate", "--folders"], 2, "--folders: give at least one search folder"),
    (["evaluate", "--reference", "a=b.pt"], 2, "--reference judges searches: give their --folders too"),
    (["evaluate", "--folders", "x", "--reference", "garbage"], 2, "--reference takes NAME=CHECKPOINT[,TABLE]"),
    (["evaluate", "--folders", "{tmp}/none"], 1, "`instanas-gym search --run.out"),
    (["build-latency-table", "--table.passes", "0"], 2, "--table.passes must be >= 1, got 0"),
    (["build-latency-table", "--table.passes", "50"], 2, "--table.passes must be >= 120"),
    (["build-latency-table", "--table.timed-threads", "0"], 2, "--table.timed-threads must be >= 1, got 0"),
    (["build-latency-table", "--table.validate-masks", "-1"], 2, "--table.validate-masks must be >= 1, got -1"),
    (["build-latency-table", "--table.repeats", "0"], 2, "--table.repeats must be >= 1, got 0"),
    (["build-latency-table", "--run.threads", "100000"], 2, "--run.threads must be at most"),
    (["demo", "--port", "-1"], 2, "--port must be an integer in [1, 65535], got -1"),
    (["demo", "--port", "99999"], 2, "--port must be an integer in [1, 65535], got 99999"),
    (["demo", "--port", "{busy}"], 2, "is in use"),
    (["demo", "--run.threads", "0"], 2, "--run.threads must be >= 1, got 0"),
    (["train-supernet", "--run.out", "{tmp}/supernet", "--resume", "--epochs", "3"], 2,
     "epochs: checkpoint 10 vs now 3"),
    (["search", "--run.out", "{tmp}/search", "--resume", "--epochs", "3"], 2,
     "was written with other settings (['epochs'])"),
]

DRIVER = """
import contextlib, io, json, sys, traceback
import instanas_gym.space.data as data

def refuse(*args, **kwargs):
    raise RuntimeError("a data set was loaded")

data.load_split = refuse  # before any module takes its own reference
sys.modules["vowpalwabbit"] = None  # as if it were not installed
from instanas_gym.cli import main

results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    code = None
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit as done:
            code = done.code
        except BaseException:
            traceback.print_exc()
    results.append({"code": code, "stderr": err.getvalue()})
print(json.dumps(results))
"""


def _saved_checkpoints(tmp: Path) -> None:
    """A supernet checkpoint and a search checkpoint written with the default settings (epochs 10, 4)."""
    atomic_save({"format": FORMAT, **dict.fromkeys(KEYS), "dataset": "fashion_mnist", "mean": [0.5], "std": [0.5],
                 "model": {}, "config": asdict(TrainConfig())},
                tmp / "supernet" / "last.pt")
    keys = ("supernet", "controller", "controller_opt", "supernet_opt", "stage", "step", "window", "bounds", "rng",
            "history", "wall_s")
    atomic_save({"format": SEARCH_FORMAT, **dict.fromkeys(keys), "config": asdict(SearchConfig())},
                tmp / "search" / "search.pt")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, dict]:
    """Each case's exit code and stderr, from one child process."""
    tmp = tmp_path_factory.mktemp("cli")
    _saved_checkpoints(tmp)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        fill = {"tmp": str(tmp), "busy": str(busy.getsockname()[1])}
        argvs = [[a.format(**fill) for a in argv] for argv, _, _ in CASES]
        env = {**os.environ, "INSTANAS_CACHE": str(tmp / "cache"), "PYTHONIOENCODING": "utf-8"}
        done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(argvs)], capture_output=True, text=True,
                              env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return {" ".join(argv): r for (argv, _, _), r in zip(CASES, json.loads(done.stdout.splitlines()[-1]))}


@pytest.mark.parametrize(("argv", "code", "text"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_a_bad_value_gets_one_line_naming_the_flag(outcomes, argv, code, text):
    result = outcomes[" ".join(argv)]
    lines = result["stderr"].strip().splitlines()
    assert result["code"] == code, result["stderr"][-2000:]
    assert len(lines) == 1 and "Traceback" not in result["stderr"], result["stderr"][-2000:]
    assert lines[0].startswith(f"instanas-gym {argv[0]}: ") and text in lines[0], lines[0]


def test_tyro_boxes_in_plain_text_become_one_line_too():
    box = textwrap.dedent("""\
         Value error
         ----------------------------------------
          Error parsing --run.seed: invalid literal for int() with base 10: 'x'
          ----------------------------------------
          Argument helptext:
              --run.seed INT
    """)
    assert one_line(box) == "--run.seed takes an integer, got 'x'"


def test_an_offline_download_says_it_is_offline_and_what_to_do(tmp_path):
    """``prepare cifar10`` without a connection (urllib's error, as torchvision meets it)."""
    script = textwrap.dedent("""
        import sys, urllib.error, urllib.request
        def offline(*args, **kwargs):
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        urllib.request.urlopen = offline
        from instanas_gym.cli import main
        main(sys.argv[1:])
    """)
    env = {**os.environ, "INSTANAS_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", script, "prepare", "cifar10", "--run.out", str(tmp_path / "work"),
                           "--data.root", str(tmp_path / "data")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    message = done.stderr.strip().splitlines()[-1]
    assert "this machine looks offline" in message and "--data.root" in message and "download=True" in message


def test_a_cifar_environment_without_data_names_prepare_its_cost_and_a_cheaper_first_run():
    import gymnasium as gym

    with pytest.raises(FileNotFoundError, match=r"prepare cifar10.*GPU-hours.*--epochs 10 --width-mult 0\.5"):
        gym.make("InstaNAS-CIFAR10-v0")
