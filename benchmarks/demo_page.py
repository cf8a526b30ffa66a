"""The demo page's start-up time and a screenshot of it (the README's), for the bundled default.

    python benchmarks/demo_page.py --out docs/demo_page.png

Exports the bundled router into the cache unless already there (timed apart), then times the
server's start (the test split judged once, the controller timed) and drives the page in headless
Chromium: two gallery images of different architectures, so the grid shows the previous one beside
the current one. Needs Debian's chromium and chromium-driver.
"""

from __future__ import annotations

import argparse
import threading
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from waitress import create_server

from instanas_gym.demo.model import served_folder
from instanas_gym.demo.server import create_app
from instanas_gym.demo.state import DemoState


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/demo_page.png")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    t0 = time.perf_counter()
    folder = served_folder()
    t1 = time.perf_counter()
    state = DemoState(folder, "fashion_mnist", threads=args.threads)
    t2 = time.perf_counter()
    print(f"export (first start only): {t1 - t0:.1f} s; start: {t2 - t1:.1f} s "
          f"({len(state.architectures)} architectures, {100 * state.accuracy:.2f}% of {len(state.test)} test images)")
    server = create_server(create_app(state), host="127.0.0.1", port=0, threads=4)
    threading.Thread(target=server.run, daemon=True).start()
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1080"):
        options.add_argument(arg)
    browser = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        browser.get(f"http://127.0.0.1:{server.effective_port}/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        summary = state.summary()
        by_arch = {}
        for i, entry in enumerate(summary["gallery"]):
            by_arch.setdefault(entry["architecture"], i)
        thumbs = browser.find_elements(By.CSS_SELECTOR, "#gallery .thumb")
        for arch in (1, 0):  # the second most used first, then the most used: two different grids
            thumbs[by_arch[arch]].click()
            wait.until(lambda b, a=arch: f"architecture {a + 1})" in b.find_element(By.ID, "current-arch").text)
        time.sleep(0.5)
        browser.save_screenshot(args.out)
        print(browser.find_element(By.ID, "prediction").text)
        print(browser.find_element(By.ID, "latency-table").text)
        print(browser.find_element(By.ID, "latency-measured").text)
        print(f"wrote {args.out}")
    finally:
        browser.quit()
        server.close()


if __name__ == "__main__":
    main()
