"""The demo page: the served model, the API (good and bad requests, concurrent clients) and the page
in a real headless browser; then the same for a cascade policy (the path each image took, where the test
images stop)."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from instanas_gym.agents.cascade import CascadePolicy, ThresholdPolicy
from instanas_gym.agents.config import ControllerConfig
from instanas_gym.agents.policy import load_policy, save_policy
from instanas_gym.agents.router import Router
from instanas_gym.agents.router_file import load_router, save_router
from instanas_gym.demo import server as demo_server
from instanas_gym.demo import upload as demo_upload
from instanas_gym.demo.cascade import CascadeState
from instanas_gym.demo.model import load_any_controller, served_folder, serving_state
from instanas_gym.demo.server import create_app, port_free
from instanas_gym.demo.state import BINS, DIFFICULTY_IMAGES, DemoState, embed_masks
from instanas_gym.demo.typicality import Typicality
from instanas_gym.demo.upload import MAX_PIXELS, UploadError, decode_upload
from instanas_gym.deploy.cascade import CASCADE_FORMAT
from instanas_gym.deploy.export import export_model
from instanas_gym.latency.table import LatencyTable
from instanas_gym.model.batchnorm import estimate_bn
from instanas_gym.model.checkpoint import supernet_state
from instanas_gym.model.subnetwork import SubNetwork
from instanas_gym.space.data import load_split
from instanas_gym.space.family import ArchitectureFamily
from instanas_gym.space.masks import all_ops_mask, mobilenetv2_mask, single_op_mask
from instanas_gym.utils.files import FileFormatError, atomic_save, load_json

from .conftest import tiny_supernet, trained_like

pytest.importorskip("flask")
waitress = pytest.importorskip("waitress")


class BrightnessController(nn.Module):
    """A controller for tests: the MobileNetV2 path for bright images, all ops for dark ones."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold
        self.register_buffer("signs", torch.from_numpy(np.stack([mobilenetv2_mask(), all_ops_mask()]) * 2.0 - 1.0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        dark = (images.float().mean((1, 2, 3)) < self.threshold).long()
        return self.signs[dark]


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory, fmnist_root) -> dict:
    folder = tmp_path_factory.mktemp("demo")
    model = trained_like(tiny_supernet())
    test = load_split("fashion_mnist", "test", fmnist_root)
    threshold = float(np.median(test.images.reshape(len(test), -1).mean(1)))
    export_model(folder / "export", model, BrightnessController(threshold), test.images)
    table = LatencyTable(np.linspace(0.01, 0.1, 85).reshape(17, 5), 0.05, model.space.opens_stage,
                         {"runtime": "onnxruntime"})
    table.save(folder / "latency.json")
    atomic_save(supernet_state(model, "fashion_mnist"), folder / "supernet.pt")
    return {"export": folder / "export", "table": folder / "latency.json", "supernet": folder / "supernet.pt",
            "data_root": fmnist_root, "threshold": threshold}


@pytest.fixture(scope="module")
def state(demo_files) -> DemoState:
    return DemoState(demo_files["export"], "fashion_mnist", demo_files["data_root"], demo_files["table"])


@pytest.fixture(scope="module")
def client(state):
    return create_app(state, max_upload_bytes=200_000).test_client()


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _upload(client, data: bytes, name: str = "x.png", **form):
    return client.post("/api/predict", data={"image": (io.BytesIO(data), name), **form},
                       content_type="multipart/form-data")


# ---- what the page shows -------------------------------------------------------------------------
def test_summary_describes_the_architectures_the_controller_picks(state, client):
    summary = client.get("/api/summary").get_json()
    archs = summary["architectures"]
    assert len(archs) == 2
    assert sum(a["share"] for a in archs) == pytest.approx(1.0)
    assert summary["landmarks"] == []  # both landmarks are architectures the controller uses
    masks = {json.dumps(a["mask"]) for a in archs}
    assert masks == {json.dumps(mobilenetv2_mask().tolist()), json.dumps(all_ops_mask().tolist())}
    for a in archs:
        assert a["e2e_ms"] == pytest.approx(a["table_ms"] + summary["controller_ms"])
        assert a["table_ms"] == pytest.approx(state.table.network_ms(np.array(a["mask"])))
    right = state.prediction == state.test.labels
    assert summary["test_accuracy"] == pytest.approx(right.mean())
    assert len(summary["easiest"]) == len(summary["hardest"]) == 8
    assert max(e["loss"] for e in summary["easiest"]) <= min(e["loss"] for e in summary["hardest"])
    gallery = summary["gallery"]
    assert len(gallery) == 40 and len({e["index"] for e in gallery}) == 40
    assert {e["architecture"] for e in gallery} == {0, 1}
    assert len(summary["sample"]) == 10 and len({e["index"] for e in summary["sample"]}) == 10
    assert summary["dataset_title"] == "Fashion-MNIST" and summary["family_size"] is None  # a bare controller
    assert {a["name"] for a in archs} == {"MobileNetV2 path", "all ops"}
    assert summary["op_descriptions"][0] == "ir_k3_e6: inverted residual (MobileNetV2's block), 3x3 kernel, expansion 6"


def test_difficulty_is_one_yardstick_and_each_fifth_shows_every_architectures_share(state):
    summary = state.summary()
    archs = summary["architectures"]
    assert summary["reference"] == max(range(len(archs)), key=lambda i: archs[i]["table_ms"])
    rows = summary["by_difficulty"]
    assert len(rows) == BINS
    for easier, harder in zip(rows, rows[1:]):
        assert easier["loss_to"] <= harder["loss_from"]
    for row in rows:
        assert sum(row["shares"]) == pytest.approx(1.0) and len(row["shares"]) == len(archs)
    sizes = [row["images"] for row in rows]
    assert sum(sizes) == min(DIFFICULTY_IMAGES, len(state.test)) and max(sizes) - min(sizes) <= 1  # fifths
    overall = np.average([row["shares"] for row in rows], axis=0, weights=[row["images"] for row in rows])
    assert overall == pytest.approx([a["share"] for a in archs])
    easiest = [e["loss"] for e in summary["easiest"]]
    assert easiest == sorted(easiest) and easiest[0] == pytest.approx(rows[0]["loss_from"])


def test_every_session_is_built_at_start_and_no_request_builds_one(state, client):
    exported = len(state.manifest["architectures"])
    assert state.engine.sessions_built == exported and len(state.engine.sessions) == exported
    for index in range(20):
        client.post("/api/predict", data={"index": str(index)})
    _upload(client, _png(np.full((9, 9), 200, np.uint8)))
    assert state.engine.sessions_built == exported


def test_an_image_unlike_the_data_set_is_flagged_and_test_images_rarely_are(state, client):
    typicality = Typicality.fit(state.test.images)
    far = [typicality.score(image)["far"] for image in state.test.images[:2000]]
    assert 0 < np.mean(far) <= 0.05  # the thresholds sit at 1% of the test split each
    for blank in (0, 128, 255):  # a 1 x 1 upload, grey or black or white, becomes a uniform image
        got = _upload(client, _png(np.full((1, 1, 3), blank, np.uint8))).get_json()
        assert got["typicality"]["far"] and got["typicality"]["score"] > 1
    noise = np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8)
    assert _upload(client, _png(noise)).get_json()["typicality"]["far"]
    test_image = client.post("/api/predict", data={"index": "0"}).get_json()
    assert test_image["typicality"]["far"] == typicality.score(state.test.images[0])["far"]


def test_embedding_spreads_distinct_masks_and_collapses_one():
    xy = embed_masks(np.stack([mobilenetv2_mask(), all_ops_mask(), np.zeros((17, 5), np.uint8)]))
    assert xy.shape == (3, 2) and np.abs(xy).max() == pytest.approx(1.0)
    assert len({tuple(np.round(p, 6)) for p in xy}) == 3
    assert not embed_masks(mobilenetv2_mask()[None]).any()


def test_a_test_image_is_classified_by_the_architecture_its_brightness_picks(state, client, demo_files):
    for index in (0, 1, 2, 3):
        got = client.post("/api/predict", data={"index": str(index)}).get_json()
        image = state.test.images[index]
        dark = image.mean() < demo_files["threshold"]
        assert np.array_equal(got["mask"], (all_ops_mask() if dark else mobilenetv2_mask()).tolist())
        assert got["served_mask"] == got["mask"] and not got["nearest"]
        ref = state.engine.predict(image[None])
        assert got["prediction"] == state.spec.class_names[int(ref["prediction"][0])]
        assert got["confidence"] == pytest.approx(float(ref["confidence"][0]), rel=1e-5)
        assert got["label"] == state.spec.class_names[int(state.test.labels[index])]
        table, measured = got["latency_ms"]["table"], got["latency_ms"]["measured"]
        assert table["network"] == pytest.approx(state.table.network_ms(np.array(got["mask"])))
        assert table["e2e"] == pytest.approx(table["controller"] + table["network"])
        assert measured["e2e"] == pytest.approx(measured["controller"] + measured["network"])
        assert measured["network"] > 0 and measured["controller"] > 0
        shown = np.asarray(Image.open(io.BytesIO(__import__("base64").b64decode(got["image_png"]))))
        assert np.array_equal(shown, image[..., 0])


def test_an_uploaded_photo_is_converted_to_the_data_sets_image(client):
    rng = np.random.default_rng(0)
    photo = np.full((90, 60, 3), 235, np.uint8)  # a dark garment on a light background
    photo[20:70, 15:45] = rng.integers(0, 60, (50, 30, 3))
    got = _upload(client, _png(photo), "shirt.png")
    assert got.status_code == 200, got.get_json()
    body = got.get_json()
    assert body["inverted"] and body["source"] == "shirt.png"
    shown = np.asarray(Image.open(io.BytesIO(__import__("base64").b64decode(body["image_png"]))))
    assert shown.shape == (28, 28) and shown[0, 0] < 30 and shown[14, 14] > 180  # light garment on black
    assert np.array(body["mask"]).shape == (17, 5)
    kept = _upload(client, _png(photo), invert="no").get_json()
    assert not kept["inverted"]


def test_decode_upload_handles_modes_and_refuses_bad_files():
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent: laid on white
    image, inverted = decode_upload(_png(rgba), (28, 28, 1), "no")
    assert image.shape == (28, 28, 1) and image.min() == 255 and not inverted
    colour, _ = decode_upload(_png(np.zeros((5, 7), np.uint8)), (32, 32, 3))
    assert colour.shape == (32, 32, 3)
    with pytest.raises(UploadError, match="invert") as err:
        decode_upload(_png(rgba), (28, 28, 1), "maybe")  # type: ignore[arg-type]
    assert err.value.status == 400
    with pytest.raises(UploadError, match="damaged") as err:
        decode_upload(_png(np.zeros((50, 50), np.uint8))[:60], (28, 28, 1))
    assert err.value.status == 400


def test_a_large_image_decodes_without_a_full_size_copy(tmp_path):
    """A 5000 x 5000 RGBA PNG (a few hundred KB) decodes within its own decoded size plus strips (the
    pixels themselves, 100 MB), not the several copies a full-size conversion makes; measured in a
    child process's peak resident memory."""
    side = 5000
    Image.new("RGBA", (side, side), (200, 10, 10, 128)).save(tmp_path / "big.png")
    script = textwrap.dedent("""
        import resource, sys
        from instanas_gym.demo.upload import decode_upload
        data = open(sys.argv[1], "rb").read()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        image, _ = decode_upload(data, (28, 28, 1))
        print(image.shape, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "big.png")], capture_output=True, text=True,
                         check=True).stdout.split()
    decoded_mb = 4 * side * side / 2**20
    assert out[:3] == ["(28,", "28,", "1)"] and float(out[-1]) < 1.25 * decoded_mb, out


def test_uploads_decode_a_few_at_a_time_and_the_rest_wait_then_hear_503(monkeypatch):
    monkeypatch.setattr(demo_upload, "DECODE_WAIT_S", 0.01)
    held = [demo_upload._decoding.acquire(timeout=1) for _ in range(demo_upload.MAX_DECODES)]
    try:
        assert all(held)
        with pytest.raises(UploadError, match="busy") as err:
            decode_upload(_png(np.zeros((8, 8), np.uint8)), (28, 28, 1))
        assert err.value.status == 503
    finally:
        for _ in held:
            demo_upload._decoding.release()
    assert decode_upload(_png(np.zeros((8, 8), np.uint8)), (28, 28, 1))[0].shape == (28, 28, 1)


def test_a_port_in_use_is_seen_before_start_up():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not port_free("127.0.0.1", sock.getsockname()[1])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert port_free("127.0.0.1", port)


def test_a_cached_export_shows_no_empty_progress_bar():
    from rich.console import Console

    from instanas_gym.cli.demo import export_progress

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80)
    with export_progress(console):
        pass  # the export was in the cache: nothing reported
    assert out.getvalue() == ""
    with export_progress(console) as progress:
        progress(1, 2)
    assert "exporting the architectures" in out.getvalue()


def test_serve_leaves_waitress_queue_depth_warnings_out_of_the_terminal(state, monkeypatch):
    served = {}
    monkeypatch.setattr("waitress.serve", lambda app, **kwargs: served.update(kwargs))
    monkeypatch.setattr(logging.getLogger("waitress.queue"), "level", logging.NOTSET)
    demo_server.serve(state, "127.0.0.1", 8123)
    assert served["port"] == 8123 and not logging.getLogger("waitress.queue").isEnabledFor(logging.WARNING)


# ---- bad requests: a 4xx with a message, never a crash ---------------------------------------------
def _huge_pixels_png() -> bytes:
    side = int(np.sqrt(MAX_PIXELS)) + 100
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("not an image", 415, "not an image"),
        ("empty", 400, "empty"),
        ("too many bytes", 413, "larger than"),
        ("too many pixels", 413, "pixels"),
        ("json body", 415, "send a form"),
        ("no image", 400, "no image"),
        ("index not a number", 400, "integer"),
        ("index out of range", 404, "not a test image"),
        ("index negative", 400, "integer from 0 to"),
        ("index superscript", 400, "integer from 0 to"),
        ("index of 5000 digits", 400, "integer from 0 to"),
        ("image index superscript", 400, "integer from 0 to"),
        ("image index of 5000 digits", 400, "integer from 0 to"),
        ("bad invert", 400, "invert"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message(client, case, status, message):
    png = _png(np.zeros((28, 28), np.uint8))
    requests = {
        "not an image": lambda: _upload(client, b"%PDF-1.4 not an image at all", "paper.pdf"),
        "empty": lambda: _upload(client, b""),
        "too many bytes": lambda: _upload(client, os.urandom(300_000)),
        "too many pixels": lambda: _upload(client, _huge_pixels_png()),
        "json body": lambda: client.post("/api/predict", json={"index": 1}),
        "no image": lambda: client.post("/api/predict", data={"other": "1"}),
        "index not a number": lambda: client.post("/api/predict", data={"index": "three"}),
        "index out of range": lambda: client.post("/api/predict", data={"index": "100000"}),
        "index negative": lambda: client.post("/api/predict", data={"index": "-1"}),
        "index superscript": lambda: client.post("/api/predict", data={"index": "\u00b2"}),
        "index of 5000 digits": lambda: client.post("/api/predict", data={"index": "7" * 5000}),
        "image index superscript": lambda: client.get("/api/images/\u00b2.png"),
        "image index of 5000 digits": lambda: client.get(f"/api/images/{'7' * 5000}.png"),
        "bad invert": lambda: _upload(client, png, invert="sideways"),
    }
    got = requests[case]()
    assert got.status_code == status
    assert message in got.get_json()["error"]


def test_unknown_routes_and_images_answer_404_as_json(client):
    for url in ("/api/images/100000.png", "/api/nothing"):
        got = client.get(url)
        assert got.status_code == 404 and got.get_json()["error"]
    assert client.get("/api/images/5.png").mimetype == "image/png"
    assert b"upload-input" in client.get("/").data


# ---- a real server ---------------------------------------------------------------------------------
def _serving(state):
    """A waitress server of ``state``'s app on a free port, in a thread: yields its URL, then closes it."""
    srv = waitress.create_server(create_app(state), host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.effective_port}"
    srv.close()
    srv.task_dispatcher.shutdown()
    srv._map.clear()  # an empty socket map ends waitress's loop at once (close alone leaves it polling)
    thread.join(5)
    assert not thread.is_alive()


@pytest.fixture
def server(state):
    yield from _serving(state)


def _post_index(url: str, index: int) -> dict:
    data = urllib.parse.urlencode({"index": index}).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{url}/api/predict", data=data), timeout=30) as r:
        return json.loads(r.read())


def test_concurrent_clients_get_their_own_results(server, state, demo_files):
    dark = np.flatnonzero(state.test.images.reshape(len(state.test), -1).mean(1) < demo_files["threshold"])
    bright = np.setdiff1d(np.arange(len(state.test)), dark)
    picks = {"a": [int(i) for i in dark[:12]], "b": [int(i) for i in bright[:12]]}
    answers: dict[str, list[dict]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def client_loop(name: str) -> None:
        barrier.wait()
        for index in picks[name]:
            answers[name].append(_post_index(server, index))

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in picks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for name, mask in (("a", all_ops_mask()), ("b", mobilenetv2_mask())):
        assert [a["index"] for a in answers[name]] == picks[name]
        assert all(np.array_equal(a["mask"], mask.tolist()) for a in answers[name])
        for a in answers[name]:
            expected = state.spec.class_names[int(state.engine.predict(state.test.images[a["index"]][None])["prediction"][0])]
            assert a["prediction"] == expected


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def browser():
    found = _chromium()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium and ChromeDriver are missing: .ci/run installs them (Debian chromium, chromium-driver)")
        pytest.skip("Chromium and ChromeDriver are not installed (Debian packages chromium, chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(found[1]))
    yield driver
    driver.quit()


def _open_page(browser, url: str, width: int):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.set_window_size(width, 1000)
    browser.get(url + "/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    return wait, By


def _assert_fits(browser, By, width: int) -> list[int]:
    """No sideways scrolling at ``width`` px, and each of the page's three sections inside the window;
    returns the page's [scroll width, client width] (px)."""
    page = browser.execute_script("return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert page[0] <= page[1], f"{width} px: the page scrolls sideways ({page})"
    for section in ("inputs", "result", "panel"):
        box = browser.find_element(By.ID, section).rect
        assert box["width"] > 300 and box["x"] >= 0 and box["x"] + box["width"] <= page[1], (section, box)
    return page


@pytest.mark.parametrize("width", [420, 1000, 1400])
def test_the_page_fits_a_phone_a_laptop_and_a_wide_screen(server, browser, width):
    wait, By = _open_page(browser, server, width)
    page = _assert_fits(browser, By, width)
    assert not browser.find_element(By.ID, "current-image").is_displayed()  # no broken image before the first
    assert browser.find_element(By.ID, "no-image").is_displayed()
    browser.find_elements(By.CSS_SELECTOR, "#gallery .thumb")[0].click()
    wait.until(lambda b: "true:" in b.find_element(By.ID, "prediction").text)
    grid = browser.find_element(By.ID, "grid-current").rect
    assert grid["x"] + grid["width"] <= page[1], f"{width} px: the mask grid overflows"
    assert browser.find_element(By.ID, "current-image").is_displayed()


def test_the_page_in_a_headless_browser_shows_grid_prediction_latency_and_legend(server, browser, tmp_path):
    wait, By = _open_page(browser, server, 1400)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#gallery .thumb")) == 40
    assert len(browser.find_elements(By.CSS_SELECTOR, "#sample .thumb")) == 10
    assert len(browser.find_elements(By.CSS_SELECTOR, "#embedding circle[data-arch]")) == 2
    assert "Fashion-MNIST" in browser.find_element(By.ID, "about").text
    legend = browser.find_element(By.ID, "legend").text
    assert "ir_k3_e6: inverted residual (MobileNetV2's block), 3x3 kernel, expansion 6" in legend
    assert "basic: basic block" in legend and "identity" in legend
    ticks = browser.find_elements(By.CSS_SELECTOR, "#colorbar-ticks span")
    assert len(ticks) == 3 and all(t.text.endswith(" ms") for t in ticks)
    assert "over-represented" in browser.find_element(By.ID, "gallery-note").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#difficulty .bar")) == BINS
    assert "only these 10 classes" in browser.find_element(By.ID, "classes").text
    photo = tmp_path / "garment.png"
    photo.write_bytes(_png(np.random.default_rng(1).integers(0, 255, (40, 30, 3)).astype(np.uint8)))
    browser.find_element(By.ID, "upload-input").send_keys(str(photo))
    browser.find_element(By.ID, "upload-button").click()
    wait.until(lambda b: "%" in b.find_element(By.ID, "prediction").text)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#grid-current .cell")) == 85
    assert browser.find_elements(By.CSS_SELECTOR, "#grid-current .cell.on")
    assert "ms" in browser.find_element(By.ID, "latency-table").text
    assert "Measured for this request" in browser.find_element(By.ID, "latency-measured").text
    note = browser.find_element(By.ID, "latency-note").text
    assert "By the table" in note and "measured" in note
    assert "unlike Fashion-MNIST" in browser.find_element(By.ID, "ood").text  # noise is far from the data set
    browser.find_elements(By.CSS_SELECTOR, "#hardest .thumb")[0].click()
    wait.until(lambda b: "true:" in b.find_element(By.ID, "prediction").text)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#grid-previous .cell")) == 85  # the upload's, now previous
    assert browser.find_element(By.ID, "message").text == ""
    assert "stale" not in browser.find_element(By.ID, "result").get_attribute("class")


def test_an_error_greys_out_the_result_it_does_not_belong_to(server, browser):
    wait, By = _open_page(browser, server, 1400)
    browser.find_elements(By.CSS_SELECTOR, "#gallery .thumb")[0].click()
    wait.until(lambda b: "true:" in b.find_element(By.ID, "prediction").text)
    browser.find_element(By.ID, "upload-input").send_keys(str(Path(__file__)))  # not an image
    browser.find_element(By.ID, "upload-button").click()
    wait.until(lambda b: "not an image" in b.find_element(By.ID, "message").text)
    assert "stale" in browser.find_element(By.ID, "result").get_attribute("class")
    assert "true:" not in browser.find_element(By.ID, "prediction").text
    assert browser.find_element(By.ID, "current-ring").get_attribute("r") == "0"
    browser.find_elements(By.CSS_SELECTOR, "#gallery .thumb")[1].click()  # the next answer is shown again
    wait.until(lambda b: "stale" not in b.find_element(By.ID, "result").get_attribute("class"))
    assert "true:" in browser.find_element(By.ID, "prediction").text


# ---- the served model ------------------------------------------------------------------------------
def test_served_folder_exports_a_router_once_and_reuses_it(demo_files, tmp_path):
    torch.manual_seed(0)
    router = Router(ControllerConfig((4, 8, 8), 14), in_channels=1, k=2)
    path = tmp_path / "router.pt"
    save_router(router, path, np.stack([mobilenetv2_mask(), all_ops_mask()]), np.array([0.3, 1.0]), 0.1)
    served = load_any_controller(path)
    assert served.family_size == 2
    routed = served.module
    x = torch.from_numpy(load_split("fashion_mnist", "test", demo_files["data_root"]).images[:32])
    expected = load_router(path).policy()(x.numpy())
    assert np.array_equal((routed(x) >= 0).numpy().astype(np.uint8), expected)
    folder = served_folder(path, supernet=demo_files["supernet"], data_root=demo_files["data_root"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["controller_file"] == str(path) and 1 <= len(manifest["architectures"]) <= 2
    assert manifest["family_size"] == 2
    before = (folder / "manifest.json").stat().st_mtime_ns
    assert served_folder(path, supernet=demo_files["supernet"], data_root=demo_files["data_root"]) == folder
    assert (folder / "manifest.json").stat().st_mtime_ns == before


@pytest.mark.parametrize("view", ["masks", "family"])
def test_a_policy_file_is_served(demo_files, tmp_path, view):
    """``instanas-gym demo --policy run/policy.pt`` (what ``train-reinforce`` and ``search`` write):
    the served controller chooses the policy's greedy masks."""
    torch.manual_seed(0)
    family = ArchitectureFamily(np.stack([mobilenetv2_mask(), all_ops_mask()]), ("mbv2", "all"))
    if view == "masks":
        network = ControllerConfig((4, 8), 14).build(1)
        with torch.no_grad():
            network.head.bias.normal_()
        save_policy(tmp_path / "policy.pt", "masks", network)
    else:
        save_policy(tmp_path / "policy.pt", "family", Router(ControllerConfig((4, 8), 14), 1, 2), family)
    x = load_split("fashion_mnist", "test", demo_files["data_root"]).images[:32]
    expected = load_policy(tmp_path / "policy.pt").policy()(x)
    with torch.no_grad():
        served = (load_any_controller(tmp_path / "policy.pt").module(torch.from_numpy(x)) >= 0).numpy().astype(np.uint8)
    assert np.array_equal(served, expected)
    folder = served_folder(tmp_path / "policy.pt", supernet=demo_files["supernet"], data_root=demo_files["data_root"])
    assert json.loads((folder / "manifest.json").read_text())["controller_file"] == str(tmp_path / "policy.pt")


def test_served_folder_errors_name_the_argument(demo_files, tmp_path):
    with pytest.raises(ValueError, match="not both"):
        served_folder(tmp_path / "c.pt", demo_files["export"])
    with pytest.raises(FileNotFoundError, match="--export-folder .* no manifest.json"):
        served_folder(export_folder=tmp_path)
    with pytest.raises(ValueError, match="no controller ships for dataset 'cifar10'"):
        served_folder(dataset="cifar10")
    with pytest.raises(FileNotFoundError, match="--policy .*: no such file"):
        served_folder(tmp_path / "missing.pt", supernet=demo_files["supernet"])
    assert served_folder(export_folder=demo_files["export"]) == demo_files["export"]
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(FileFormatError, match="junk.pt"):
        load_any_controller(tmp_path / "junk.pt")
    atomic_save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(FileFormatError, match="instanas-router-v1"):
        load_any_controller(tmp_path / "other.pt")


def test_a_served_folder_of_another_image_shape_is_refused(demo_files, tmp_path):
    with pytest.raises(ValueError, match=r"shape \(28, 28, 1\).*cifar10"):
        DemoState(demo_files["export"], "cifar10", demo_files["data_root"], demo_files["table"])


# ==== a cascade policy ============================================================================
FAMILY = ArchitectureFamily(np.stack([single_op_mask(1), mobilenetv2_mask(), all_ops_mask()]),
                            ("fast", "MobileNetV2 path", "all ops"), dataset="fashion_mnist")


def _answers(model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each family architecture's prediction and confidence (K, N) by the supernet (the confidence rounded
    to float16, as the cascade sees it)."""
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
    table = LatencyTable(np.linspace(0.01, 0.1, 85).reshape(17, 5), 0.05, model.space.opens_stage,
                         {"runtime": "onnxruntime"})
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
    expected = table.network_ms(FAMILY.masks).tolist()
    assert [a["latency_ms"] for a in manifest["architectures"]] == pytest.approx(expected)
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
    yield from _serving(cascade_state)


def _click(browser, By, wait, index: int) -> None:
    answers = browser.find_element(By.TAG_NAME, "body").get_attribute("data-answers") or "0"
    browser.find_element(By.CSS_SELECTOR, f"#gallery .thumb[data-index='{index}']").click()
    wait.until(lambda b: (b.find_element(By.TAG_NAME, "body").get_attribute("data-answers") or "0") != answers)


def _gallery_index(state: CascadeState, stages: int) -> int:
    return next(e["index"] for e in state.summary()["gallery"] if e["stages"] == stages)


@pytest.mark.parametrize("width", [420, 1000, 1400])
def test_the_cascade_page_fits_a_phone_a_laptop_and_a_wide_screen(cascade_server, cascade_state, browser, width):
    wait, By = _open_page(browser, cascade_server, width)
    page = _assert_fits(browser, By, width)
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
    def text(element: str) -> str:
        return browser.find_element(By.ID, element).text

    assert "cascade" in text("title") and "up to 3 stages" in text("about") and "threshold rule" in text("about")
    assert browser.find_element(By.ID, "stops-box").is_displayed()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#stops .bar")) == 1
    assert len(browser.find_elements(By.CSS_SELECTOR, "#difficulty .bar")) == BINS
    legend = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#stops-legend > span")]
    assert [t.split(":")[0] for t in legend] == ["after stage 1", "after stage 2", "after stage 3"]
    heads = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#arch-table th")]
    assert heads == ["architecture", "runs", "answers", "right", "ms"]
    assert "ir_k3_e6" in text("legend") and "over-represented" in text("gallery-note")
    _click(browser, By, wait, _gallery_index(cascade_state, 3))
    cards = browser.find_elements(By.CSS_SELECTOR, "#path .stage-card")
    for j, card in enumerate(cards):
        assert FAMILY.names[j] in card.text and "answers" in card.text
        assert "by the table" in card.text and "measured" in card.text
        assert len(card.find_elements(By.CSS_SELECTOR, ".cell")) == 85
        assert card.find_elements(By.CSS_SELECTOR, ".cell.on")
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
