"""The ``instanas-gym`` command: one subcommand per job, each a dataclass of documented arguments
parsed by tyro (``instanas-gym COMMAND --help``). The command line sits on top of the library, like
``examples/``: nothing in the library imports it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import tyro
from rich.console import Console

from instanas_gym.agents.family_reinforce import FamilyReinforceConfig, train_family_reinforce
from instanas_gym.agents.reinforce import DEMO, ReinforceConfig, judge_on_test, train_reinforce
from instanas_gym.agents.router import resolve_family
from instanas_gym.agents.search import SearchConfig, search
from instanas_gym.envs.config import EnvConfig
from instanas_gym.judge.awareness import frontier_results, judge_family_policy, score_and_store, summary_lines
from instanas_gym.judge.compare import NOTE as COMPARE_NOTE
from instanas_gym.judge.compare import CompareConfig, compare_agents
from instanas_gym.judge.plots import latency_scatter
from instanas_gym.judge.search_report import evaluate_search, family_report, write_report
from instanas_gym.latency.onnx import build_onnx_table, measure_onnx_masks
from instanas_gym.latency.validation import build_validated_table, compare, validation_masks
from instanas_gym.model.checkpoint import export_supernet, load_supernet
from instanas_gym.model.supernet import Supernet
from instanas_gym.space.family import probe_masks
from instanas_gym.training import TrainConfig, train_supernet
from instanas_gym.training.prepare import PrepareConfig, prepare
from instanas_gym.utils.devices import resolve_device
from instanas_gym.utils.display import results_table, validation_table
from instanas_gym.utils.files import FileFormatError
from instanas_gym.utils.paths import BUNDLED_SUPERNET
from instanas_gym.utils.runlog import progress_bar


@dataclass(frozen=True)
class LatencyTableConfig:
    """Arguments of ``instanas-gym build-latency-table``. Close other programs first: the table is a
    measurement of this machine."""

    out: str
    """JSON file to write (the PNG scatter plot goes beside it)."""
    supernet: str = str(BUNDLED_SUPERNET)
    """Supernet checkpoint."""
    backend: Literal["onnxruntime", "torch"] = "onnxruntime"
    """The runtime the table describes: ONNX Runtime (the deployed model, the environment's default
    table) or eager PyTorch (dynamic execution)."""
    passes: int | None = None
    """Masks timed for the fit: exported static graphs (ONNX Runtime; default 300) or whole-network
    passes (torch; default 2000)."""
    threads: int = 1
    """Torch threads while measuring."""
    validate_masks: int = 200
    """Fresh masks timed for validation."""
    repeats: int | None = None
    """Timed runs per mask (median): default 30 (ONNX Runtime) or 15 (torch, validation)."""
    seed: int = 0
    device: str = "cpu"
    """The device the table describes (torch backend): "cpu", or "cuda" / "cuda:N" / "auto" to time
    the supernet on a GPU with CUDA events; ONNX Runtime tables are CPU tables."""

    @property
    def n_passes(self) -> int:
        return self.passes if self.passes is not None else (300 if self.backend == "onnxruntime" else 2000)

    @property
    def n_repeats(self) -> int:
        return self.repeats if self.repeats is not None else (30 if self.backend == "onnxruntime" else 15)


@dataclass(frozen=True)
class EvaluateConfig:
    """Arguments of ``instanas-gym evaluate``: judge searches on the test split (table, Pareto plot,
    mask embedding, latency histogram, report.md in each folder; with several folders a family report)."""

    folders: tuple[str, ...]
    """Search output folders (``instanas-gym search --out``)."""
    measure: int = 200
    """Test images whose masks are timed (0: no clock)."""
    limit: int | None = None
    """Evaluate the first N test images only."""
    data_root: str | None = None
    threads: int = 2
    """Torch threads (the clock at batch 1 uses the table's)."""
    out: str | None = None
    """Folder of the family report (several folders); default FIRST/../family."""
    reference: tuple[str, ...] = ()
    """NAME=CHECKPOINT[,TABLE]: also judge the MobileNetV2 path of this supernet checkpoint (with its
    own latency table when its width differs), or the mask it was trained on alone."""
    instance_aware: bool = False
    """Also judge each searched policy against the static frontier of single architectures (gain,
    mutual information, oracle; instance_aware.json / .png and hardest_easiest.png in the folder)."""
    device: str = "auto"
    """Where the networks run for accuracy ("auto": CUDA when present); the clock columns time the CPU."""


@dataclass(frozen=True)
class ExportConfig:
    """Arguments of ``instanas-gym export-supernet``: a training checkpoint without its resume state."""

    src: str
    """Training checkpoint (``last.pt``)."""
    dest: str
    """File to write."""


@dataclass(frozen=True)
class ScoreConfig:
    """Arguments of ``instanas-gym score-architectures``: which images of a split the 18 probe
    architectures and a family's arms get right, and each image's loss under all ops, stored beside
    the supernet (``<supernet>_scores_<split>.npz``). Judging a policy against the static frontier
    (``train-family``, ``compare``, ``evaluate --instance-aware``) then reads them instead of
    running those architectures again."""

    env: EnvConfig = field(default_factory=EnvConfig)
    """The supernet, latency table (which orders the probes) and data set."""
    split: str = "test"
    """The split judged."""
    family: str | None = None
    """A family or router file whose arms are scored too (None: the bundled family, bundled data set only)."""
    out: str | None = None
    """File to write (None: beside the supernet)."""


@dataclass(frozen=True)
class DemoConfig:
    """Arguments of ``instanas-gym demo``: a local web page showing the architecture the controller
    picks for each test or uploaded image, served by the exported model in ONNX Runtime."""

    controller: str | None = None
    """Controller file: a REINFORCE controller (``train-reinforce``, ``search``) or a router; default
    the bundled router (bundled data set only). Exported once into ``$INSTANAS_CACHE/demo``."""
    export_folder: str | None = None
    """Serve this export folder (``manifest.json``, ONNX graphs) instead of exporting a controller."""
    dataset: Literal["fashion_mnist", "cifar10", "cifar100"] = "fashion_mnist"
    """Data set whose test split the gallery shows."""
    supernet: str | None = None
    """Supernet the controller's architectures come from (default the data set's)."""
    latency_table: str | None = None
    """Latency table of the page's "by the table" figures (default the data set's ONNX Runtime table)."""
    data_root: str | None = None
    host: str = "127.0.0.1"
    """Address to listen on (0.0.0.0: every interface)."""
    port: int = 8000
    threads: int = 1
    """ONNX Runtime threads per session (per request)."""


def run_train_supernet(cfg: TrainConfig, console: Console) -> None:
    train_supernet(cfg, console=console)
    console.print(f"wrote {cfg.out}/last.pt; use it with gymnasium.make(ID, supernet='{cfg.out}/last.pt')")


def run_build_latency_table(cfg: LatencyTableConfig, console: Console) -> None:
    model, _ = load_supernet(cfg.supernet)
    out = Path(cfg.out)
    device = resolve_device(cfg.device)
    if cfg.backend == "onnxruntime":
        if device.type != "cpu":
            raise ValueError(f"device={cfg.device!r}: ONNX Runtime tables describe the CPU; use --backend torch")
        build_onnx_latency_table(model, cfg, out, console)
        return
    model.to(device)
    with progress_bar(console) as progress:

        def bar(name: str, total: int) -> Callable[[int, int], None]:
            task = progress.add_task(name, total=total, stats="")
            return lambda done, _total: progress.update(task, completed=done)

        table, measured, predicted = build_validated_table(
            model, cfg.n_passes, cfg.threads, cfg.validate_masks, cfg.n_repeats, cfg.seed, progress=bar
        )
    table.save(out)
    png = out.with_suffix(".png")
    where = f"{table.meta['device_name']}" if device.type == "cuda" else f"{cfg.threads} thread(s)"
    latency_scatter(measured, predicted, png, f"LUT vs clock ({len(measured)} masks, {where})")
    console.print(validation_table(table.validation, f"latency table {out}"))
    console.print(f"rebuild vs first: MAPE {table.validation['rebuild_vs_first_mape_pct']:.2f}% of predictions; "
                  f"fixed {table.fixed_ms:.3f} ms; wrote {out} and {png}")


def build_onnx_latency_table(model: Supernet, cfg: LatencyTableConfig, out: Path, console: Console) -> None:
    """The ONNX Runtime table: fit on ``n_passes`` exported masks, checked on ``validate_masks`` fresh ones."""
    with progress_bar(console) as progress:
        task = progress.add_task("export, time, fit", total=cfg.n_passes, stats="")
        table = build_onnx_table(model, cfg.n_passes, cfg.threads, cfg.n_repeats, cfg.seed,
                                 progress=lambda done, _t: progress.update(task, completed=done))
        masks = validation_masks(model.space, cfg.validate_masks, cfg.seed + 1)
        check = progress.add_task("validation (clock)", total=len(masks), stats="")
        measured = measure_onnx_masks(model, masks, cfg.threads, cfg.n_repeats,
                                      lambda done, _t: progress.update(check, completed=done))
    predicted = np.asarray(table.network_ms(masks))
    table.validation["onnxruntime"] = compare(predicted, measured)
    table.save(out)
    png = out.with_suffix(".png")
    latency_scatter(measured, {"whole-network fit": predicted}, png,
                    f"LUT vs ONNX Runtime ({len(measured)} fresh masks, {cfg.threads} thread(s))")
    v = table.validation["onnxruntime"]
    console.print(f"ONNX Runtime table: Spearman {v['spearman']:.3f}, MAPE {v['mape_pct']:.2f}%, "
                  f"{v['within_10pct']:.1f}% within +-10% on {v['n_masks']} fresh masks; fixed {table.fixed_ms:.3f} ms; "
                  f"wrote {out} and {png}")


def run_train_reinforce(cfg: ReinforceConfig, console: Console) -> None:
    controller, _ = train_reinforce(cfg, console)
    with console.status("evaluating on the test split"):
        results = judge_on_test(controller, cfg)
    console.print(results_table(results, f"{cfg.env.env_id}: test split"))
    image_shape = cfg.env.bandit("test").data.spec.image_shape
    console.print(f"the controller costs {controller.macs(image_shape) / 1e6:.2f} MMACs per image, the "
                  f"supernet's MobileNetV2 path {results['MobileNetV2 path']['macs'] / 1e6:.2f}")
    console.print(f"controller saved to {cfg.out}/controller.pt, log in {cfg.out}/log.csv")


def run_train_family(cfg: FamilyReinforceConfig, console: Console) -> None:
    router, family, _ = train_family_reinforce(cfg, console)
    with console.status("judging the greedy policy on the test split against the static frontier"):
        report = judge_family_policy(router, family, cfg)
    console.print(results_table(frontier_results(report), f"{cfg.env.env_id}: test split ({report['images']} images)"))
    names = report["family_names"]
    console.print("architectures used: " + ", ".join(
        f"{names[k]} {100 * share:.1f}%" for k, share in zip(report["arch_index"], report["arch_share"])))
    console.print(f"labels shuffled: MI cls {report['mi_class_null_bits']:.3f}, MI dif "
                  f"{report['mi_difficulty_null_bits']:.3f}, MI dif|cls {report['cmi_difficulty_class_null_bits']:.3f} "
                  f"(shuffled within classes) bits; the frontier: {report['references']} probes and the "
                  f"policy's architectures, each alone; plots and figures in {cfg.out}/instance_aware.*")
    console.print(f"wrote {cfg.out}/controller.pt (a router file: instanas-gym demo --controller {cfg.out}/controller.pt)")


def run_compare(cfg: CompareConfig, console: Console) -> None:
    summary = compare_agents(cfg)
    console.print(results_table(summary, f"{cfg.env.env_id}: test split, mean over {len(cfg.seeds)} seeds"))
    console.print(COMPARE_NOTE, style="dim")
    console.print(f"wrote {cfg.out}/curves.csv, summary.csv, curves.png, summary.md")


def run_search(cfg: SearchConfig, console: Console) -> None:
    out = search(cfg, console)
    console.print(f"search done: {out}/supernet.pt, {out}/controller.pt; "
                  f"evaluate with `instanas-gym evaluate --folders {out}`")


def parse_references(specs: tuple[str, ...]) -> dict[str, tuple[str, str | None]]:
    """``NAME=CHECKPOINT[,TABLE]`` strings as {name: (checkpoint, table or None)}."""
    references = {}
    for spec in specs:
        name, sep, paths = spec.partition("=")
        if not sep or not name or not paths:
            raise ValueError(f"--reference takes NAME=CHECKPOINT[,TABLE], got {spec!r}")
        checkpoint, _, table = paths.partition(",")
        references[name] = (checkpoint, table or None)
    return references


def run_evaluate(cfg: EvaluateConfig, console: Console) -> None:
    references = parse_references(cfg.reference)
    torch.set_num_threads(cfg.threads)
    evaluations = {}
    for folder in cfg.folders:
        with console.status(f"evaluating {folder} on the test split"):
            ev = evaluate_search(folder, cfg.measure, cfg.limit, cfg.data_root, references, cfg.instance_aware,
                                 cfg.device)
        console.print(results_table(ev["results"], f"{folder}: test split ({len(ev['labels'])} images)"))
        if ev["instance_aware"] is not None:
            console.print("\n".join(summary_lines(ev["instance_aware"])), highlight=False)
        console.print(f"report: {write_report(folder, ev)}")
        evaluations[Path(folder).name] = ev
    if len(cfg.folders) > 1:
        out = cfg.out or str(Path(cfg.folders[0]).parent / "family")
        console.print(f"family report: {family_report(evaluations, out)}")


def run_export(cfg: ExportConfig, console: Console) -> None:
    export_supernet(cfg.src, cfg.dest)
    console.print(f"wrote {cfg.dest}")


def run_demo(cfg: DemoConfig, console: Console) -> None:
    from instanas_gym.demo.model import served_folder
    from instanas_gym.demo.server import serve
    from instanas_gym.demo.state import DemoState

    try:
        with progress_bar(console) as progress:
            task = progress.add_task("exporting the architectures", total=None, stats="")
            folder = served_folder(cfg.controller, cfg.export_folder, cfg.dataset, cfg.supernet, cfg.data_root,
                                   progress=lambda done, total: progress.update(task, completed=done, total=total))
        console.print(f"serving {folder}; judging the test split once...")
        state = DemoState(folder, cfg.dataset, cfg.data_root, cfg.latency_table, cfg.threads)
    except ValueError as err:
        print(f"instanas-gym demo: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    console.print(f"{len(state.architectures)} architectures, {100 * state.accuracy:.2f}% of the test split right; "
                  f"open http://{cfg.host}:{cfg.port}/ (Ctrl-C stops)")
    serve(state, cfg.host, cfg.port)


def run_score(cfg: ScoreConfig, console: Console) -> None:
    bandit = cfg.env.bandit(cfg.split)
    family, source = resolve_family(cfg.family, cfg.env.dataset)
    probes = np.stack([mask for _, mask in probe_masks(bandit.table, seed=0)])
    path = score_and_store(bandit, np.concatenate([probes, family.masks]), cfg.out)
    console.print(f"wrote {path}: the 18 probes and the {family.k} arms of {source} on the {bandit.num_images} "
                  f"images of the {cfg.split} split")


def run_prepare(cfg: PrepareConfig, console: Console) -> None:
    prepare(cfg, console)


#: name -> (config class, default config or None, runner, one line of help)
COMMANDS: dict[str, tuple[type, object, Callable[..., None], str]] = {
    "train-supernet": (TrainConfig, None, run_train_supernet, "one-shot pre-training of a supernet (resumable)"),
    "build-latency-table": (LatencyTableConfig, None, run_build_latency_table,
                            "latency table measured in place, checked against the clock"),
    "train-reinforce": (ReinforceConfig, DEMO, run_train_reinforce,
                        "REINFORCE controller (the demo preset), judged on the test split"),
    "train-family": (FamilyReinforceConfig, None, run_train_family,
                     "REINFORCE over a family of K architectures, judged against the static frontier"),
    "compare": (CompareConfig, None, run_compare, "every agent (masks and family view) over seeds, instance-awareness"),
    "search": (SearchConfig, None, run_search, "the paper's phases 2 and 3 (resumable)"),
    "evaluate": (EvaluateConfig, None, run_evaluate, "judge searches on the test split: tables, plots, report"),
    "score-architectures": (ScoreConfig, None, run_score,
                            "store the probes' and a family's correctness on a split, for judging"),
    "export-supernet": (ExportConfig, None, run_export, "strip a training checkpoint's resume state"),
    "demo": (DemoConfig, None, run_demo, "a local web page: the architecture each image gets"),
    "prepare": (PrepareConfig, None, run_prepare,
                "data, supernet, latency table for a data set, installed for gymnasium.make (resumable)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (*_, text) in COMMANDS.items()]
    return "usage: instanas-gym COMMAND [--help | ARGS]\n\ncommands:\n" + "\n".join(lines)


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
    cls, default, run, text = COMMANDS[name]
    cfg = tyro.cli(cls, args=rest, default=default, prog=f"instanas-gym {name}", description=cls.__doc__)
    try:
        run(cfg, Console())
    except (FileNotFoundError, FileFormatError) as err:  # the message names the file and what to do
        print(f"instanas-gym {name}: {err}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
