"""Generated damaged files (hypothesis) for every format the package reads: supernet checkpoints,
controller, router and policy files, latency tables, families, mask files, outcomes files, the
deploy folder (manifest and graphs) and a comparison's stored results. Each is either loaded (and
then holds exactly what a valid file holds) or refused with a documented error that names the file:
FileFormatError (a ValueError), FileNotFoundError, or, for a comparison result of other settings, a
ValueError naming it. Nothing crashes, hangs (a case running a minute fails) or takes 1 GiB more
memory. The number of cases tried is printed at the end of the run."""

from __future__ import annotations

import io
import json
import resource
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from instanas_gym.agents.config import ControllerConfig
from instanas_gym.agents.controller import Controller, load_controller, save_controller
from instanas_gym.agents.policy import load_policy, save_policy
from instanas_gym.agents.router import Router
from instanas_gym.agents.router_file import load_router, save_router
from instanas_gym.deploy.engine import InstaNASModel
from instanas_gym.judge.stored_results import finished_result
from instanas_gym.latency.table import LatencyTable
from instanas_gym.model.checkpoint import build_supernet, load_checkpoint
from instanas_gym.model.outcomes import OUTCOMES_FORMAT, read_outcomes
from instanas_gym.space.family import ArchitectureFamily, load_family
from instanas_gym.space.masks import all_ops_mask, load_mask, mobilenetv2_mask
from instanas_gym.space.search_space import MASK_SHAPE
from instanas_gym.utils.files import FileFormatError, atomic_save

from .conftest import FUZZ_COUNTS
from .reliability_assets import SPACE, write_assets, write_export

FILE_ERRORS = (FileNotFoundError, FileFormatError)
#: A case running this long is a hang (every case here takes milliseconds).
HANG_S = 60
#: Memory the whole module may add to the process's peak.
MAX_EXTRA_BYTES = 1 << 30


def cases(n: int):
    return settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture(scope="module", autouse=True)
def bounded_memory():
    """The module's cases together raise the process's peak memory by less than 1 GiB."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    yield
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before < MAX_EXTRA_BYTES


@contextmanager
def no_hang():
    def fail(*_):
        raise AssertionError(f"a case ran {HANG_S} s: it hangs")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(HANG_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def loaded_or_refused(load, path: Path, name: str | None = None, errors: tuple = FILE_ERRORS):
    """``load(path)``'s value, or None when it raised one of ``errors`` naming the file."""
    FUZZ_COUNTS[name or path.stem] = FUZZ_COUNTS.get(name or path.stem, 0) + 1
    with no_hang():
        try:
            return load(path)
        except errors as err:
            assert path.name in str(err), f"{type(err).__name__} does not name {path.name}: {err}"
    return None


JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.floats(), st.integers(), st.text(max_size=4)),
                    lambda children: st.one_of(st.lists(children, max_size=18),
                                               st.dictionaries(st.text(max_size=6), children, max_size=4)),
                    max_leaves=40)
TEXT = st.one_of(st.text(max_size=40), st.just("[" * 5000), st.just("1" * 5000), st.just('{"a": NaN}'))
MUTATIONS = st.tuples(st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 255)), min_size=1, max_size=8),
                      st.one_of(st.none(), st.integers(0, 20000)))


def mutate(data: bytes, flips: list[tuple[int, int]], truncate: int | None) -> bytes:
    b = bytearray(data)
    for pos, val in flips:
        b[pos % len(b)] = val
    return bytes(b[:truncate] if truncate is not None else b)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Any]:
    """One valid file of each torch format, a latency table and an export folder."""
    folder = tmp_path_factory.mktemp("valid")
    assets = write_assets(folder)
    family = ArchitectureFamily(np.stack([mobilenetv2_mask(), all_ops_mask()]), dataset="fashion_mnist")
    router = Router(ControllerConfig((4, 8), None), 1, 2)
    save_router(router, folder / "router.pt", family.masks, [1.0, 2.0], 0.1)
    save_policy(folder / "policy.pt", "family", router, family)
    save_controller(Controller(1, (4, 8), (1, 2), input_size=14), folder / "controller.pt")
    (folder / "family.json").write_text(json.dumps(family.to_dict()))
    return {"supernet": Path(assets["supernet"]), "latency_table": Path(assets["latency_table"]),
            "router": folder / "router.pt", "policy": folder / "policy.pt", "controller": folder / "controller.pt",
            "family": folder / "family.json", "export": write_export(folder / "export"),
            "supernet state": torch.load(assets["supernet"], weights_only=True)}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A folder whose files each case overwrites."""
    return tmp_path_factory.mktemp("scratch")


# ---- torch files ----------------------------------------------------------------------------------
@cases(120)
@given(mutation=MUTATIONS)
def test_damaged_supernet_checkpoints(files, scratch, mutation):
    """Bytes flipped or cut: refused, or (bytes the loader never reads) the same weights as the original."""
    path = scratch / "damaged.pt"
    path.write_bytes(mutate(files["supernet"].read_bytes(), *mutation))
    ckpt = loaded_or_refused(load_checkpoint, path, "damaged supernet bytes")
    if ckpt is not None:  # the bytes changed were ones torch does not read
        original = files["supernet state"]
        assert all(torch.equal(v, original["model"][k]) for k, v in ckpt["model"].items())
        assert {k: v for k, v in ckpt.items() if k != "model"} == {k: v for k, v in original.items() if k != "model"}


PLAIN = st.one_of(JSON, hnp.arrays(st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_]),
                                   hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)).map(torch.from_numpy))


@cases(10)
@given(field=st.sampled_from(["format", "space", "dataset", "mean", "std", "model", "model entry", "space entry"]),
       value=PLAIN, key=st.sampled_from(["stem.0.weight", "classifier.weight", "std", "mean", "width_mult",
                                         "num_classes", "input_size", "in_channels", "cell_merge"]))
def test_supernet_checkpoints_with_wrong_contents(files, scratch, field, value, key):
    original = files["supernet state"]
    state = original | {"model": dict(original["model"]), "space": dict(original["space"])}
    if field == "model entry":
        state["model"][key] = value
    elif field == "space entry":
        state["space"][key] = value
    else:
        state[field] = value
    path = scratch / "wrong.pt"
    atomic_save(state, path)
    loaded_or_refused(lambda p: build_supernet(load_checkpoint(p), p), path, "supernet contents")


LOADERS = {"router": load_router, "policy": load_policy, "controller": load_controller}


@cases(120)
@given(kind=st.sampled_from(sorted(LOADERS)), field=st.sampled_from(["config", "state_dict", "meta", "family",
                                                                     "family_masks", "latency_ms", "price_per_ms",
                                                                     "view", "format", "config entry", "bytes"]),
       value=PLAIN, mutation=MUTATIONS)
def test_damaged_controller_router_and_policy_files(files, scratch, kind, field, value, mutation):
    path = scratch / f"damaged_{kind}.pt"
    if field == "bytes":
        path.write_bytes(mutate(files[kind].read_bytes(), *mutation))
    else:
        state = torch.load(files[kind], weights_only=True)
        if field == "config entry":
            state["config"] = dict(state["config"], **{"widths": value} if mutation[1] else {"k": value})
        else:
            state[field] = value
        buf = io.BytesIO()
        torch.save(state, buf)
        path.write_bytes(buf.getvalue())
    loaded_or_refused(LOADERS[kind], path, f"{kind} files")


# ---- JSON files -----------------------------------------------------------------------------------
@cases(150)
@given(field=st.sampled_from(["format", "ops_ms", "fixed_ms", "opens_stage", "meta", "validation", "threads",
                              "entry", None]),
       value=JSON, text=st.one_of(st.none(), TEXT))
def test_damaged_latency_tables(files, scratch, field, value, text):
    d = json.loads(files["latency_table"].read_text())
    if field == "threads":
        d["meta"]["threads"] = value
    elif field == "entry":
        d["ops_ms"][3][2] = value
    elif field is not None:
        d[field] = value
    path = scratch / "damaged.json"
    path.write_text(text if text is not None else json.dumps(d))
    table = loaded_or_refused(lambda p: LatencyTable.load(p, SPACE), path, "latency tables")
    if table is not None:  # every sum the reward takes stays finite
        assert np.isfinite(table.network_ms(np.ones((17, 5)))) and table.cells_ms(np.ones((17, 5))) > 0


@cases(150)
@given(field=st.sampled_from(["format", "ops", "dataset", "supernet", "meta", "arms", "arm", "mask", "name",
                              "latency_ms"]),
       value=JSON, text=st.one_of(st.none(), TEXT))
def test_damaged_family_files(files, scratch, field, value, text):
    d = json.loads(files["family"].read_text())
    if field in ("mask", "name", "latency_ms"):
        d["arms"][1][field] = value
    elif field == "arm":
        d["arms"][0] = value
    else:
        d[field] = value
    path = scratch / "damaged.json"
    path.write_text(text if text is not None else json.dumps(d))
    family = loaded_or_refused(load_family, path, "family files")
    if family is not None:
        assert family.masks.shape[1:] == MASK_SHAPE and family.k >= 1


ARRAYS = st.sampled_from([np.bool_, np.uint8, np.int8, np.int64, np.float16, np.float64, np.complex64]).flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, max_side=18)))


@cases(100)
@given(content=st.one_of(JSON.map(json.dumps), TEXT,
                         st.fixed_dictionaries({"format": st.just("instanas-mask-v1"), "mask": JSON,
                                                "ops": st.one_of(st.just(None), JSON)}).map(json.dumps)),
       npy=st.one_of(st.none(), ARRAYS))
def test_damaged_mask_files(scratch, content, npy):
    path = scratch / ("damaged.json" if npy is None else "damaged.npy")
    if npy is None:
        path.write_text(content)
    else:
        np.save(path, npy)
    mask = loaded_or_refused(load_mask, path, "mask files")
    if mask is not None:
        assert mask.shape == MASK_SHAPE and mask.dtype == np.uint8


@cases(50)
@given(stored=st.one_of(JSON, st.fixed_dictionaries({"settings": st.just({"a": 1}), "rows": JSON, "result": JSON})),
       text=st.one_of(st.none(), TEXT))
def test_damaged_comparison_results(scratch, stored, text):
    path = scratch / "result.json"
    path.write_text(text if text is not None else json.dumps(stored))
    loaded_or_refused(lambda p: finished_result(p, {"a": 1}), path, "comparison results", (ValueError,))


# ---- outcomes files ------------------------------------------------------------------------------
KEY = {"format": OUTCOMES_FORMAT, "dataset": "fashion_mnist", "split": "test", "images": 20, "scored_images": 20}
GOOD = {"masks": np.stack([mobilenetv2_mask(), all_ops_mask()]), "prediction": np.zeros((2, 20), np.int16),
        "confidence": np.full((2, 20), 0.5, np.float32), "probs": np.full((2, 20, 10), 0.1, np.float16),
        "loss": np.ones(20, np.float32)}


@cases(150)
@given(field=st.sampled_from([*GOOD, "key", "key entry", "bytes"]), array=ARRAYS, value=JSON, mutation=MUTATIONS)
def test_damaged_outcomes_files(scratch, field, array, value, mutation):
    arrays, key = dict(GOOD), dict(KEY)
    if field in GOOD:
        arrays[field] = array
    elif field == "key entry":
        key["scored_images" if mutation[1] else "dataset"] = value
    arrays["key"] = np.array(json.dumps(key if field != "key" else value))
    path = scratch / "damaged.npz"
    np.savez_compressed(path, **arrays)
    if field == "bytes":
        path.write_bytes(mutate(path.read_bytes(), *mutation))
    stored = loaded_or_refused(lambda p: read_outcomes(p, None), path, "outcomes files")
    if stored is not None:
        a, n = stored
        assert a["probs"].shape == (len(a["masks"]), n, 10) and ((a["prediction"] >= 0) & (a["prediction"] < 10)).all()


# ---- the deploy folder ---------------------------------------------------------------------------
def _deploy_folder(files: dict[str, Path], scratch) -> tuple[Path, dict]:
    folder = scratch / "model"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(files["export"], folder)
    return folder, json.loads((folder / "manifest.json").read_text())


def _serve(folder: Path) -> None:
    InstaNASModel.load(folder).predict(np.zeros((2, 28, 28, 1), np.uint8))


@cases(150)
@given(field=st.sampled_from(["format", "image_shape", "num_classes", "controller", "opset", "batchnorm",
                              "architectures", "arch", "file", "mask", "share"]),
       value=st.one_of(JSON, st.sampled_from(["../x.onnx", "/etc/passwd", "controller.onnx", "manifest.json"])),
       text=st.one_of(st.none(), TEXT))
def test_damaged_manifests(files, scratch, field, value, text):
    folder, m = _deploy_folder(files, scratch)
    if field in ("file", "mask", "share"):
        m["architectures"][0][field] = value
    elif field == "arch":
        m["architectures"].append(value)
    else:
        m[field] = value
    (folder / "manifest.json").write_text(text if text is not None else json.dumps(m))
    FUZZ_COUNTS["manifests"] = FUZZ_COUNTS.get("manifests", 0) + 1
    with no_hang():
        try:
            _serve(folder)
        except FILE_ERRORS as err:
            assert str(folder) in str(err)


@cases(60)
@given(which=st.sampled_from(["controller", "architecture"]), mutation=MUTATIONS)
def test_damaged_graphs(files, scratch, which, mutation):
    folder, m = _deploy_folder(files, scratch)
    path = folder / (m["controller"] if which == "controller" else m["architectures"][0]["file"])
    path.write_bytes(mutate(path.read_bytes(), *mutation))
    FUZZ_COUNTS["graphs"] = FUZZ_COUNTS.get("graphs", 0) + 1
    with no_hang():
        try:
            _serve(folder)
        except FILE_ERRORS as err:
            assert path.name in str(err)
