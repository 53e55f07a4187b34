"""Photos checked on the page with the tiny registered champion: answers re-filtered at any
threshold without running the model again, boxes drawn, bad files with ingestion's reasons,
every answer in the inference log.

The tiny detector keeps every candidate box (score floor 0), so at threshold 0 every photo has
damage and at threshold 1 none has: the tests prove the plumbing, not the model."""

from __future__ import annotations

import pytest
from PIL import ImageChops

from carsdepo_assets.app.limits import PhotoLimits
from carsdepo_assets.app.photos import (
    RECORDED_SOURCE,
    PhotoChecker,
    SubmissionTooLarge,
    stored_batch_photos,
    stored_batches,
)
from carsdepo_assets.images.ingest import ingest_batch
from carsdepo_assets.images.manifest import QUARANTINED
from carsdepo_assets.images.store import sha256_hex
from carsdepo_assets.images.validate import ImagePolicy
from carsdepo_assets.prediction.inference_log import InferenceLog
from carsdepo_assets.prediction.limits import ServingLimits
from carsdepo_assets.prediction.pyfunc import load_registered_detector
from carsdepo_assets.taxonomy import CLASS_NAMES, NONE_ANSWER
from carsdepo_assets_tests.fixtures.registry import BATCH
from carsdepo_assets_tests.images.samples import bad_files
from carsdepo_assets_tests.prediction.conftest import HEIGHT, WIDTH, well_formed

pytestmark = pytest.mark.slow  # the package's tiny champion is trained once (most of a minute)


@pytest.fixture
def checker(champion, carsdepo_home) -> PhotoChecker:
    return PhotoChecker(load_registered_detector(champion.uri), champion,
                        InferenceLog(carsdepo_home.inference_log))


def panel_photos(panels, count: int = 2) -> list[tuple[str, bytes]]:
    return [(path.name, path.read_bytes())
            for path in sorted((panels / "images").glob("*.jpg"))[:count]]


def test_answers_follow_the_threshold_without_running_the_model_again(checker, panels):
    check = checker.check(panel_photos(panels), PhotoLimits())
    first = check.photos[0]

    assert check.model == checker.model and check.threshold == checker.threshold
    assert check.score_floor == 0.0
    assert first.reason is None and first.detections
    low = first.answer(0.0)
    assert len(low) == len(first.detections)
    assert {found["label"] for found in low} <= set(CLASS_NAMES)
    assert first.answer(1.0) == NONE_ANSWER
    cut = sorted(found.score for found in first.detections)[len(first.detections) // 2]
    assert len(first.answer(cut)) == sum(found.score >= cut for found in first.detections)


def test_the_boxes_kept_at_the_threshold_are_drawn(checker, panels):
    photo = checker.check(panel_photos(panels, 1), PhotoLimits()).photos[0]

    untouched = photo.drawn(1.0)
    assert ImageChops.difference(untouched, photo.image).getbbox() is None
    assert ImageChops.difference(photo.drawn(0.0), photo.image).getbbox() is not None


def test_bad_files_get_the_reasons_ingestion_gives_and_the_others_their_answer(
    checker, panels, carsdepo_home, tmp_path
):
    chosen = ["empty.jpg", "truncated.jpg", "notes.jpg", "animation.gif", "bomb.png"]
    folder = tmp_path / "bad"
    folder.mkdir()
    for name in chosen:
        (folder / name).write_bytes(bad_files()[name][0])
    ingested = ingest_batch(folder, "lot-bad", carsdepo_home)
    ingestion_reasons = {row.path: row.reason for row in ingested.rows
                         if row.status == QUARANTINED}

    good = panel_photos(panels, 1)
    check = checker.check([*good, *((name, bad_files()[name][0]) for name in chosen)],
                          PhotoLimits())

    assert check.photos[0].reason is None
    assert {photo.name: photo.reason for photo in check.photos[1:]} == ingestion_reasons
    with pytest.raises(ValueError, match="notes.jpg"):
        check.photos[3].drawn(0.5)


def test_every_answer_is_recorded_at_the_operating_threshold(checker, panels, carsdepo_home):
    photos = [*panel_photos(panels), ("notes.jpg", bad_files()["notes.jpg"][0])]
    check = checker.check(photos, PhotoLimits())

    records = list(InferenceLog(carsdepo_home.inference_log).read())
    assert [record.image for record in records] == [name for name, _ in photos]
    assert {(r.source, r.model_name, r.model_version, r.threshold) for r in records} == {
        (RECORDED_SOURCE, checker.model.name, checker.model.version, checker.threshold)}
    assert [record.image_sha256 for record in records] == [sha256_hex(d) for _, d in photos]
    assert [record.result for record in records[:2]] == [
        photo.answer(checker.threshold) for photo in check.photos[:2]]
    assert records[2].result is None and records[2].error.startswith("not an image")


def test_a_submission_over_the_request_limits_is_refused_before_the_model_runs(
    checker, panels, carsdepo_home
):
    with pytest.raises(SubmissionTooLarge, match="3 photos: at most 2 at a time"):
        checker.check(panel_photos(panels, 3), PhotoLimits(request=ServingLimits(max_rows=2)))
    pixels = 2 * WIDTH * HEIGHT
    with pytest.raises(SubmissionTooLarge, match=f"declare {pixels:,} pixels together"):
        checker.check(panel_photos(panels, 2),
                      PhotoLimits(request=ServingLimits(max_request_pixels=pixels - 1)))
    assert list(InferenceLog(carsdepo_home.inference_log).read()) == []


def test_a_photo_over_the_working_side_is_read_smaller_and_answered_in_its_own_pixels(
    checker, panels
):
    limits = PhotoLimits(request=ServingLimits(max_working_side=WIDTH // 2))
    photo = checker.check(panel_photos(panels, 1), limits).photos[0]

    assert photo.scale == 0.5 and photo.image.size == (WIDTH // 2, HEIGHT // 2)
    assert photo.drawn(0.0).size == (WIDTH // 2, HEIGHT // 2)
    assert [found["box"] for found in photo.answer(0.0)] == [
        [round(2 * value, 1) for value in found.box] for found in photo.detections]
    assert well_formed(photo.answer(0.0))


def test_a_stored_batch_is_checked_by_its_file_names_up_to_the_limit(checker, batch,
                                                                     carsdepo_home):
    assert stored_batches(carsdepo_home) == [BATCH]
    limits = PhotoLimits(request=ServingLimits(max_rows=4))
    photos, unreadable = stored_batch_photos(carsdepo_home, BATCH, limits)

    stored = [row for row in batch.rows if row.sha256]
    assert [name for name, _ in photos] == [row.path for row in stored[:4]]
    assert unreadable == []
    assert all(photo.reason is None for photo in checker.check(photos, PhotoLimits()).photos)


def test_a_stored_photo_that_vanished_is_named_not_fatal(batch, carsdepo_home):
    from carsdepo_assets.images.store import ImageStore

    gone = next(row for row in batch.rows if row.sha256)
    ImageStore(carsdepo_home.images).path_for(gone.sha256).unlink()

    photos, unreadable = stored_batch_photos(carsdepo_home, BATCH, PhotoLimits())

    assert gone.path not in [name for name, _ in photos]
    assert len(unreadable) == 1 and unreadable[0].startswith(f"{gone.path} (")


def test_the_upload_limit_is_the_file_limit_in_whole_megabytes():
    assert PhotoLimits().upload_megabytes == 50
    assert PhotoLimits(ImagePolicy(max_file_bytes=2**20 + 1)).upload_megabytes == 2
