"""The demo page as a user starts it: the start-up time of ``instanas-gym demo``, the server's memory
under large uploads, and a screenshot (the README's), for the bundled default.

    python benchmarks/demo_page.py --first-start --out docs/demo_page.png

Starts ``python -m instanas_gym.cli demo`` as its own process and times it from launch until the
page answers (wall clock, and the CPU seconds the server used, which change less with other jobs):
with ``--first-start`` once with an empty cache (the architectures exported first), and then with
the export cached (every later start). Then, with the server up, ``--uploads`` clients at once each
upload a PNG of ``--side`` x ``--side`` RGBA pixels (a few hundred KB) and the server's resident
memory is read from /proc before, at its peak and ``--settle`` seconds after; then headless
Chromium drives the page (two gallery images of different architectures, so the grid shows the
previous one beside the current one) for the screenshot. Needs Debian's chromium and chromium-driver.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_demo(port: int, env: dict[str, str], timeout_s: float = 900) -> tuple[subprocess.Popen, float, float]:
    """``instanas-gym demo`` on ``port``, the seconds until its page answered and the CPU seconds it used."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "instanas_gym.cli", "demo", "--port", str(port)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while time.perf_counter() - start < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"the demo stopped: {proc.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/summary", timeout=5):
                return proc, time.perf_counter() - start, cpu_s(proc.pid)
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the demo did not answer within {timeout_s} s")


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory (VmRSS) and its peak so far (VmHWM) of process ``pid``, MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}


def upload(port: int, png: bytes, answers: list[int]) -> None:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + png + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/predict", data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=600) as r:
            answers.append(r.status)
    except urllib.error.HTTPError as err:
        answers.append(err.code)


def large_uploads(port: int, pid: int, clients: int, side: int, settle_s: float) -> None:
    buf = io.BytesIO()
    Image.new("RGBA", (side, side), (200, 30, 30, 128)).save(buf, format="PNG")
    png = buf.getvalue()
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak (VmHWM) restarts from now: start-up's is not counted
    before = memory_mb(pid)
    answers: list[int] = []
    threads = [threading.Thread(target=upload, args=(port, png, answers)) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    peak = memory_mb(pid)["VmHWM"]
    time.sleep(settle_s)
    after = memory_mb(pid)["VmRSS"]
    print(f"{clients} uploads at once of a {side} x {side} RGBA PNG ({len(png) // 1024} KiB, "
          f"{4 * side * side / 2**20:.0f} MB decoded): answers {sorted(answers)} in {wall:.1f} s; server memory "
          f"{before['VmRSS']:.0f} MB before, peak {peak:.0f} MB (+{peak - before['VmRSS']:.0f}), "
          f"{after:.0f} MB {settle_s:.0f} s after (+{after - before['VmRSS']:.0f})")


def screenshot(port: int, out: str) -> None:
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1200"):
        options.add_argument(arg)
    browser = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/summary") as r:
            summary = json.loads(r.read())
        by_arch: dict[int, int] = {}
        for i, entry in enumerate(summary["gallery"]):
            by_arch.setdefault(entry["architecture"], i)
        thumbs = browser.find_elements(By.CSS_SELECTOR, "#gallery .thumb")
        for arch in (1, 0):  # the second most used first, then the most used: two different grids
            thumbs[by_arch[arch]].click()
            wait.until(lambda b, a=arch: f"architecture {a + 1}" in b.find_element(By.ID, "current-arch").text)
        time.sleep(0.5)
        browser.save_screenshot(out)
        for element in ("about", "prediction", "latency-table", "latency-measured", "difficulty-note"):
            print(browser.find_element(By.ID, element).text)
        print(f"wrote {out}")
    finally:
        browser.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/demo_page.png")
    parser.add_argument("--first-start", action="store_true", help="also time a start with an empty cache")
    parser.add_argument("--uploads", type=int, default=8)
    parser.add_argument("--side", type=int, default=6300)
    parser.add_argument("--settle", type=float, default=5.0)
    args = parser.parse_args()
    env = dict(os.environ)
    if args.first_start:
        with tempfile.TemporaryDirectory() as cache:
            proc, seconds, cpu = start_demo(free_port(), env | {"INSTANAS_CACHE": cache})
            proc.terminate()
            proc.wait()
        print(f"first start (empty cache: the architectures exported, then served): {seconds:.1f} s, "
              f"{cpu:.1f} CPU s")
    first, _, _ = start_demo(free_port(), env)  # exports into the user's cache, if it is not there yet
    first.terminate()
    first.wait()
    port = free_port()
    proc, seconds, cpu = start_demo(port, env)
    print(f"start with the export cached: {seconds:.1f} s, {cpu:.1f} CPU s (launch to the page answering)")
    try:
        large_uploads(port, proc.pid, args.uploads, args.side, args.settle)
        screenshot(port, args.out)
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
