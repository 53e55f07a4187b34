"""The page in a real browser: `carsdepo app`'s web server over a state with the tiny registered
champion and the monitoring assets' decisions, headless Chromium uploading a damaged and an
undamaged synthetic photo and a truncated file, moving the threshold, opening monitoring.

The tiny champion keeps every candidate box, so at the operating threshold its answers may be
"None" while at the slider's floor (score 0) every photo has damage drawn: what changes with
the threshold is proven, not the model's quality. Its screenshots (test-artifacts/app-test-*)
show that tiny model; the documentation's pictures are taken over a demo's state
(``screenshots.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from carsdepo_assets.prediction.inference_log import InferenceLog
from carsdepo_assets.synth import generate_dataset
from carsdepo_assets.taxonomy import CLASS_NAMES, NONE_ANSWER
from carsdepo_assets_tests.app.browser import (
    answers,
    drawn_images,
    main_text,
    running_app,
    settled,
    threshold_shown,
    threshold_to_floor,
    upload,
)
from carsdepo_assets_tests.app.conftest import DIM_BATCH, NORMAL_BATCH
from carsdepo_assets_tests.fixtures.browser import RENDER_WAIT_S, save_screenshot
from carsdepo_assets_tests.images.samples import truncated_jpeg

pytestmark = [pytest.mark.browser, pytest.mark.slow]
WIDTH, HEIGHT = 224, 160


def damaged_and_clean(folder: Path) -> tuple[Path, Path]:
    """A synthetic photo with known damage and one without any."""
    made = generate_dataset(folder, 6, seed=3, width=WIDTH, height=HEIGHT, clean_share=0.5)
    coco = json.loads(made.annotations_path.read_text())
    damaged = {annotation["image_id"] for annotation in coco["annotations"]}
    by_damage = {image["id"] in damaged: made.images_dir / image["file_name"]
                 for image in coco["images"]}
    return by_damage[True], by_damage[False]


def wait(driver, condition):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, RENDER_WAIT_S, poll_frequency=0.5).until(condition)


def shows(texts):
    return lambda driver: all(text in main_text(driver) for text in texts)


def test_a_person_checks_photos_moves_the_threshold_and_reads_the_decisions(
    champion, monitored, chromium, tmp_path
):
    damaged, clean = damaged_and_clean(tmp_path / "photos")
    corrupt = tmp_path / "photos" / "half-sent.jpg"
    corrupt.write_bytes(truncated_jpeg(1))

    with running_app(monitored, champion.name) as url:
        chromium.get(url)
        wait(chromium, lambda driver: driver.find_elements("css selector", "input[type=file]"))
        assert f"{champion} (the champion)" in main_text(chromium)
        upload(chromium, [damaged, clean, corrupt])
        wait(chromium, lambda driver: len(answers(driver)) == 2)
        wait(chromium, shows(["half-sent.jpg could not be checked: truncated or corrupt image"]))
        wait(chromium, settled)
        at_operating = answers(chromium)
        operating = threshold_shown(chromium)
        before = drawn_images(chromium, url)

        threshold_to_floor(chromium)
        wait(chromium, lambda driver: threshold_shown(driver) == "0.00")
        wait(chromium, lambda driver: NONE_ANSWER not in answers(driver).values())
        wait(chromium, settled)
        at_floor = answers(chromium)
        after = drawn_images(chromium, url)
        save_screenshot(chromium, "app-test-check.png")

        chromium.get(f"{url}/monitoring")
        wait(chromium, shows([f"{DIM_BATCH}: experiment", f"{NORMAL_BATCH}: no action",
                              f"reference vs {DIM_BATCH}", "Automation rate"]))
        wait(chromium, settled)
        monitoring = main_text(chromium)
        save_screenshot(chromium, "app-test-monitoring.png")

    assert set(at_operating) == set(at_floor) == {damaged.name, clean.name}
    assert operating == "0.50"
    for answer in at_floor.values():
        assert {part.split(": ")[0] for part in answer.split("; ")} <= set(CLASS_NAMES)
    def caption(photo: Path, threshold: str) -> str:
        return f"{photo.name}: {champion} at threshold {threshold}"

    assert set(before) == {caption(damaged, "0.50"), caption(clean, "0.50")}
    assert set(after) == {caption(damaged, "0.00"), caption(clean, "0.00")}
    assert {image.size for image in after.values()} == {(WIDTH, HEIGHT)}
    original = Image.open(damaged).convert("RGB")
    assert ImageChops.difference(after[caption(damaged, "0.00")], original).getbbox()

    records = list(InferenceLog(monitored.inference_log).read())  # the slider recorded nothing
    assert [(record.image, record.model_version, record.error is None) for record in records] == [
        (damaged.name, champion.version, True), (clean.name, champion.version, True),
        ("half-sent.jpg", champion.version, False)]
    assert f"{DIM_BATCH}: experiment" in monitoring and "light moved" in monitoring
    assert "brightness_mean" in monitoring and "Drift alerts" in monitoring
