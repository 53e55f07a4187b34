"""Driving the page in a real browser: the app started as `carsdepo app` starts it, and what a
person sees on it, read back from the DOM (answers, drawn photos, the threshold)."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urljoin

import requests
from PIL import Image

from carsdepo_assets.app.launch import app_command
from carsdepo_assets.detection.champion import mlflow_tracking_uri
from carsdepo_assets.state import StateLayout
from carsdepo_assets_tests.fixtures.label_studio import free_port
from carsdepo_assets_tests.fixtures.processes import stop_process_group

START_WAIT_S = 120  # ceilings for waits, not speed expectations
ANSWER = re.compile(r"^(?P<name>\S+) — answer: (?P<answer>.+)$", re.MULTILINE)


@contextmanager
def running_app(layout: StateLayout, model_name: str) -> Iterator[str]:
    """The page over ``layout`` on a free port, for as long as the block runs; its URL."""
    port = free_port()
    argv, env = app_command(layout, model_name, mlflow_tracking_uri(layout),
                            Path(sys.executable).parent, port=port)
    log_path = Path(layout.root) / "app.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, process, log_path)
        yield url
    finally:
        stop_process_group(process, grace_s=20)


def wait_for_health(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(f"{url}/_stcore/health", timeout=5).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the page did not start at {url}:\n{log_path.read_text()[-4000:]}")


def settled(driver) -> bool:
    """The script has finished its run (no running indicator, no placeholder left) and every
    picture has loaded."""
    return driver.execute_script(
        "return !document.querySelector('[data-testid=stStatusWidget], "
        "[data-testid=stSkeleton]') && "
        "Array.from(document.images).every(img => img.complete && img.naturalWidth > 0);")


def main_text(driver) -> str:
    return driver.find_element("css selector", "[data-testid=stMain]").text


def answers(driver) -> dict[str, str]:
    """Photo name -> the answer shown for it."""
    return {match["name"]: match["answer"] for match in ANSWER.finditer(main_text(driver))}


def drawn_images(driver, base_url: str) -> dict[str, Image.Image]:
    """Caption -> the drawn photo the page shows, fetched from the page's own media URL."""
    found = {}
    for figure in driver.find_elements("css selector", "[data-testid=stImageContainer]"):
        image = figure.find_element("tag name", "img")
        caption = figure.find_elements("css selector", "[data-testid=stImageCaption]")
        source = image.get_attribute("src")
        data = requests.get(urljoin(base_url, source), timeout=30).content
        found[caption[0].text if caption else source] = Image.open(io.BytesIO(data))
    return found


def upload(driver, paths: list[Path]) -> None:
    field = driver.find_element("css selector", "input[type=file]")
    field.send_keys("\n".join(str(path) for path in paths))


def threshold_to_floor(driver) -> None:
    """Move the threshold to its lowest value with the keyboard (focus, Home), as a person
    can; the slider's range input is visually hidden, so it is focused by script."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    handle = driver.find_element("css selector", "[data-testid=stSlider] input[type=range]")
    driver.execute_script("arguments[0].focus();", handle)
    ActionChains(driver).send_keys(Keys.HOME).perform()


def threshold_shown(driver) -> str:
    return driver.find_element("css selector", "[data-testid=stSliderThumbValue]").text
