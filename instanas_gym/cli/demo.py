"""``instanas-gym demo``: the local web page."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console

from instanas_gym.cli.parse import fail, parse, reported
from instanas_gym.envs.config import EnvConfig
from instanas_gym.utils.run import check_threads


@dataclass(frozen=True)
class DemoConfig:
    """Settings of ``instanas-gym demo``: a local web page showing the architecture the controller
    picks for each test or uploaded image, served by the exported model in ONNX Runtime."""

    controller: str | None = None
    """Policy file (``train-reinforce``, ``search``) or router file; default the bundled router
    (bundled data set only). Exported once into $INSTANAS_CACHE/demo."""
    export_folder: str | None = None
    """Serve this export folder (manifest.json, ONNX graphs) instead of exporting a controller."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """The data set whose test split the gallery shows, where its images are, the supernet the
    architectures come from and the latency table of the page's "by the table" figures."""
    host: str = "127.0.0.1"
    """Address to listen on (0.0.0.0: every interface)."""
    port: int = 8000
    """Port to listen on, 1-65535."""
    threads: int = 1
    """ONNX Runtime threads per session (per request)."""

    def __post_init__(self) -> None:
        check_threads("threads", self.threads)
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ValueError(f"port must be an integer in [1, 65535], got {self.port!r}")


def run_demo(argv: list[str], prog: str, description: str) -> None:
    cfg = parse(DemoConfig, argv, prog, description)
    from instanas_gym.demo.model import served_folder
    from instanas_gym.demo.server import port_free, serve
    from instanas_gym.demo.state import DemoState
    from instanas_gym.utils.runlog import progress_bar

    console = Console()
    if not port_free(cfg.host, cfg.port):
        fail(prog, f"port {cfg.port} on {cfg.host} is in use; choose another with --port", 2)
    env = cfg.env
    with reported(prog):
        with progress_bar(console) as progress:
            task = progress.add_task("exporting the architectures", total=None, stats="")
            folder = served_folder(cfg.controller, cfg.export_folder, env.dataset, env.supernet, env.data.root,
                                   progress=lambda done, total: progress.update(task, completed=done, total=total))
        console.print(f"serving {folder}; judging the test split once...")
        state = DemoState(folder, env.dataset, env.data.root, env.latency_table, cfg.threads)
    console.print(f"{len(state.architectures)} architectures, {100 * state.accuracy:.2f}% of the test split right; "
                  f"open http://{cfg.host}:{cfg.port}/ (Ctrl-C stops)")
    serve(state, cfg.host, cfg.port)
