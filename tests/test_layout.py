"""The package's shape: one installed import name, layers that never import upwards, no import
cycles, modules and functions of a readable size, and a README layout that matches the tree."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import instanas_gym
from instanas_gym.model.checkpoint import supernet_state
from instanas_gym.model.supernet import Supernet
from instanas_gym.space.data import get_spec
from instanas_gym.space.search_space import SearchSpace
from instanas_gym.utils.files import atomic_save
from tests.fixtures import macs_table, write_cifar

PACKAGE = Path(instanas_gym.__file__).parent
REPO = PACKAGE.parent
#: The layers, low to high: a module imports only from its own layer or lower. The package's own
#: ``__init__`` (which registers the environments) sits with the utilities.
LAYERS = ("utils", "space", "model", "latency", "deploy", "envs", "training", "agents", "judge", "demo", "cli")
#: Limits on the package's shape: lines of a module; lines of a function, its docstring (the spec) not counted.
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.AST) -> set[ast.AST]:
    """The import statements under ``if TYPE_CHECKING:`` (for type hints only: never run)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {n for child in node.body for n in ast.walk(child)}
    return out


def _imports(path: Path) -> set[str]:
    """Modules ``path`` imports (relative imports resolved), at any depth of the file (in functions too),
    except those for type checking only."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    skip = _type_checking_only(tree)
    out = set()
    for node in ast.walk(tree):
        if node in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: {i for i in _imports(p) if i in modules} for m, p in modules.items()}


def _layer(module: str) -> int:
    parts = module.split(".")
    return 0 if len(parts) == 1 else LAYERS.index(parts[1])


def test_every_folder_of_the_package_is_a_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders == set(LAYERS), f"not a layer: {sorted(folders - set(LAYERS))}; no folder: {sorted(set(LAYERS) - folders)}"
    assert not [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"], "modules beside the folders"


def test_a_module_imports_only_its_own_layer_or_lower():
    upward = sorted(f"{m} ({LAYERS[_layer(m)] if '.' in m else 'package'}) imports {d} ({LAYERS[_layer(d)]})"
                    for m, deps in _graph().items() for d in deps if _layer(d) > _layer(m))
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_the_layer_check_catches_an_upward_import(tmp_path, monkeypatch):
    """The check above can fail: a utility importing the agents is reported."""
    import tests.test_layout as layout

    fake = tmp_path / "instanas_gym"
    for folder in ("utils", "agents"):
        (fake / folder).mkdir(parents=True)
        (fake / folder / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "agents" / "reinforce.py").write_text("X = 1\n")
    (fake / "utils" / "files.py").write_text("def f():\n    from instanas_gym.agents.reinforce import X\n    return X\n")
    monkeypatch.setattr(layout, "PACKAGE", fake)
    graph = layout._graph()
    assert graph["instanas_gym.utils.files"] == {"instanas_gym.agents.reinforce"}
    with pytest.raises(AssertionError, match=r"instanas_gym.utils.files \(utils\) imports instanas_gym.agents"):
        layout.test_a_module_imports_only_its_own_layer_or_lower()


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if d == m or m.startswith(d + "."):
                continue  # importing a submodule loads its packages first: not an edge of the graph
            assert state.get(d) != 1, "import cycle: " + " -> ".join(path + [d])
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def _function_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's definition (decorators aside), its docstring not counted."""
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        lines -= first.end_lineno - first.lineno + 1
    return lines


def test_no_module_over_400_lines_and_no_function_over_50():
    long_modules, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        where = path.relative_to(REPO)
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{where}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _function_lines(node) > MAX_FUNCTION_LINES:
                long_functions.append(f"{where}:{node.lineno} {node.name}: {_function_lines(node)} lines")
    assert not long_modules and not long_functions, (
        f"modules over {MAX_MODULE_LINES} lines: {long_modules}; functions over {MAX_FUNCTION_LINES} lines "
        f"(docstrings not counted): {long_functions}")


def test_readme_layout_lists_every_module():
    text = (REPO / "README.md").read_text()
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed = {f"instanas_gym/{folder}/{name}"  # a bullet per folder, "- **folder** ...", naming its modules
              for folder, bullet in re.findall(r"^- \*\*(\w+)\*\*(.*?)(?=^- |^\S|\Z)", section, re.M | re.S)
              for name in re.findall(r"`(\w+\.py)`", bullet)}
    actual = {str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    assert listed == actual, f"missing from README: {sorted(actual - listed)}; not in the tree: {sorted(listed - actual)}"


def test_a_user_project_with_its_own_envs_and_agents_still_makes_every_id(tmp_path):
    """A user's RL project with ``envs/`` and ``agents/`` folders first on sys.path: every id still
    makes and steps (this checkout's package), and their ``envs`` and ``agents`` are the user's."""
    for folder in ("envs", "agents"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("raise ImportError('the user project, not instanas-gym')\n")
    extra = {}
    for id_, kwargs in instanas_gym.ENV_IDS.items():
        dataset = kwargs["dataset"]
        if dataset != "fashion_mnist":
            spec = get_spec(dataset)
            write_cifar(tmp_path / "data", dataset, n_train=20, n_test=10)
            model = Supernet(SearchSpace(0.1, 32, 3, spec.num_classes), spec.mean, spec.std).eval()
            atomic_save(supernet_state(model, dataset), tmp_path / f"{dataset}.pt")
            macs_table(model.space).save(tmp_path / f"{dataset}.json")
            extra[id_] = {"data_root": "data", "supernet": f"{dataset}.pt", "latency_table": f"{dataset}.json"}
    script = textwrap.dedent(f"""
        import gymnasium as gym
        import instanas_gym
        from unittest import mock

        extra = {extra!r}
        for id_ in instanas_gym.ENV_IDS:
            # synthetic CIFAR files cannot pass torchvision's MD5 checks (tests.fixtures.skip_cifar_checksums)
            with mock.patch("torchvision.datasets.cifar.check_integrity", lambda fpath, md5=None: True):
                env = gym.make(id_, **extra.get(id_, {{}}))
            env.reset(seed=0)
            env.step(env.action_space.sample())
            print("stepped", id_)
        assert instanas_gym.__file__.startswith({str(PACKAGE)!r}), instanas_gym.__file__
        for name in ("envs", "agents"):
            try:
                __import__(name)
            except ImportError as err:
                assert "user project" in str(err), err
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}", "PATH": "/usr/bin:/bin",
                              "HOME": str(tmp_path), "INSTANAS_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("stepped") == len(instanas_gym.ENV_IDS) and "ok" in out.stdout


def test_only_instanas_gym_is_installed(tmp_path):
    """``import envs`` / ``import agents`` find nothing of ours: the project installs one top-level name."""
    script = "import importlib.util as u; print(u.find_spec('envs'), u.find_spec('agents'), u.find_spec('instanas_gym') is not None)"
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["None", "None", "True"]


def test_the_command_line_lists_its_commands_and_reports_file_errors_in_one_line(tmp_path, capsys):
    from instanas_gym.cli import COMMANDS, main

    main(["--help"])
    usage = capsys.readouterr().out
    assert all(name in usage for name in COMMANDS)
    with pytest.raises(SystemExit) as exit_:
        main(["build-latency-table", "--env.supernet", str(tmp_path / "none.pt"), "--run.out", str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "none.pt" in err and "instanas-gym train-supernet" in err
    assert "Traceback" not in err
    with pytest.raises(SystemExit) as exit_:
        main(["no-such-command"])
    assert exit_.value.code == 2


def test_the_environment_the_first_command_and_judging_need_no_optional_extra(tmp_path):
    """Without the ``plots`` and ``demo`` extras (matplotlib, flask, waitress blocked): the environments
    step, the first command's modules import, a plot is skipped with a warning, and ``demo`` names its
    extra in one line."""
    script = textwrap.dedent("""
        import sys, warnings
        for name in ("matplotlib", "flask", "waitress"):
            sys.modules[name] = None  # as if not installed: import fails, find_spec gives None
        import gymnasium as gym
        import instanas_gym
        from instanas_gym.agents.reinforce import train_reinforce
        from instanas_gym.judge.saved import judge_saved
        from instanas_gym.judge import cascade, compare, plots
        env = gym.make("InstaNAS-FashionMNIST-Cascade-v0")
        env.reset(seed=0)
        env.step(0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            plots.instance_aware_plot({}, "never.png")
        print("skipped" if plots.NO_MATPLOTLIB in str(caught[0].message) else "drew")
        from instanas_gym.cli import main
        main(["demo"])
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "INSTANAS_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"})
    assert out.stdout.split() == ["skipped"], out.stderr[-2000:]
    assert not (tmp_path / "never.png").exists()
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "instanas-gym demo: the demo page needs flask and waitress: pip install 'instanas-gym[demo]'"]
