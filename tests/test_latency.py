import json

import numpy as np
import pytest

from instanas_gym.latency import validation
from instanas_gym.latency.measure import build_isolated_table, build_table, fit_overheads
from instanas_gym.latency.table import LatencyTable
from instanas_gym.latency.validation import compare, spearman, validate
from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask, random_masks
from instanas_gym.space.search_space import MASK_SHAPE, SearchSpace
from tests.fixtures import macs_table

from .conftest import tiny_supernet


@pytest.fixture(scope="module")
def net():
    return tiny_supernet()


@pytest.fixture(scope="module")
def table(net):
    """The tiny supernet's table computed from MACs: the table's own behaviour, no clock involved."""
    return macs_table(net.space)


def test_tiny_table_builds(net):
    """A small build fills every entry and its metadata (how well it predicts the clock is a benchmark's
    business: nothing here depends on the machine's speed or load)."""
    table = build_table(net, passes=40, warmup=2)
    assert table.ops_ms.shape == MASK_SHAPE and np.isfinite(table.ops_ms).all() and (table.ops_ms >= 0).all()
    # the fixed cost holds at least the stem and head the hooks timed, whatever noise does to the fit
    assert table.fixed_ms >= table.meta["fixed_modules_ms"] > 0
    assert table.meta["width_mult"] == 0.1 and table.meta["threads"] == 1 and table.meta["batch_size"] == 1


def test_fit_overheads_recovers_a_line_and_never_a_negative_intercept(rng):
    n_ops = rng.integers(17, 86, 400).astype(float)
    outside = 0.03 - 0.002 * n_ops + rng.normal(0, 1e-4, 400)
    slope, intercept = fit_overheads(outside, n_ops)
    assert slope == pytest.approx(-0.002, abs=1e-5) and intercept == pytest.approx(0.03, abs=1e-3)
    # noise that tilts the free fit below zero: the intercept is held at 0, the slope refitted
    tilted = -0.05 + 0.001 * n_ops
    slope, intercept = fit_overheads(tilted, n_ops)
    assert intercept == 0.0
    assert slope == pytest.approx(float(n_ops @ tilted / (n_ops @ n_ops)))


def test_json_round_trip(table, tmp_path):
    table.save(tmp_path / "t.json")
    back = LatencyTable.load(tmp_path / "t.json", tiny_supernet().space)
    np.testing.assert_allclose(back.ops_ms, table.ops_ms, atol=1e-6)
    assert back.fixed_ms == pytest.approx(table.fixed_ms, abs=1e-6)
    assert back.meta == table.meta
    assert json.loads((tmp_path / "t.json").read_text())["format"] == "instanas-latency-v1"


def test_metadata_mismatch(table, tmp_path):
    with pytest.raises(ValueError, match="width_mult"):
        table.check(SearchSpace(0.25, 28, 1, 10))
    with pytest.raises(ValueError, match="input_size"):
        table.check(SearchSpace(0.1, 32, 1, 10))
    other = LatencyTable(table.ops_ms, table.fixed_ms, table.opens_stage, {**table.meta, "cpu_model": "Other CPU"})
    with pytest.warns(UserWarning, match="cpu_model"):
        other.check(tiny_supernet().space)
    newer = LatencyTable(table.ops_ms, table.fixed_ms, table.opens_stage, {**table.meta, "torch_version": "9.9"})
    with pytest.warns(UserWarning, match="torch_version"):
        newer.check(tiny_supernet().space)
    with pytest.raises(FileNotFoundError, match="instanas-gym build-latency-table"):
        LatencyTable.load(tmp_path / "missing.json")


def test_predict_mobilenetv2_is_the_sum_of_its_entries(table):
    assert table.network_ms(mobilenetv2_mask()) == pytest.approx(table.ops_ms[:, 0].sum() + table.fixed_ms)
    assert table.cells_ms(all_ops_mask()) == pytest.approx(table.ops_ms.sum())


def test_empty_cells_cost_the_fallback_where_they_open_a_stage(table):
    empty = np.zeros(MASK_SHAPE, np.uint8)
    assert table.cells_ms(empty) == pytest.approx(table.ops_ms[table.opens_stage, 4].sum())


def test_vectorized_predict_equals_scalar(table, rng):
    masks = random_masks(rng, 32, 0.3)
    batch = table.cells_ms(masks)
    assert batch.shape == (32,)
    np.testing.assert_allclose(batch, [table.cells_ms(m) for m in masks])
    np.testing.assert_allclose(table.network_ms(masks), batch + table.fixed_ms)


def test_validate_and_isolated_table_report_the_three_figures(net, table, monkeypatch):
    report = validate(table, net, n_masks=5, repeats=1)  # on the clock: its figures are whatever the machine gives
    assert {"spearman", "mape_pct", "within_10pct"} <= set(report)
    assert len(report["measured_ms"]) == 5 and all(ms > 0 for ms in report["measured_ms"])
    # the figures themselves, on a clock that runs 10% slower than the table says
    monkeypatch.setattr(validation, "measure_masks", lambda model, masks, *a, **k: 1.1 * table.network_ms(masks))
    report = validate(table, net, n_masks=20, repeats=3)
    assert report["spearman"] == pytest.approx(1.0) and report["mape_pct"] == pytest.approx(100 / 11)
    assert report["within_10pct"] == 100.0
    np.testing.assert_allclose(report["measured_ms"], 1.1 * np.asarray(report["predicted_ms"]))
    iso = build_isolated_table(net, repeats=2)
    assert iso.meta["method"] == "isolated" and (iso.ops_ms > 0).all()


def test_spearman_and_compare():
    assert spearman(np.array([1.0, 2, 3]), np.array([10.0, 20, 30])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2, 3]), np.array([3.0, 2, 1])) == pytest.approx(-1.0)
    out = compare(np.array([1.0, 2.0, 4.0]), np.array([1.0, 2.5, 4.0]))
    assert out["mape_pct"] == pytest.approx(100 * 0.5 / 2.5 / 3)
    assert out["within_10pct"] == pytest.approx(200 / 3)
