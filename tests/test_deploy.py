"""Export of architectures as standalone networks and ONNX graphs, the ONNX Runtime engine, and
latency tables for the runtime."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import onnxruntime as ort
import pytest
import torch

from instanas_gym.agents.controller import Controller
from instanas_gym.deploy.engine import InstaNASModel, mask_bits
from instanas_gym.deploy.export import export_model
from instanas_gym.envs.config import EnvConfig
from instanas_gym.latency import onnx as onnx_latency
from instanas_gym.latency.calibration import calibrate
from instanas_gym.latency.config import TableConfig
from instanas_gym.latency.onnx import build_onnx_table, fit_costs, measure_onnx_masks
from instanas_gym.latency.table import LatencyTable
from instanas_gym.model.subnetwork import SubNetwork, onnx_bytes
from instanas_gym.model.supernet import Supernet
from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask, random_masks
from instanas_gym.space.search_space import MASK_SHAPE, SearchSpace
from instanas_gym.utils.paths import default_latency_table
from tests.fixtures import macs_runtime_ms

from .conftest import tiny_supernet, trained_like

IMAGE = (28, 28, 1)


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *IMAGE)).astype(np.uint8)


def _reference(model: Supernet, images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), mask).numpy()


def _masks() -> list[np.ndarray]:
    """Empty identity cells, empty stage openers (fallbacks), multi-op cells, single ops, all ops."""
    empty = np.zeros(MASK_SHAPE, np.uint8)
    sparse = random_masks(np.random.default_rng(1), 1, 0.15)[0]
    return [empty, sparse, mobilenetv2_mask(), all_ops_mask(), random_masks(np.random.default_rng(2), 1, 0.5)[0]]


@pytest.mark.parametrize("merge", ["mean", "sum"])
def test_exported_architectures_compute_what_the_supernet_computes(merge):
    torch.manual_seed(0)
    model = trained_like(Supernet(SearchSpace(0.1, 28, 1, 10, merge), (0.3,), (0.35,)))
    images = _images(32)
    sizes = []
    for mask in _masks():
        ref = _reference(model, images, mask)
        sub = SubNetwork(model, mask)
        with torch.no_grad():
            np.testing.assert_allclose(sub(torch.from_numpy(images)).numpy(), ref, atol=1e-5)
        graph = onnx_bytes(sub, IMAGE)
        (out,) = ort.InferenceSession(graph, providers=["CPUExecutionProvider"]).run(None, {"images": images})
        assert np.abs(out - ref).max() <= 1e-4
        assert (out.argmax(1) == ref.argmax(1)).all()
        sizes.append(len(graph))
    # only the chosen ops are in the graph: the empty mask's network is much smaller than all ops'
    assert sizes[0] * 3 < sizes[3]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = trained_like(tiny_supernet())
    controller = Controller(1, (8, 16), (1, 2), input_size=14)
    torch.nn.init.normal_(controller.head.weight, 0, 1.0)  # a controller that picks many architectures
    folder = tmp_path_factory.mktemp("deploy")
    manifest = export_model(folder, model, controller, _images(12, seed=1), extra={"dataset": "fashion_mnist"})
    return folder, model, controller.eval(), manifest


def test_the_engine_equals_the_pytorch_model_on_mixed_architectures(exported):
    folder, model, controller, manifest = exported
    assert len(manifest["architectures"]) > 4 and manifest["dataset"] == "fashion_mnist"
    assert sum(a["share"] for a in manifest["architectures"]) == pytest.approx(1.0)
    engine = InstaNASModel.load(folder, cache_size=2)
    images = _images(12, seed=1)
    out = engine.predict(images)
    with torch.no_grad():
        masks = (controller(torch.from_numpy(images)) >= 0).to(torch.uint8).numpy()
    np.testing.assert_array_equal(out["mask"], masks)
    ref = np.concatenate([_reference(model, images[i : i + 1], masks[i]) for i in range(len(images))])
    assert np.abs(out["logits"] - ref).max() <= 1e-4 and (out["prediction"] == ref.argmax(1)).all()
    assert len(engine.sessions) <= 2  # the cache bound holds
    assert engine.sessions_built >= len(set(out["served"]))
    single = engine.predict(images[:1])  # batch 1
    np.testing.assert_allclose(single["logits"], out["logits"][:1], atol=1e-5)


def test_an_unexported_mask_is_served_by_the_nearest_architecture(exported):
    folder, *_ = exported
    engine = InstaNASModel.load(folder)
    known = np.array(engine.manifest["architectures"][0]["mask"], np.uint8)
    near = known.copy()
    near[0, 0] ^= 1
    assert mask_bits(near) not in engine.graphs
    assert engine.serving_key(near) == mask_bits(known)


def test_the_engine_serves_without_pytorch(exported):
    folder, *_ = exported
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now fails
        import numpy as np
        from instanas_gym.deploy.engine import InstaNASModel
        out = InstaNASModel.load({str(folder)!r}).predict(np.zeros((3, 28, 28, 1), np.uint8))
        print(out["prediction"].shape, out["mask"].shape)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "(3,) (3, 17, 5)"


def test_engine_arguments_are_checked(exported, tmp_path):
    folder, *_ = exported
    with pytest.raises(ValueError, match="cache_size"):
        InstaNASModel.load(folder, cache_size=0)
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        InstaNASModel.load(tmp_path)
    with pytest.raises(ValueError, match="images"):
        InstaNASModel.load(folder).predict(np.zeros((28, 28, 1), np.uint8))


def test_the_fit_recovers_known_costs_and_calibration_finds_the_scale():
    rng = np.random.default_rng(0)
    space = SearchSpace(0.1, 28, 1, 10)
    truth = rng.uniform(0.01, 0.2, MASK_SHAPE)
    masks = space.effective_mask(random_masks(rng, 400, 0.4))
    measured = (masks * truth).sum((1, 2)) + 0.3
    ops_ms, fixed_ms, _, _ = fit_costs(masks, measured)
    np.testing.assert_allclose(ops_ms, truth, atol=1e-6)
    assert fixed_ms == pytest.approx(0.3)
    table = LatencyTable(ops_ms, fixed_ms, space.opens_stage.copy(), {}, {}, rng.uniform(0, 0.05, 17),
                         rng.uniform(0, 0.05, 17))  # per-cell terms too: calibration scales them alike
    scaled, report = calibrate(table, lambda m: 2.0 * np.asarray(table.network_ms(m)), masks[:20])
    assert report["scale"] == pytest.approx(2.0) and report["mape_after_pct"] < 1e-6 < report["mape_before_pct"]
    np.testing.assert_allclose(scaled.network_ms(masks), 2 * np.asarray(table.network_ms(masks)))
    with pytest.raises(ValueError, match="20"):
        calibrate(table, lambda m: m, masks[:21])


def test_a_tiny_onnx_table_builds_and_predicts_its_own_runtime(monkeypatch):
    """Each mask's sub-network is exported and timed in ONNX Runtime (two of them here, on the clock:
    any figures), and the fit of ``passes`` of them predicts that runtime: with the runtime's ms
    standing in by a table of per-op costs, exactly, on the masks it was fitted on."""
    model = trained_like(tiny_supernet())
    measured = measure_onnx_masks(model, np.stack([mobilenetv2_mask(), all_ops_mask()]), repeats=1)
    assert measured.shape == (2,) and (measured > 0).all()
    monkeypatch.setattr(onnx_latency, "measure_onnx_masks", macs_runtime_ms)
    table = build_onnx_table(model, TableConfig(passes=120, repeats=1))
    assert (table.ops_ms >= 0).all() and table.fixed_ms >= 0
    assert table.meta["runtime"] == "onnxruntime" and table.meta["threads"] == 1 and table.meta["passes"] == 120
    assert table.validation["fit"]["spearman"] == pytest.approx(1.0) and table.validation["fit"]["mape_pct"] < 1e-6
    table.check(model.space)
    with pytest.raises(ValueError, match="passes must be >= 120"):
        build_onnx_table(model, TableConfig(passes=119))


def test_masks_are_timed_beside_a_reference_so_a_drift_of_the_machine_cancels(monkeypatch):
    """Stand-in sessions whose ms are each graph's own times the machine's speed, which doubles and
    halves again while the masks are timed: the masks' times keep their true ratios exactly, at the
    reference's median speed."""
    model = tiny_supernet()
    masks = np.stack([mobilenetv2_mask(), all_ops_mask(), all_ops_mask()])
    true_ms = [0.5, 0.5, 2.0, 2.0]  # the reference (the MobileNetV2 path) first, then each mask
    sessions, speed = iter(range(len(true_ms))), iter(np.tile([1.0, 1.0, 2.0, 2.0, 1.0, 1.0], 100))
    monkeypatch.setattr(onnx_latency, "_session", lambda graph, threads, feed: next(sessions))
    monkeypatch.setattr(onnx_latency, "_block_ms", lambda session, feed, runs: true_ms[session] * next(speed))
    measured = measure_onnx_masks(model, masks, repeats=30)
    np.testing.assert_allclose(measured / measured[0], [1.0, 4.0, 4.0])
    assert measured[0] == pytest.approx(0.5)  # the reference's median speed over the call: 1.0


def test_the_latency_backend_picks_the_default_table():
    assert default_latency_table("fashion_mnist").name == "latency_fashion_mnist_onnxruntime.json"  # the default
    assert default_latency_table("fashion_mnist", "torch").name == "latency_fashion_mnist.json"
    assert EnvConfig().latency_backend == "onnxruntime"
    assert default_latency_table("fashion_mnist", "onnxruntime").name == "latency_fashion_mnist_onnxruntime.json"
    assert default_latency_table("cifar10", "onnxruntime").name == "latency_onnxruntime.json"
    with pytest.raises(ValueError, match="latency_backend"):
        default_latency_table("cifar10", "tensorrt")


def test_the_environment_calibrates_its_table_on_request(tiny_assets, monkeypatch):
    """The clock stands in by the true table here: the scale found is exactly the error put in."""
    from instanas_gym.envs import bandit as bandit_module
    from instanas_gym.envs.instanas_env import InstaNASEnv

    env = InstaNASEnv(**tiny_assets)
    t = env.bandit.table  # a table 3x off, as one measured on a slower machine would be
    monkeypatch.setattr(bandit_module, "measure_masks", lambda model, masks, *a, **k: np.asarray(t.network_ms(masks)))
    env.bandit.table = LatencyTable(3 * t.ops_ms, 3 * t.fixed_ms, t.opens_stage, t.meta)
    env.bandit.reward.use_table(env.bandit.table, 3.0)
    mask = mobilenetv2_mask()
    before_ms = env.bandit.table.cells_ms(mask)
    before_ra = float(env.bandit.reward.arch_reward(before_ms))
    lower, upper = env.latency_bounds
    report = env.calibrate_latency(n_masks=6)
    s = report["scale"]
    assert s == pytest.approx(1 / 3) and report["n_masks"] == 6 and report["mape_after_pct"] < report["mape_before_pct"]
    assert env.bandit.table.cells_ms(mask) == pytest.approx(s * before_ms)
    assert env.latency_bounds == pytest.approx((s * lower, s * upper))
    assert float(env.bandit.reward.arch_reward(env.bandit.table.cells_ms(mask))) == pytest.approx(before_ra)
    with pytest.raises(ValueError, match="20"):
        env.calibrate_latency(n_masks=21)


def test_exported_architectures_can_carry_batchnorm_statistics_of_their_own(tmp_path, fmnist_root):
    from instanas_gym.model.own_statistics import OwnStatistics
    from instanas_gym.space.data import load_split

    torch.manual_seed(0)
    model = trained_like(tiny_supernet())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    controller = Controller(1, (8,), (1,), input_size=14).eval()  # all-zero head: every op, one architecture
    data = load_split("fashion_mnist", "train", str(fmnist_root))
    statistics = OwnStatistics(model, None, data, batches=2, progress=False)
    manifest = export_model(tmp_path, model, controller, _images(8), own=statistics)
    assert manifest["batchnorm"]["statistics"] == "own" and len(manifest["architectures"]) == 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # the supernet keeps its shared statistics
    (out,) = ort.InferenceSession(str(tmp_path / manifest["architectures"][0]["file"])).run(None, {"images": _images(8)})
    own = SubNetwork(statistics.network(all_ops_mask()), all_ops_mask())
    with torch.no_grad():
        np.testing.assert_allclose(out, own(torch.from_numpy(_images(8))).numpy(), rtol=1e-4, atol=1e-4)
    assert np.abs(out - _reference(model, _images(8), all_ops_mask())).max() > 1e-3  # not the shared statistics


def test_evaluation_reports_end_to_end_latency_in_the_tables_runtime(tiny_assets, tmp_path):
    """With an ONNX Runtime table the clock is ONNX Runtime's, and the controller is counted end to end."""
    import json
    from pathlib import Path

    from instanas_gym.agents.policy import fixed_policy
    from instanas_gym.envs.bandit import InstaNASBandit
    from instanas_gym.judge.evaluation import evaluate_policy
    from instanas_gym.latency.onnx import controller_latency_ms

    d = json.loads(Path(tiny_assets["latency_table"]).read_text())
    d["meta"]["runtime"] = "onnxruntime"
    (tmp_path / "ort.json").write_text(json.dumps(d))
    bandit = InstaNASBandit(**{**tiny_assets, "split": "test", "latency_table": str(tmp_path / "ort.json")})
    controller = Controller(1, (8,), (1,), input_size=14)
    ctrl = controller_latency_ms(controller, IMAGE, "onnxruntime", repeats=5)
    assert 0 < ctrl and 0 < controller_latency_ms(controller, IMAGE, "torch", repeats=5)  # which is faster: a benchmark's
    r = evaluate_policy(fixed_policy(mobilenetv2_mask()), bandit, measure=8, limit=16, controller_ms=ctrl)
    assert r["e2e_ms"] == pytest.approx(r["network_latency_ms"] + ctrl)
    assert r["e2e_measured_ms"] == pytest.approx(r["measured_ms"] + ctrl)
    eager = evaluate_policy(fixed_policy(mobilenetv2_mask()), InstaNASBandit(**{**tiny_assets, "split": "test"}),
                            measure=8, limit=16)
    assert r["measured_ms"] < eager["measured_ms"] and "e2e_ms" not in eager
