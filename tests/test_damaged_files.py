"""Files that are damaged, or valid-looking but wrong: the deploy folder, supernet checkpoints,
controllers, routers and policies, latency tables, families, outcomes files and a comparison's
stored results. Each gets one clear error naming the file (FileFormatError, or FileNotFoundError for
a file that is not there), before anything is built from it. Each case here is a defect that once
got through."""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import instanas_gym
from instanas_gym.agents.config import ControllerConfig
from instanas_gym.agents.controller import Controller, load_controller, save_controller
from instanas_gym.agents.policy import load_policy, save_policy
from instanas_gym.agents.router import Router
from instanas_gym.agents.router_file import load_router, resolve_family, save_router
from instanas_gym.deploy.engine import InstaNASModel
from instanas_gym.envs.config import EnvConfig
from instanas_gym.judge.config import CompareConfig
from instanas_gym.judge.stored_results import comparison_settings, finished_result
from instanas_gym.latency.table import LatencyTable, build_hint
from instanas_gym.model.checkpoint import load_checkpoint, load_supernet, supernet_state, train_hint
from instanas_gym.model.outcomes import OutcomeStore, damaged_hint, outcomes_key, read_outcomes, write_outcomes
from instanas_gym.space.data import load_split
from instanas_gym.space.family import ArchitectureFamily, load_family, save_family
from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask
from instanas_gym.utils.files import FileFormatError, atomic_save
from instanas_gym.utils.paths import ASSETS, BUNDLED_LATENCY_TABLE, BUNDLED_SUPERNET
from instanas_gym.utils.run import RunConfig

from .reliability_assets import SPACE, member_data, tiny_model, write_assets, write_export


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, str]:
    return write_assets(tmp_path_factory.mktemp("assets"))


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return write_export(tmp_path_factory.mktemp("export") / "model")


def _copy_export(export: Path, tmp_path: Path) -> tuple[Path, dict]:
    folder = tmp_path / "model"
    shutil.copytree(export, folder)
    return folder, json.loads((folder / "manifest.json").read_text())


def _write_manifest(folder: Path, manifest: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest))


# ---- the deploy folder ---------------------------------------------------------------------------------
def test_paths_in_the_manifest_stay_inside_the_folder(export, tmp_path):
    folder, manifest = _copy_export(export, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(folder / "controller.onnx", outside / "outside.onnx")  # a valid graph, outside the folder
    arch = manifest["architectures"][0]["file"]
    (folder / "link.onnx").symlink_to(outside / "outside.onnx")
    (folder / "inner.onnx").symlink_to(folder / arch)  # a link that stays inside is fine
    cases = [("controller", "../outside/outside.onnx", "relative path inside the folder"),
             ("controller", str(outside / "outside.onnx"), "relative path inside the folder"),
             ("file", "/etc/passwd", "relative path inside the folder"),
             ("file", "sub/../../outside/outside.onnx", "relative path inside the folder"),
             ("file", "link.onnx", "leads outside the folder"),
             ("controller", "link.onnx", "leads outside the folder"),
             ("file", 3, "must be a file name"),
             ("controller", "", "must be a file name")]
    for field, value, message in cases:
        bad = json.loads(json.dumps(manifest))
        (bad if field == "controller" else bad["architectures"][0])[field] = value
        _write_manifest(folder, bad)
        with pytest.raises(FileFormatError, match=message) as err:
            InstaNASModel.load(folder)
        assert "manifest.json" in str(err.value)
    manifest["architectures"][0]["file"] = "inner.onnx"
    _write_manifest(folder, manifest)
    InstaNASModel.load(folder).predict(np.zeros((1, 28, 28, 1), np.uint8))
    manifest["architectures"][0]["file"] = "missing.onnx"
    _write_manifest(folder, manifest)
    with pytest.raises(FileNotFoundError, match=r"manifest\.json names 'missing\.onnx'"):
        InstaNASModel.load(folder)


def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


@pytest.mark.parametrize("damage, message", [
    ("corrupt JSON", "not valid JSON"),
    ("a JSON list", "JSON object"),
    ("no architectures", "'architectures' must be a non-empty list"),
    ("no image_shape", "'image_shape' must be"),
    ("image_shape of 2", "'image_shape' must be"),
    ("huge image", "'image_shape' must be"),
    ("other format", "'format' must be"),
    ("mask of 8 values", r"'architectures\[0\]\.mask' must be 17 lists of 5"),
    ("mask of 2s", r"'architectures\[0\]\.mask' must be 17 lists"),
    ("repeated mask", r"architectures\[1\]\.mask' repeats"),
    ("share NaN", r"'architectures\[0\]\.share'"),
    ("num_classes text", "'num_classes'"),
    ("architecture without file", r"'architectures\[0\]' must be an object with 'file'"),
    ("deep nesting", "not valid JSON"),
])
def test_a_damaged_manifest_gets_one_error_naming_it(export, tmp_path, damage, message):
    folder, m = _copy_export(export, tmp_path)
    arch = m["architectures"][0]
    text = None
    if damage == "corrupt JSON":
        text = json.dumps(m)[:-30]
    elif damage == "a JSON list":
        text = "[]"
    elif damage == "deep nesting":
        text = "[" * 100_000 + "]" * 100_000
    else:
        m = {"no architectures": lambda: _without(m, "architectures"),
             "no image_shape": lambda: _without(m, "image_shape"),
             "image_shape of 2": lambda: m | {"image_shape": [28, 28]},
             "huge image": lambda: m | {"image_shape": [10**6, 10**6, 1]},
             "other format": lambda: m | {"format": "instanas-deploy-v0"},
             "mask of 8 values": lambda: m | {"architectures": [arch | {"mask": [1] * 8}]},
             "mask of 2s": lambda: m | {"architectures": [arch | {"mask": (2 * all_ops_mask()).tolist()}]},
             "repeated mask": lambda: m | {"architectures": [arch, arch]},
             "share NaN": lambda: m | {"architectures": [arch | {"share": float("nan")}]},
             "num_classes text": lambda: m | {"num_classes": "10"},
             "architecture without file": lambda: m | {"architectures": [_without(arch, "file")]}}[damage]()
    (folder / "manifest.json").write_text(text if text is not None else json.dumps(m))
    with pytest.raises(FileFormatError, match=message) as err:
        InstaNASModel.load(folder)
    assert str(folder / "manifest.json") in str(err.value)


def test_a_damaged_or_wrong_graph_gets_one_error_naming_it(export, tmp_path):
    folder, manifest = _copy_export(export, tmp_path)
    arch = folder / manifest["architectures"][0]["file"]
    good_arch, good_controller = arch.read_bytes(), (folder / "controller.onnx").read_bytes()
    (folder / "controller.onnx").write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(FileFormatError, match=r"controller\.onnx is not a valid ONNX graph"):
        InstaNASModel.load(folder)
    (folder / "controller.onnx").write_bytes(good_arch)  # a network where the controller should be
    with pytest.raises(FileFormatError, match=r"controller\.onnx does not return one output of shape \(B, 17, 5\)"):
        InstaNASModel.load(folder)
    (folder / "controller.onnx").write_bytes(good_controller)
    arch.write_bytes(np.random.default_rng(1).bytes(2000))
    engine = InstaNASModel.load(folder)  # architecture graphs are read when first served
    with pytest.raises(FileFormatError, match=re.escape(arch.name) + " is not a valid ONNX graph"):
        engine.predict(np.zeros((2, 28, 28, 1), np.uint8))
    arch.write_bytes(good_controller)
    with pytest.raises(FileFormatError, match=re.escape(arch.name) + r" does not return one output of shape \(B, 10\)"):
        InstaNASModel.load(folder).predict(np.zeros((2, 28, 28, 1), np.uint8))
    arch.write_bytes(good_arch)
    _write_manifest(folder, manifest | {"image_shape": [32, 32, 3]})
    with pytest.raises(FileFormatError, match=r"controller\.onnx does not take uint8 images .* of shape \(32, 32, 3\)"):
        InstaNASModel.load(folder)
    _write_manifest(folder, manifest)
    with pytest.raises(ValueError, match=r"images must be uint8 .*\(28, 28, 1\)"):
        InstaNASModel.load(folder).predict(np.zeros((2, 32, 32, 3), np.uint8))


def test_the_demo_gets_the_same_checked_errors(export, tmp_path):
    from instanas_gym.demo.model import served_folder
    from instanas_gym.demo.state import DemoState

    folder, manifest = _copy_export(export, tmp_path)
    _write_manifest(folder, _without(manifest, "image_shape"))
    assert served_folder(export_folder=folder) == folder
    with pytest.raises(FileFormatError, match=r"manifest\.json: field 'image_shape'"):
        DemoState(folder, "fashion_mnist")
    _write_manifest(folder, manifest | {"controller": "../../etc/passwd"})
    with pytest.raises(FileFormatError, match="relative path inside the folder"):
        DemoState(folder, "fashion_mnist")


# ---- checkpoints -----------------------------------------------------------------------------------
def test_eight_flipped_bytes_of_the_bundled_supernet_are_refused(tmp_path):
    copy = tmp_path / "copy.pt"
    shutil.copy(BUNDLED_SUPERNET, copy)
    offset, size = member_data(copy, "data/10")  # a weight tensor's bytes
    data = bytearray(copy.read_bytes())
    for i in range(8):
        data[offset + i * size // 8] ^= 0x40
    copy.write_bytes(bytes(data))
    with pytest.raises(FileFormatError, match=r"copy\.pt is a damaged .* does not match the checksum"):
        gym.make("InstaNAS-FashionMNIST-v0", supernet=str(copy))
    copy.write_bytes(BUNDLED_SUPERNET.read_bytes()[:-5000] + bytes(5000))  # its central directory zeroed
    with pytest.raises(FileFormatError, match=r"copy\.pt"):
        load_checkpoint(copy)


def test_an_older_torch_file_without_checksums_still_loads(tmp_path):
    state = supernet_state(tiny_model(), "fashion_mnist")
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    model, _ = load_supernet(tmp_path / "legacy.pt")
    assert torch.equal(model.classifier.weight, state["model"]["classifier.weight"])


@pytest.mark.parametrize("damage, message", [
    ("mean NaN", "mean must be a non-empty list of finite numbers"),
    ("std 0", "std must be a non-empty list of positive finite numbers"),
    ("std text", "std must be"),
    ("mean of 2", "mean and std must hold one value per input channel"),
    ("all weights NaN", "hold NaN or infinite values"),
    ("one weight infinite", r"weights 'classifier\.weight' hold NaN or infinite"),
    ("std buffer 0", "std buffer holds values <= 0"),
    ("weights not tensors", "not a dict of tensors"),
    ("huge width", r"needs stem\.0\.weight of shape"),
    ("other classes", r"needs classifier\.weight of shape"),
])
def test_impossible_checkpoint_contents_are_refused(tmp_path, damage, message):
    state = supernet_state(tiny_model(), "fashion_mnist")
    weights = state["model"]
    if damage == "mean NaN":
        state["mean"] = [float("nan")]
    elif damage == "std 0":
        state["std"] = [0.0]
    elif damage == "std text":
        state["std"] = "0.35"
    elif damage == "mean of 2":
        state["mean"] = [0.3, 0.3]
    elif damage == "all weights NaN":
        for t in weights.values():
            if t.is_floating_point():
                t.fill_(float("nan"))
    elif damage == "one weight infinite":
        weights["classifier.weight"][0, 0] = float("inf")
    elif damage == "std buffer 0":
        weights["std"].zero_()
    elif damage == "weights not tensors":
        state["model"] = {"a": [1.0]}
    elif damage == "huge width":
        state["space"] = dict(state["space"], width_mult=1e6)
    else:
        state["space"] = dict(state["space"], num_classes=10**9)
    atomic_save(state, tmp_path / "bad.pt")
    with pytest.raises(FileFormatError, match=message) as err:
        load_supernet(tmp_path / "bad.pt")
    assert "bad.pt" in str(err.value)


def test_controllers_routers_and_policies_with_impossible_contents_are_refused(tmp_path):
    controller = Controller(1, (4, 8), (1, 2), input_size=14)
    router = Router(ControllerConfig((4, 8), None), 1, 2)
    family = ArchitectureFamily(np.stack([mobilenetv2_mask(), all_ops_mask()]), dataset="fashion_mnist")
    save_router(router, tmp_path / "router.pt", family.masks, [1.0, 2.0], 0.1, family_names=["a", "b"])
    save_policy(tmp_path / "policy.pt", "family", router, family)
    for path, load in ((tmp_path / "router.pt", load_router), (tmp_path / "policy.pt", load_policy)):
        state = torch.load(path, weights_only=True)
        torch.save(state | {"meta": "garbage"}, tmp_path / "meta.pt")
        with pytest.raises(FileFormatError, match=r"meta\.pt holds a .* meta must be a dict"):
            load(tmp_path / "meta.pt")
        nan = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
               for k, v in state["state_dict"].items()}
        torch.save(state | {"state_dict": nan}, tmp_path / "nan.pt")
        with pytest.raises(FileFormatError, match=r"nan\.pt is a damaged .* NaN"):
            load(tmp_path / "nan.pt")
        huge = dict(state["config"], widths=(10**6, 10**6))
        torch.save(state | {"config": huge}, tmp_path / "huge.pt")  # a config the weights do not fit
        with pytest.raises(FileFormatError, match=r"huge\.pt holds a .* do not fit together"):
            load(tmp_path / "huge.pt")
    save_controller(controller, tmp_path / "c.pt")
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    torch.save(state | {"config": dict(state["config"], widths=(10**6, 10**6))}, tmp_path / "c_huge.pt")
    with pytest.raises(FileFormatError, match=r"c_huge\.pt holds a controller .* do not fit together"):
        load_controller(tmp_path / "c_huge.pt")


# ---- latency tables and families -------------------------------------------------------------------
@pytest.mark.parametrize("damage, message", [
    ("entry 1e308", r"ops_ms must be finite, in \[0, 1e\+06\] ms"),
    ("fixed 1e308", r"fixed_ms must be a finite number in \[0, 1e\+06\]"),
    ("all zero", "ops_ms are all 0"),
])
def test_a_latency_table_that_would_break_the_reward_is_refused(assets, tmp_path, damage, message):
    d = json.loads(Path(assets["latency_table"]).read_text())
    if damage == "entry 1e308":
        d["ops_ms"][4][1] = 1e308
    elif damage == "fixed 1e308":
        d["fixed_ms"] = 1e308
    else:
        d["ops_ms"] = np.zeros((17, 5)).tolist()
    (tmp_path / "table.json").write_text(json.dumps(d))
    with pytest.raises(FileFormatError, match=message) as err:
        gym.make("InstaNAS-FashionMNIST-v0", **{**assets, "latency_table": str(tmp_path / "table.json")})
    assert "table.json" in str(err.value)


def _family(**fields) -> ArchitectureFamily:
    return ArchitectureFamily(np.stack([mobilenetv2_mask(), all_ops_mask()]), **fields)


@pytest.mark.parametrize("ops", ["reversed", "three names", "missing", "text"])
def test_a_family_of_other_ops_is_refused(tmp_path, ops):
    d = _family().to_dict()
    d["ops"] = {"reversed": d["ops"][::-1], "three names": d["ops"][:3], "missing": None, "text": "ops"}[ops]
    (tmp_path / "fam.json").write_text(json.dumps(d))
    with pytest.raises(FileFormatError, match=r"fam\.json: field 'ops' must name the search space's ops"):
        load_family(tmp_path / "fam.json")


def test_a_family_of_another_data_set_is_refused_naming_its_file(assets, tmp_path):
    from instanas_gym.envs.family import FamilyAction
    from instanas_gym.envs.lookup import FamilyLookupVectorEnv

    save_family(tmp_path / "cifar.json", _family(dataset="cifar10"))
    env = gym.make("InstaNAS-FashionMNIST-v0", **assets)
    for make in (lambda: FamilyAction(env, tmp_path / "cifar.json"),
                 lambda: resolve_family(str(tmp_path / "cifar.json"), "fashion_mnist"),
                 lambda: FamilyLookupVectorEnv(2, family=tmp_path / "cifar.json", **assets)):
        with pytest.raises(ValueError, match=r"cifar\.json: its architectures are of a cifar10 supernet"):
            make()


# ---- outcomes files ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fmnist_test():
    return load_split("fashion_mnist", "test")


def _outcomes(assets, fmnist_test, tmp_path, **change) -> tuple[Path, dict]:
    """An outcomes file of two masks on 20 images under the right key, with ``change`` applied to its arrays."""
    key = outcomes_key(assets["supernet"], fmnist_test) | {"scored_images": 20}
    arrays = {"masks": np.stack([mobilenetv2_mask(), all_ops_mask()]), "prediction": np.zeros((2, 20), np.int16),
              "confidence": np.full((2, 20), 0.5, np.float32), "probs": np.full((2, 20, 10), 0.1, np.float16),
              "loss": np.ones(20, np.float32)} | change
    path = tmp_path / "last_outcomes_test.npz"
    write_outcomes(path, key, **arrays)
    return path, key


@pytest.mark.parametrize("change, message", [
    ({"prediction": np.full((2, 20), 99, np.int16)}, r"a prediction is outside \[0, 10\)"),
    ({"prediction": np.full((2, 20), 99, np.int16), "probs": np.full((2, 20, 100), 0.01, np.float16)},
     r"probs \(2, 20, 10\) expected"),
    ({"confidence": np.full((2, 20), 1.5, np.float32)}, r"outside \[0, 1\]"),
    ({"loss": np.ones(19, np.float32)}, r"loss \(20,\) expected"),
    ({"masks": np.full((2, 17, 5), 3, np.uint8)}, "masks hold values other than 0 and 1"),
])
def test_outcomes_with_impossible_answers_are_refused(assets, fmnist_test, tmp_path, change, message):
    path, key = _outcomes(assets, fmnist_test, tmp_path, **change)
    with pytest.raises(FileFormatError, match=message) as err:
        read_outcomes(path, {k: v for k, v in key.items() if k != "scored_images"})
    assert str(path) in str(err.value) and "rebuild=True" in str(err.value)


def test_a_damaged_outcomes_file_is_refused_not_recomputed(assets, fmnist_test, tmp_path):
    ckpt = tmp_path / "last.pt"
    shutil.copy(assets["supernet"], ckpt)
    path, _ = _outcomes({"supernet": str(ckpt)}, fmnist_test, tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # inside the compressed arrays
    path.write_bytes(bytes(data))
    model, _ = load_supernet(ckpt)
    for damaged in (bytes(data), np.random.default_rng(0).bytes(3000), b""):
        path.write_bytes(damaged)
        with pytest.raises(FileFormatError, match=re.escape(str(path))):
            OutcomeStore(model, ckpt, fmnist_test, progress=False)
        assert path.read_bytes() == damaged  # left as it is for the user to see


def test_no_message_asks_to_delete_or_edit_a_file_of_the_package():
    package = Path(instanas_gym.__file__).parent
    source = "\n".join(p.read_text() for p in package.rglob("*.py"))
    assert not re.search(r"\b(delete|remove|edit) it\b", source)
    for hint in (damaged_hint(ASSETS / "supernet_fashion_mnist_outcomes_test.npz"), train_hint(BUNDLED_SUPERNET),
                 build_hint(BUNDLED_LATENCY_TABLE)):
        assert str(ASSETS) not in hint and "reinstall" in hint
    assert "rebuild=True" in damaged_hint(ASSETS / "x.npz") and "outcomes" in damaged_hint(ASSETS / "x.npz")
    with pytest.raises(FileFormatError) as err:
        LatencyTable.load(BUNDLED_LATENCY_TABLE, SPACE)  # the bundled table, for another search space
    assert "build-latency-table" in str(err.value) and "rebuild it" not in str(err.value)


# ---- a comparison's stored results ---------------------------------------------------------------------
def test_a_stored_comparison_result_is_keyed_by_contents(assets, tmp_path):
    ckpt, table = tmp_path / "last.pt", tmp_path / "latency.json"
    shutil.copy(assets["supernet"], ckpt)
    shutil.copy(assets["latency_table"], table)
    cfg = CompareConfig(env=EnvConfig(supernet=str(ckpt), latency_table=str(table)), run=RunConfig(out=str(tmp_path)))
    settings = comparison_settings(cfg)
    assert set(settings["content"]) == {"supernet_sha256", "latency_table_sha256", "family_masks_sha256",
                                        "train_data_sha256", "test_data_sha256"}
    result = tmp_path / "random_seed0" / "result.json"
    result.parent.mkdir()
    rows, judged = [{"env_steps": 32, "reward": 0.5}], {"accuracy": 0.905}
    result.write_text(json.dumps({"settings": settings, "rows": rows, "result": judged}))
    assert finished_result(result, comparison_settings(cfg)) == (rows, judged)
    atomic_save(supernet_state(tiny_model(seed=1), "fashion_mnist"), ckpt)  # another supernet, same path
    with pytest.raises(ValueError, match=r"result\.json: written by a comparison with other settings or files "
                                         r"\(content\.supernet_sha256\)"):
        finished_result(result, comparison_settings(cfg))
    shutil.copy(assets["supernet"], ckpt)
    d = json.loads(table.read_text())
    d["fixed_ms"] += 1.0
    table.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"content\.latency_table_sha256"):
        finished_result(result, comparison_settings(cfg))
    shutil.copy(assets["latency_table"], table)
    for damaged in ({"settings": settings, "rows": "x", "result": judged},
                    {"settings": settings, "rows": rows, "result": {"accuracy": "high"}}, {"settings": 3}):
        result.write_text(json.dumps(damaged))
        with pytest.raises(FileFormatError, match=r"result\.json is a damaged comparison result"):
            finished_result(result, settings)
    result.write_text("{")
    with pytest.raises(FileFormatError, match=r"result\.json is not a valid comparison result"):
        finished_result(result, settings)


def test_a_torch_file_with_compressed_members_is_refused(tmp_path):
    """torch writes stored members only; a compressed one could expand to any size when loaded."""
    atomic_save(supernet_state(tiny_model(), "fashion_mnist"), tmp_path / "last.pt")
    with zipfile.ZipFile(tmp_path / "last.pt") as src, \
            zipfile.ZipFile(tmp_path / "zipped.pt", "w", compression=zipfile.ZIP_DEFLATED) as dest:
        for info in src.infolist():
            dest.writestr(info.filename, src.read(info.filename))
    with pytest.raises(FileFormatError, match=r"zipped\.pt is a damaged .* is compressed, which torch never writes"):
        load_checkpoint(tmp_path / "zipped.pt")


@pytest.mark.parametrize("change", ["truncated", "extended"])
def test_a_damaged_fashion_mnist_file_in_torchvisions_layout_is_named(fmnist_root, tmp_path, change):
    from instanas_gym.space.data import load_split

    root = tmp_path / "data"
    shutil.copytree(fmnist_root, root)
    path = root / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte"
    data = path.read_bytes()
    path.write_bytes(data[:1000] if change == "truncated" else data + b"\0" * 7)
    with pytest.raises(ValueError, match=re.escape(str(path)) + " is a damaged IDX file"):
        load_split("fashion_mnist", "test", root)
    assert len(load_split("fashion_mnist", "train", root)) == 512  # the other split's files are whole
