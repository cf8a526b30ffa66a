"""``instanas-gym demo``: the local web page."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console

from instanas_gym.cli.parse import fail, parse, reported
from instanas_gym.envs.config import EnvConfig
from instanas_gym.utils.run import RunConfig


@dataclass(frozen=True)
class DemoConfig:
    """Settings of ``instanas-gym demo``: a local web page showing the architecture the controller
    picks for each test or uploaded image (for a cascade policy: the architectures run one after
    another and where it stopped), served by the exported model in ONNX Runtime."""

    policy: str | None = None
    """Policy (any view, cascade included) or router file to serve (exported once into $INSTANAS_CACHE/demo);
    unset, the bundled router."""
    export_folder: str | None = None
    """Serve this export folder (manifest.json and ONNX graphs) instead of exporting a controller."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """The data set whose test split the gallery shows, its supernet and the page's latency table."""
    host: str = "127.0.0.1"
    """Address to listen on (0.0.0.0: every network interface)."""
    port: int = 8000
    """Port to listen on, from 1 to 65535."""
    run: RunConfig = field(default_factory=lambda: RunConfig(threads=1))
    """ONNX Runtime threads per request (run.threads); the other run settings are unused, as the page serves
    ONNX graphs on the CPU without random draws."""

    def __post_init__(self) -> None:
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ValueError(f"port must be an integer in [1, 65535], got {self.port!r}")


@contextmanager
def export_progress(console: Console) -> Iterator[Callable[[int, int], None]]:
    """A progress callback that shows a bar only once there is something to export."""
    from instanas_gym.utils.runlog import progress_bar

    bar = progress_bar(console)
    task = None

    def update(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task("exporting the architectures", total=total, stats="")
        bar.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if task is not None:
            bar.stop()


#: What the demo's extra installs (``pip install 'instanas-gym[demo]'``).
DEMO_EXTRA = ("flask", "waitress")


def run_demo(argv: list[str], prog: str, description: str) -> None:
    cfg = parse(DemoConfig, argv, prog, description)
    missing = [name for name in DEMO_EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        fail(prog, f"the demo page needs {' and '.join(missing)}: pip install 'instanas-gym[demo]'", 2)
    from instanas_gym.demo.server import port_free

    if not port_free(cfg.host, cfg.port):
        fail(prog, f"port {cfg.port} on {cfg.host} is in use (or not allowed); choose another with --port", 2)
    from instanas_gym.demo.model import served_folder, serving_state
    from instanas_gym.demo.server import serve

    console, env = Console(), cfg.env
    with reported(prog, DemoConfig, argv):
        with export_progress(console) as progress:
            folder = served_folder(cfg.policy, cfg.export_folder, env.dataset, env.supernet, env.data.root,
                                   progress=progress, latency_table=env.latency_table)
        with console.status(f"serving {folder}: judging the test split once, building every session"):
            state = serving_state(folder, env.dataset, env.data.root, env.latency_table, cfg.run.threads)
    kind = "a cascade of " if state.kind == "cascade" else ""
    console.print(f"{kind}{len(state.architectures)} architectures, {100 * state.accuracy:.2f}% of the test split "
                  f"right; open http://{cfg.host}:{cfg.port}/ (Ctrl-C stops)")
    serve(state, cfg.host, cfg.port)
