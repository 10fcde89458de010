"""Take docs/serve.png: the `serve` page after a search on the meeting fixture.

Run from the repository: `uv run python docs/screenshot.py` (needs Debian's
chromium and chromium-driver, as the tests do). It ingests
tests/data/festival/meeting.wav into a temporary data home, serves it on a
free loopback port, searches in a headless Chromium and saves a 1000x700 PNG.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from pipeline.config import Home
from pipeline.supervisor import ingest
from pipeline.web import WebServer

ROOT = Path(__file__).resolve().parent.parent
MEETING = ROOT / "tests" / "data" / "festival" / "meeting.wav"
OUT = ROOT / "docs" / "serve.png"
QUERY = "to the"
WIDTH, HEIGHT = 1000, 700


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Home(Path(tmp) / "home").ensure()
        source = Path(tmp) / MEETING.name
        shutil.copy(MEETING, source)
        ingest([source], home, segment_seconds=10.0)
        server = WebServer(home, port=0)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        try:
            shoot(server.url)
        finally:
            server.stop()
            thread.join(10)
    print(f"wrote {OUT.relative_to(ROOT)}")


def shoot(url: str) -> None:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or sys.exit("chromium is not installed")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--mute-audio"):
        options.add_argument(arg)
    driver = shutil.which("chromedriver") or sys.exit("chromium-driver is not installed")
    browser = webdriver.Chrome(options=options, service=Service(driver))
    try:
        browser.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )
        browser.get(url)
        browser.find_element(By.CSS_SELECTOR, "#filters summary").click()  # shown open
        browser.find_element(By.ID, "q").send_keys(QUERY, Keys.ENTER)
        deadline = time.monotonic() + 20
        script = "return [...document.querySelectorAll('audio')].every(a => a.readyState >= 1)"
        while not (
            browser.find_elements(By.CSS_SELECTOR, "#results audio")
            and browser.execute_script(script)
        ):
            if time.monotonic() > deadline:
                sys.exit("the page did not show the hits in time")
            time.sleep(0.1)
        # the second hit as if clicked on the timeline: marked, its player started
        browser.execute_script(
            "document.querySelectorAll('#timeline .dot')[1].dispatchEvent(new Event('click'))"
        )
        browser.find_elements(By.CSS_SELECTOR, "#results .context")[1].click()  # its context
        time.sleep(1.2)
        browser.execute_script("document.querySelectorAll('audio').forEach(a => a.pause())")
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(OUT))
    finally:
        browser.quit()


if __name__ == "__main__":
    main()
