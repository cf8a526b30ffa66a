"""The demo page serving a cascade policy: the export and its cache, what the summary counts, the
API's path for each image against the engine and the supernet, and the page in a headless browser."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from instanas_gym.agents.cascade import CascadePolicy, ThresholdPolicy
from instanas_gym.agents.policy import save_policy
from instanas_gym.demo.cascade import CascadeState
from instanas_gym.demo.model import load_any_controller, served_folder, serving_state
from instanas_gym.demo.server import create_app
from instanas_gym.demo.state import BINS
from instanas_gym.deploy.cascade import CASCADE_FORMAT
from instanas_gym.latency.table import LatencyTable
from instanas_gym.model.batchnorm import estimate_bn
from instanas_gym.model.checkpoint import supernet_state
from instanas_gym.model.subnetwork import SubNetwork
from instanas_gym.space.data import load_split
from instanas_gym.space.family import ArchitectureFamily
from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask, single_op_mask
from instanas_gym.utils.files import atomic_save, load_json

from .conftest import tiny_supernet
from .test_demo import _open_page, _png, _upload, browser  # noqa: F401 (browser: a fixture)

waitress = pytest.importorskip("waitress")

FAMILY = ArchitectureFamily(np.stack([single_op_mask(1), mobilenetv2_mask(), all_ops_mask()]),
                            ("fast", "MobileNetV2 path", "all ops"), dataset="fashion_mnist")


def _answers(model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each family architecture's prediction and confidence (float16, as the cascade sees it) (K, N) by the supernet."""
    with torch.no_grad():
        probs = torch.stack([SubNetwork(model, m)(torch.from_numpy(images)).softmax(1) for m in FAMILY.masks])
    return probs.argmax(2).numpy(), probs.amax(2).numpy().astype(np.float16).astype(np.float64)


@pytest.fixture(scope="module")
def cascade_files(tmp_path_factory, fmnist_root) -> dict:
    """A tiny supernet whose answers depend on the image (BatchNorm statistics estimated on the training
    images), a threshold cascade over three of its architectures with each threshold at its stage's median
    confidence (so test images stop at every stage), exported into a cache of its own."""
    folder = tmp_path_factory.mktemp("cascade")
    model = tiny_supernet()
    estimate_bn(model, load_split("fashion_mnist", "train", fmnist_root), list(FAMILY.masks) * 2, batch_size=64)
    atomic_save(supernet_state(model, "fashion_mnist"), folder / "supernet.pt")
    test = load_split("fashion_mnist", "test", fmnist_root)
    prediction, confidence = _answers(model, test.images)
    rule = ThresholdPolicy(3, 3, (0, 1, 2), tuple(float(np.median(c)) for c in confidence[:2]))
    save_policy(folder / "policy.pt", "cascade", rule, FAMILY)
    table = LatencyTable(np.linspace(0.01, 0.1, 85).reshape(17, 5), 0.05, model.space.opens_stage, {"runtime": "onnxruntime"})
    table.save(folder / "latency.json")
    files = {"policy": folder / "policy.pt", "supernet": folder / "supernet.pt", "table": folder / "latency.json",
             "data_root": fmnist_root, "cache": folder / "cache", "model": model, "rule": rule,
             "prediction": prediction, "confidence": confidence}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INSTANAS_CACHE", str(files["cache"]))
        files["export"] = served_folder(files["policy"], supernet=files["supernet"], data_root=fmnist_root,
                                        latency_table=files["table"])
    return files


@pytest.fixture(scope="module")
def cascade_state(cascade_files) -> CascadeState:
    f = cascade_files
    return serving_state(f["export"], "fashion_mnist", f["data_root"], f["table"])


@pytest.fixture(scope="module")
def cascade_client(cascade_state):
    return create_app(cascade_state).test_client()


def _index_stopping_after(state: CascadeState, stages: int) -> int:
    return int(np.flatnonzero(state.stages == stages)[0])


# ---- the export and the summary ------------------------------------------------------------------
def test_a_cascade_policy_file_is_exported_once_and_served_as_a_cascade(cascade_files, cascade_state, monkeypatch):
    f = cascade_files
    manifest = load_json(f["export"] / "manifest.json", "manifest")
    assert manifest["format"] == CASCADE_FORMAT and manifest["stages"] == 3
    assert [a["name"] for a in manifest["architectures"]] == list(FAMILY.names)
    table = LatencyTable.load(f["table"])
    assert [a["latency_ms"] for a in manifest["architectures"]] == pytest.approx(table.network_ms(FAMILY.masks).tolist())
    assert isinstance(cascade_state, CascadeState) and cascade_state.kind == "cascade"
    monkeypatch.setenv("INSTANAS_CACHE", str(f["cache"]))
    before = (f["export"] / "manifest.json").stat().st_mtime_ns
    again = served_folder(f["policy"], supernet=f["supernet"], data_root=f["data_root"], latency_table=f["table"])
    assert again == f["export"] and (again / "manifest.json").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="cascade policy"):
        load_any_controller(f["policy"])
    with pytest.raises(FileNotFoundError, match="--env.latency-table .*: no such file"):
        served_folder(f["policy"], supernet=f["supernet"], latency_table=f["cache"] / "missing.json")


def test_the_summary_counts_where_the_test_images_stop(cascade_state, cascade_files):
    state, rule = cascade_state, cascade_files["rule"].rule
    out = state.engine.predict(state.test.images)
    n, k = len(state.test), len(FAMILY.masks)
    summary = state.summary()
    assert summary["kind"] == "cascade" and summary["stages"] == 3 and summary["decision_ms"] == 0.0
    assert summary["policy"] == {"kind": "thresholds", "order": [0, 1, 2], "thresholds": list(rule.thresholds)}
    stops = np.bincount(out["stages"] - 1, minlength=3) / n
    assert summary["stops"] == pytest.approx(stops.tolist()) and min(stops) > 0  # every stage ends some paths
    conf = out["stage_confidence"]
    for i in range(n):  # the rule: stop at the first stage whose confidence reaches its threshold
        s = out["stages"][i]
        assert all(conf[i, j] < rule.thresholds[j] for j in range(s - 1))
        assert s == 3 or conf[i, s - 1] >= rule.thresholds[s - 1]
    runs = np.bincount(out["arms"][out["arms"] < k], minlength=k)
    archs = summary["architectures"]
    assert [a["share"] for a in archs] == pytest.approx((runs / runs.sum()).tolist())
    answered = out["arms"][np.arange(n), out["stages"] - 1]
    assert [a["answers"] for a in archs] == pytest.approx((np.bincount(answered, minlength=k) / n).tolist())
    table_ms = state.table.network_ms(FAMILY.masks)
    assert summary["mean_ms"] == pytest.approx(np.mean([table_ms[a[a < k]].sum() for a in out["arms"]]))
    assert summary["test_accuracy"] == pytest.approx(np.mean(out["prediction"] == state.test.labels))
    rows = summary["by_difficulty"]
    assert len(rows) == BINS and all(sum(r["stops"]) == pytest.approx(1.0) for r in rows)
    overall = np.average([r["stops"] for r in rows], axis=0, weights=[r["images"] for r in rows])
    assert overall == pytest.approx(stops)  # every test image's difficulty is measured (256 < 1,000)
    assert summary["reference"] == 2  # all ops: the largest by the table
    assert all(e["stages"] == state.stages[e["index"]] for e in summary["gallery"])


# ---- the API -------------------------------------------------------------------------------------
def test_the_api_answers_with_the_path_each_image_took(cascade_state, cascade_client, cascade_files):
    state, rule = cascade_state, cascade_files["rule"].rule
    names = state.spec.class_names
    for stages in (1, 2, 3):
        index = _index_stopping_after(state, stages)
        got = cascade_client.post("/api/predict", data={"index": str(index)}).get_json()
        assert got["kind"] == "cascade" and got["label"] == names[int(state.test.labels[index])]
        path = got["path"]
        assert [p["stage"] for p in path] == list(range(1, stages + 1))
        assert [p["architecture"] for p in path] == list(range(stages))  # the rule's order
        for j, p in enumerate(path):
            assert p["name"] == FAMILY.names[j] and np.array_equal(p["mask"], FAMILY.masks[j])
            assert p["prediction"] == names[int(cascade_files["prediction"][j, index])]  # the supernet's answer
            assert p["confidence"] == pytest.approx(cascade_files["confidence"][j, index], abs=2e-3)
            assert p["threshold"] == (rule.thresholds[j] if j < 2 else None)
            network = state.table.network_ms(FAMILY.masks[j])
            assert p["latency_ms"]["network_table"] == pytest.approx(network)
            assert p["latency_ms"]["table"] == pytest.approx(network)  # a threshold rule's decision costs 0
            assert p["latency_ms"]["measured"] > 0
        stop = got["stop"]
        assert stop["after"] == stages and stop["by"] == ("policy" if stages < 3 else "last stage")
        assert (stop["latency_ms"] is None) == (stages == 3)
        assert got["prediction"] == path[-1]["prediction"] == got["top"][0]["class"]
        assert got["architecture"] == stages - 1
        table, measured = got["latency_ms"]["table"], got["latency_ms"]["measured"]
        assert table["e2e"] == pytest.approx(sum(p["latency_ms"]["table"] for p in path))
        assert table["decision_count"] == stages + (stages < 3)
        stop_ms = 0.0 if stop["latency_ms"] is None else stop["latency_ms"]["measured"]
        # nothing is spent after the last image stopped: the stages and STOP are the whole request
        assert measured["e2e"] == pytest.approx(sum(p["latency_ms"]["measured"] for p in path) + stop_ms, rel=1e-9)
    upload = _upload(cascade_client, _png(np.full((30, 20), 90, np.uint8))).get_json()
    assert upload["kind"] == "cascade" and upload["path"] and "typicality" in upload


def test_a_learned_cascade_policy_is_served_with_its_cost_per_decision(cascade_files, tmp_path, monkeypatch):
    f = cascade_files
    torch.manual_seed(0)
    save_policy(tmp_path / "learned.pt", "cascade", CascadePolicy(3, 3, 10), FAMILY)
    monkeypatch.setenv("INSTANAS_CACHE", str(tmp_path / "cache"))
    folder = served_folder(tmp_path / "learned.pt", supernet=f["supernet"], data_root=f["data_root"],
                           latency_table=f["table"])
    state = serving_state(folder, "fashion_mnist", f["data_root"], f["table"])
    summary = state.summary()
    assert summary["policy"] == {"kind": "network"} and summary["decision_ms"] > 0
    got = state.classify(state.test.images[0])
    table, n = got["latency_ms"]["table"], got["stop"]["after"]
    assert table["decision_count"] == n + (n < 3)
    assert table["decisions"] == pytest.approx(table["decision_count"] * summary["decision_ms"])
    assert got["path"][0]["latency_ms"]["table"] == pytest.approx(
        summary["decision_ms"] + got["path"][0]["latency_ms"]["network_table"])


# ---- the page in a headless browser --------------------------------------------------------------
@pytest.fixture
def cascade_server(cascade_state):
    srv = waitress.create_server(create_app(cascade_state), host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.effective_port}"
    srv.close()
    thread.join(5)


def _click(browser, By, wait, index: int) -> None:
    answers = browser.find_element(By.TAG_NAME, "body").get_attribute("data-answers") or "0"
    browser.find_element(By.CSS_SELECTOR, f"#gallery .thumb[data-index='{index}']").click()
    wait.until(lambda b: (b.find_element(By.TAG_NAME, "body").get_attribute("data-answers") or "0") != answers)


def _gallery_index(state: CascadeState, stages: int) -> int:
    return next(e["index"] for e in state.summary()["gallery"] if e["stages"] == stages)


@pytest.mark.parametrize("width", [420, 1000, 1400])
def test_the_cascade_page_fits_a_phone_a_laptop_and_a_wide_screen(cascade_server, cascade_state, browser, width):
    wait, By = _open_page(browser, cascade_server, width)
    page = browser.execute_script("return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert page[0] <= page[1], f"{width} px: the page scrolls sideways ({page})"
    for section in ("inputs", "result", "panel"):
        box = browser.find_element(By.ID, section).rect
        assert box["width"] > 300 and box["x"] >= 0 and box["x"] + box["width"] <= page[1], (section, box)
    _click(browser, By, wait, _gallery_index(cascade_state, 3))
    cards = browser.find_elements(By.CSS_SELECTOR, "#path .stage-card")
    assert len(cards) == 3
    for card in cards:
        box = card.find_element(By.CSS_SELECTOR, ".grid").rect
        assert box["x"] + box["width"] <= page[1], f"{width} px: a stage's grid overflows"
    assert not browser.find_element(By.ID, "single-view").is_displayed()
    page = browser.execute_script("return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert page[0] <= page[1], f"{width} px: the path makes the page scroll sideways ({page})"


def test_the_cascade_page_shows_each_stage_where_it_stopped_and_where_test_images_stop(
        cascade_server, cascade_state, browser, tmp_path):
    wait, By = _open_page(browser, cascade_server, 1400)
    text = lambda element: browser.find_element(By.ID, element).text  # noqa: E731
    assert "cascade" in text("title") and "up to 3 stages" in text("about") and "threshold rule" in text("about")
    assert browser.find_element(By.ID, "stops-box").is_displayed()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#stops .bar")) == 1
    assert len(browser.find_elements(By.CSS_SELECTOR, "#difficulty .bar")) == BINS
    legend = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#stops-legend span")]
    assert [t.split(":")[0] for t in legend] == ["after stage 1", "after stage 2", "after stage 3"]
    heads = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#arch-table th")]
    assert heads == ["architecture", "runs", "answers", "right", "ms"]
    assert "ir_k3_e6" in text("legend") and "over-represented" in text("gallery-note")
    _click(browser, By, wait, _gallery_index(cascade_state, 3))
    cards = browser.find_elements(By.CSS_SELECTOR, "#path .stage-card")
    for j, card in enumerate(cards):
        assert FAMILY.names[j] in card.text and "answers" in card.text
        assert "by the table" in card.text and "measured" in card.text
        assert len(card.find_elements(By.CSS_SELECTOR, ".cell")) == 85 and card.find_elements(By.CSS_SELECTOR, ".cell.on")
    assert "below the threshold" in cards[0].text and "Ran all 3 stages" in text("stop")
    assert "true:" in text("prediction") and "3 decision(s)" in text("latency-table")
    assert "stage 3" in text("latency-measured")
    note = text("latency-note")
    assert "By the table" in note and "measured" in note
    current = browser.find_elements(By.CSS_SELECTOR, "#arch-table tr.current")
    assert sorted(int(tr.get_attribute("data-arch")) for tr in current) == [0, 1, 2]
    _click(browser, By, wait, _gallery_index(cascade_state, 1))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#path .stage-card")) == 1
    assert "Stopped after stage 1 of 3" in text("stop") and "reached the threshold" in text("stop")
    assert "STOP" in text("latency-measured") and "3 stage(s)" in text("previous-path")
    (tmp_path / "notes.txt").write_text("not an image")
    browser.find_element(By.ID, "upload-input").send_keys(str(tmp_path / "notes.txt"))
    browser.find_element(By.ID, "upload-button").click()
    wait.until(lambda b: "not an image" in b.find_element(By.ID, "message").text)
    assert "stale" in browser.find_element(By.ID, "result").get_attribute("class")
    assert not browser.find_elements(By.CSS_SELECTOR, "#arch-table tr.current")
    _click(browser, By, wait, _gallery_index(cascade_state, 2))
    assert "stale" not in browser.find_element(By.ID, "result").get_attribute("class")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#path .stage-card")) == 2
