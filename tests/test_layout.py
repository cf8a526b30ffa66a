"""The package's shape: one installed import name, a core that never imports the layers above it,
no import cycles, and a README layout that matches the tree."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import instanas_gym

PACKAGE = Path(instanas_gym.__file__).parent
REPO = PACKAGE.parent
#: The layers above the core: the core (everything else in the package) imports none of them.
UPPER = ("instanas_gym.envs", "instanas_gym.agents", "instanas_gym.demo", "instanas_gym.cli")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Modules ``path`` imports (relative imports resolved), at any depth of the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
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


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {i for i in _imports(p) if i in modules} for m, p in modules.items()}


def test_core_never_imports_envs_agents_or_the_cli():
    for module, deps in _graph().items():
        if module.startswith(UPPER):
            continue
        bad = sorted(d for d in deps if d.startswith(UPPER))
        assert not bad, f"{module} (core) imports {bad}"


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in graph[m]:
            if d == m or m.startswith(d + "."):
                continue  # importing a submodule loads its packages first: not an edge of the graph
            assert state.get(d) != 1, "import cycle: " + " -> ".join(path + [d])
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


def test_readme_layout_lists_every_module():
    text = (REPO / "README.md").read_text()
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`(instanas_gym/[\w/]+\.py)`", section))
    actual = {str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    assert listed == actual, f"missing from README: {sorted(actual - listed)}; not in the tree: {sorted(listed - actual)}"


def test_a_user_project_with_its_own_envs_and_agents_still_makes_every_id(tmp_path):
    """A user's RL project with ``envs/`` and ``agents/`` folders first on sys.path: every id still
    makes and steps, and only ``instanas_gym`` is importable from the installed project."""
    for folder in ("envs", "agents"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("raise ImportError('the user project, not instanas-gym')\n")
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        import gymnasium as gym
        import numpy as np
        import instanas_gym
        from instanas_gym.model.checkpoint import supernet_state
        from instanas_gym.space.data import get_spec
        from instanas_gym.utils.files import atomic_save
        from instanas_gym.latency.measure import build_table
        from instanas_gym.space.search_space import SearchSpace
        from instanas_gym.model.supernet import Supernet
        from tests.fixtures import skip_cifar_checksums, write_cifar

        root = Path("data")
        for id_, kwargs in instanas_gym.ENV_IDS.items():
            extra = {}
            if kwargs["dataset"] != "fashion_mnist":
                spec = get_spec(kwargs["dataset"])
                write_cifar(root, kwargs["dataset"], n_train=20, n_test=10)
                model = Supernet(SearchSpace(0.1, 32, 3, spec.num_classes), spec.mean, spec.std).eval()
                atomic_save(supernet_state(model, kwargs["dataset"]), f"{kwargs['dataset']}.pt")
                build_table(model, passes=20, warmup=2).save(f"{kwargs['dataset']}.json")
                extra = dict(data_root=str(root), supernet=f"{kwargs['dataset']}.pt",
                             latency_table=f"{kwargs['dataset']}.json")
            with skip_cifar_checksums():
                env = gym.make(id_, **extra)
            env.reset(seed=0)
            env.step(env.action_space.sample())
            print("stepped", id_)
        for name in ("envs", "agents"):
            try:
                __import__(name)
            except ImportError as err:
                assert "user project" in str(err), err
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                              "INSTANAS_CACHE": str(tmp_path / "cache")})
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
    import pytest

    from instanas_gym.cli import COMMANDS, main

    main(["--help"])
    usage = capsys.readouterr().out
    assert all(name in usage for name in COMMANDS)
    with pytest.raises(SystemExit) as exit_:
        main(["build-latency-table", "--supernet", str(tmp_path / "none.pt"), "--out", str(tmp_path / "t.json")])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "none.pt" in err and "instanas-gym train-supernet" in err
    assert "Traceback" not in err
    with pytest.raises(SystemExit) as exit_:
        main(["no-such-command"])
    assert exit_.value.code == 2
