"""The app in a real browser: Debian's headless Chromium driven by Selenium, fully offline.

Chromium resolves no host but 127.0.0.1, and every request the page made is checked to be
local: the app needs no CDN, web font or analytics. The test uploads two faces, clicks
Verify, reads each model's verdict and saves a screenshot (FACESCOPE_APP_SCREENSHOT=path
copies it there too, e.g. bench/results/app_screenshot.png for the README); a photo of three
faces lets the user click the one to use; a non-image upload shows its message in the page.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterator, List

import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from app_server import OTHER, SAME_A, SAME_B, running_app, zoo_for_tests

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 300  # seconds: the CPU is shared with training runs


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory) -> Path:
    return zoo_for_tests(tmp_path_factory)


@pytest.fixture(scope="module")
def app_url(zoo_dir, tmp_path_factory) -> Iterator[str]:
    with running_app(zoo_dir, tmp_path_factory.mktemp("app"), {}) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[webdriver.Chrome]:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing: install Debian's chromium and chromium-driver (install.sh does)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}", "--window-size=1400,1450",
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def requested_urls(driver: webdriver.Chrome) -> List[str]:
    """Every http(s)/ws(s) URL the page requested since the last call (Chrome's performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] in ("Network.requestWillBeSent", "Network.webSocketCreated"):
            url = message["params"].get("request", {}).get("url") or message["params"].get("url", "")
            if url.startswith(("http", "ws")):
                urls.append(url)
    return urls


def text_of(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def load(driver, url: str) -> WebDriverWait:
    driver.get(url)
    wait = WebDriverWait(driver, WAIT)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#photo-a input[type=file]"))
    return wait


def test_upload_verify_and_screenshot(browser, app_url, zoo_dir, tmp_path):
    wait = load(browser, app_url)
    browser.find_element(By.CSS_SELECTOR, "#photo-a input[type=file]").send_keys(str(SAME_A))
    browser.find_element(By.CSS_SELECTOR, "#photo-b input[type=file]").send_keys(str(SAME_B))
    wait.until(lambda d: "1 face in" in text_of(d, "status-a") and "1 face in" in text_of(d, "status-b"))
    browser.find_element(By.ID, "verify-button").click()
    wait.until(lambda d: "cosine similarity" in text_of(d, "verdict"))
    rows = text_of(browser, "verdict").splitlines()
    models = sorted(p.name for p in zoo_dir.iterdir() if (p / "config.json").is_file())
    for model in models:
        row = next((line for line in rows if line.startswith(model + " ")), None)
        assert row is not None, f"no verdict row for {model}: {rows}"
        assert row.endswith(("same person", "different people", "(uncalibrated threshold)", "similarity only")), row
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#similarity-plot svg.main-svg"))  # plotly has drawn
    browser.execute_script("window.scrollTo(0, 0)")
    screenshot = tmp_path / "app.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
    if os.environ.get("FACESCOPE_APP_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["FACESCOPE_APP_SCREENSHOT"])
    outside = [url for url in requested_urls(browser) if not url.split("//", 1)[1].startswith("127.0.0.1:")]
    assert not outside, f"the page fetched from outside: {outside}"


# The tabs that draw what no other tool shows: (tab, its button, the plot that shows the answer).
DEBUGGING_TABS = (("Error browser", "List the pairs", "error-heatmap"),
                  ("Occlusion", "Grey out face A, part by part", "occlusion-plot"),
                  ("Compare", "Compare where the models look", "compare-maps"))


def test_debugging_tabs_draw_and_screenshot(browser, app_url, tmp_path):
    """Each debugging tab, opened in the page with the pair loaded, draws its figure; a screenshot
    of each (FACESCOPE_APP_SCREENSHOT=path also copies them beside it as app_<tab>.png)."""
    wait = load(browser, app_url)
    browser.find_element(By.CSS_SELECTOR, "#photo-a input[type=file]").send_keys(str(SAME_A))
    browser.find_element(By.CSS_SELECTOR, "#photo-b input[type=file]").send_keys(str(SAME_B))
    wait.until(lambda d: "1 face in" in text_of(d, "status-a") and "1 face in" in text_of(d, "status-b"))
    for tab, button, plot in DEBUGGING_TABS:
        browser.execute_script("arguments[0].click()", browser.find_element(
            By.XPATH, f"//button[@role='tab' and normalize-space()='{tab}']"))
        browser.execute_script("arguments[0].click()", browser.find_element(
            By.XPATH, f"//button[normalize-space()='{button}']"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#{plot} svg.main-svg"))  # plotly has drawn
        figure = browser.find_element(By.ID, plot)
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", figure)
        screenshot = tmp_path / f"app_{tab.lower().replace(' ', '_')}.png"
        assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
        if os.environ.get("FACESCOPE_APP_SCREENSHOT"):
            shutil.copyfile(screenshot, Path(os.environ["FACESCOPE_APP_SCREENSHOT"]).parent / screenshot.name)


def test_bad_upload_message_in_page(browser, app_url, tmp_path):
    note = tmp_path / "notes.jpg"
    note.write_text("not a photo\n")
    wait = load(browser, app_url)
    browser.find_element(By.CSS_SELECTOR, "#photo-a input[type=file]").send_keys(str(note))
    wait.until(lambda d: "notes.jpg: not an image PIL can read" in text_of(d, "status-a"))


def test_many_faces_user_clicks_one(browser, app_url, tmp_path):
    tiles = [Image.open(path).convert("RGB") for path in (SAME_A, OTHER, SAME_B)]
    group = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)))
    for k, tile in enumerate(tiles):
        group.paste(tile, (sum(t.width for t in tiles[:k]), 0))
    group.save(tmp_path / "group.jpg", quality=92)
    wait = load(browser, app_url)
    browser.find_element(By.CSS_SELECTOR, "#photo-a input[type=file]").send_keys(str(tmp_path / "group.jpg"))
    wait.until(lambda d: "3 faces in group.jpg: using face 1" in text_of(d, "status-a"))
    thumbnails = browser.find_elements(By.CSS_SELECTOR, "#photo-a-faces .thumbnail-item")
    assert len(thumbnails) == 3
    browser.execute_script("arguments[0].click()", thumbnails[2])
    wait.until(lambda d: "using face 3" in text_of(d, "status-a"))
