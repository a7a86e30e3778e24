"""Screenshot studio pages over a folder: `python docs/studio/screenshot.py DIR OUT PATH=NAME ...`

After `make demo`, the README's demo page:
    python docs/studio/screenshot.py . docs/studio "/data?path=runs/demo&size=5=demo-data"
(the README's pages over the tiny test run come from `tests/studio/test_pages.py`).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import uvicorn
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from instructune.studio.app import Studio, create_app
from instructune.studio.workspace import Workspace

PORT = 7869


def main(folder: str, out: str, pages: list[str]) -> None:
    app = create_app(Studio(Workspace(folder)))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=PORT, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.1)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        for spec in pages:
            path, _, name = spec.rpartition("=")
            driver.get(f"http://127.0.0.1:{PORT}{path}")
            time.sleep(1)  # the charts draw after their data arrives
            shot = Path(out) / f"{name}.png"
            driver.save_screenshot(str(shot))
            Image.open(shot).convert("RGB").quantize(colors=64).save(shot, optimize=True)
            print(shot)
    finally:
        driver.quit()
        server.should_exit = True


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
