"""The documentation's pictures of the page, taken over a demo's state:
``python -m carsdepo_assets_tests.app.screenshots [STATE]`` (default: the checkout's
``.carsdepo`` after ``make demo``) writes ``docs/images/app-check.png``, ``app-monitoring.png``
and ``app-models.png``.

The records the page reads are copied into a scratch state first, so the photos checked for the
pictures are recorded there, not in the demo's inference log. The photos are the demo's own
test batch: two with damage, one without, and a truncated file."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from carsdepo_assets.state import DEFAULT_HOME, PROJECT_ROOT, StateLayout
from carsdepo_assets_tests.app.browser import (
    answers,
    main_text,
    running_app,
    settled,
    upload,
)
from carsdepo_assets_tests.fixtures.browser import headless_chromium
from carsdepo_assets_tests.images.samples import truncated_jpeg

DEFAULT_MODEL_NAME = "carsdepo-damage-detector"
PAGE_RECORDS = ("annotations", "datasets", "inference_log", "manifests", "mlflow", "predictions",
                "profiles", "reports")
OUT = PROJECT_ROOT / "docs" / "images"
WAIT_S = 180


def demo_photos(state: StateLayout, scratch: Path) -> list[Path]:
    """Two damaged and one clean photo of the demo's test batch, and a truncated file."""
    test_batch = sorted(state.synthetic.glob("demo-test-*"))[-1]
    coco = json.loads((test_batch / "annotations.json").read_text())
    damaged = {annotation["image_id"] for annotation in coco["annotations"]}
    images = coco["images"]
    chosen = ([image for image in images if image["id"] in damaged][:2]
              + [image for image in images if image["id"] not in damaged][:1])
    truncated = scratch / "sent-half.jpg"
    truncated.write_bytes(truncated_jpeg(1))
    return [test_batch / "images" / image["file_name"] for image in chosen] + [truncated]


def take(state_dir: Path, out: Path, model_name: str) -> list[Path]:
    from selenium.webdriver.support.ui import WebDriverWait

    state = StateLayout(state_dir)
    written = []
    with tempfile.TemporaryDirectory(prefix="carsdepo-app-shots-") as scratch:
        copy = StateLayout(Path(scratch) / "state")
        for folder in PAGE_RECORDS:
            if Path(state.root, folder).is_dir():
                shutil.copytree(Path(state.root, folder), Path(copy.root, folder))
        photos = demo_photos(state, Path(scratch))
        with running_app(copy, model_name) as url, headless_chromium(1400, 1700) as driver:
            wait = WebDriverWait(driver, WAIT_S, poll_frequency=0.5)
            driver.get(url)
            wait.until(lambda d: d.find_elements("css selector", "input[type=file]"))
            upload(driver, photos)
            wait.until(lambda d: len(answers(d)) == len(photos) - 1)
            wait.until(lambda d: len(d.find_elements("css selector", "[data-testid=stImage]"))
                       == len(photos) - 1)
            for name, wanted in (("app-check.png", None), ("app-monitoring.png", "Drift alerts"),
                                 ("app-models.png", "What a rollback would change")):
                if wanted:
                    driver.get(f"{url}/{name.removeprefix('app-').removesuffix('.png')}")
                    wait.until(lambda d, text=wanted: text in main_text(d))
                wait.until(settled)
                driver.save_screenshot(str(out / name))
                written.append(out / name)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("state", nargs="?", type=Path, default=DEFAULT_HOME,
                        help="a state folder after `make demo` (default: .carsdepo)")
    parser.add_argument("--out", type=Path, default=OUT, help="where the pictures go")
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    args = parser.parse_args()
    for path in take(args.state, args.out, args.model_name):
        print(path)


if __name__ == "__main__":
    main()
