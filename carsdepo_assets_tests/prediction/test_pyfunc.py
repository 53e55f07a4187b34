"""The detector as an MLflow pyfunc: logged, registered, loaded back by alias, answering.

A detector trained for a few iterations cannot be expected to find damage, so these tests prove
the plumbing (what comes back, in which shape, for which input), not the model's quality: at
the operating threshold its weak scores answer "None"; at threshold 0 every candidate box comes
back and must be well-formed. Quality is measured in benchmarks/.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from PIL import Image

from carsdepo_assets.detection.backends import load_detector, train_detector
from carsdepo_assets.detection.champion import CHALLENGER, alias_version, configure_mlflow
from carsdepo_assets.detection.config import DetectorConfig
from carsdepo_assets.detection.data import CocoSplit
from carsdepo_assets.images.validate import ImagePolicy
from carsdepo_assets.prediction.deadline import DeadlinePassed
from carsdepo_assets.prediction.limits import OverLimit, ServingLimits
from carsdepo_assets.prediction.pyfunc import (
    answer_frame,
    answer_rows,
    b64_image,
    log_detector_model,
)
from carsdepo_assets.state import StateLayout
from carsdepo_assets.synth import generate_dataset
from carsdepo_assets.taxonomy import CLASS_NAMES

pytestmark = pytest.mark.slow  # trains a (tiny) detector once for the module
MODEL = "damage-detector"
WIDTH, HEIGHT = 256, 192


@pytest.fixture(scope="module")
def panels(tmp_path_factory) -> dict[str, Path]:
    """Four synthetic panels; the first clean one and the first damaged one by ground truth."""
    out = tmp_path_factory.mktemp("panels")
    generate_dataset(out, n_images=4, seed=3, clean_share=0.25, width=WIDTH, height=HEIGHT)
    coco = json.loads((out / "annotations.json").read_text())
    damaged_ids = {ann["image_id"] for ann in coco["annotations"]}
    by_kind: dict[str, Path] = {}
    for image in coco["images"]:
        kind = "damaged" if image["id"] in damaged_ids else "clean"
        by_kind.setdefault(kind, out / "images" / image["file_name"])
    assert set(by_kind) == {"clean", "damaged"}
    return {**by_kind, "root": out}


@pytest.fixture(scope="module")
def detector_dir(panels, tmp_path_factory) -> Path:
    config = DetectorConfig.preset(
        "cpu", iterations=4, batch_size=2, min_size=HEIGHT, max_size=WIDTH,
        box_score_thresh=0.0, eval_period=1000, checkpoint_period=1000,
    )
    work = tmp_path_factory.mktemp("training")
    detector = train_detector(CocoSplit.from_folder(panels["root"]), None, config, work)
    return detector.save(work / "detector")


@pytest.fixture(scope="module")
def served(detector_dir, tmp_path_factory):
    """The detector logged and registered in a fresh local store, loaded back by alias."""
    layout = StateLayout(tmp_path_factory.mktemp("home")).ensure()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", "")  # restored afterwards: MLflow rewrites it
        configure_mlflow(layout, "pyfunc-tests")
        with mlflow.start_run():
            info = log_detector_model(detector_dir, registered_model_name=MODEL,
                                      tags={"dataset": "synthetic-4"})
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}@{CHALLENGER}")
        yield info, model
        mlflow.set_tracking_uri(None)


def well_formed(answer, width: int = WIDTH, height: int = HEIGHT) -> bool:
    return isinstance(answer, list) and bool(answer) and all(
        d["label"] in CLASS_NAMES and 0.0 <= d["score"] <= 1.0
        and 0 <= d["box"][0] <= d["box"][2] <= width and 0 <= d["box"][1] <= d["box"][3] <= height
        for d in answer
    )


def test_registered_model_loads_back_by_alias_and_answers_none_or_detections(served, panels):
    info, model = served
    assert info.registered_model_version == 1
    assert alias_version(MODEL, CHALLENGER) == "1"

    clean = model.predict(pd.DataFrame({"image": [b64_image(panels["clean"].read_bytes())]}))
    damaged = model.predict(pd.DataFrame({"path": [str(panels["damaged"])]}),
                            params={"threshold": 0.0})

    assert clean == [{"damage": "None"}]
    assert len(damaged) == 1 and well_formed(damaged[0]["damage"])


def test_pyfunc_answers_exactly_what_the_saved_detector_answers(served, detector_dir, panels):
    _, model = served
    detector = load_detector(detector_dir)
    images = [Image.open(panels[kind]).convert("RGB") for kind in ("clean", "damaged")]

    served_answers = model.predict(
        pd.DataFrame({"path": [str(panels["clean"]), str(panels["damaged"])]}),
        params={"threshold": 0.0},
    )

    assert [a["damage"] for a in served_answers] == detector.answers(images, threshold=0.0)


def test_bad_rows_get_error_records_and_good_rows_still_answered(served, detector_dir, panels,
                                                               tmp_path):
    _, model = served
    good = b64_image(panels["damaged"].read_bytes())
    rows = [
        {"image": good},
        {"image": "this is not base64!"},
        {"image": b64_image(b"plain text, not a picture")},
        {"path": str(tmp_path / "missing.jpg")},
        {"image": None, "path": None},
    ]

    records = model.predict(pd.DataFrame(rows), params={"threshold": 0.0})

    assert well_formed(records[0]["damage"])
    assert records[1]["error"].startswith("not base64")
    assert records[2]["error"].startswith("not an image")
    assert records[3]["error"].startswith(f"cannot read {tmp_path / 'missing.jpg'}")
    assert records[4] == {"error": "neither 'image' nor 'path' given"}


def test_oversized_image_is_refused_before_decoding(detector_dir, panels):
    small_limit = ImagePolicy(max_pixels=WIDTH * HEIGHT - 1)
    big = io.BytesIO()
    Image.open(panels["clean"]).save(big, format="PNG")

    records = answer_rows(load_detector(detector_dir), pd.DataFrame({"image": [b64_image(
        big.getvalue())]}), threshold=0.5, policy=small_limit)

    assert records[0]["error"].startswith(f"decompression bomb: header declares {WIDTH}x{HEIGHT}")


def test_request_with_no_usable_image_is_refused_as_invalid(served):
    _, model = served

    with pytest.raises(MlflowException, match="no usable image in the request: row 0: not an"
                       ) as no_image:
        model.predict(pd.DataFrame({"image": [b64_image(b"plain text")]}))
    with pytest.raises(MlflowException, match="expected a column 'image'") as no_column:
        model.predict(pd.DataFrame({"filename": ["x.jpg"]}))

    # what `mlflow models serve` answers: 400 Bad Request, and it keeps serving
    assert no_image.value.get_http_status_code() == no_column.value.get_http_status_code() == 400


def _frame(*images: Image.Image) -> pd.DataFrame:
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded.append(b64_image(buffer.getvalue()))
    return pd.DataFrame({"image": encoded})


def test_a_photo_over_the_working_side_is_read_smaller_and_answered_in_its_own_pixels(
    detector_dir, panels
):
    """Twice the bound: the model reads it at the bound (the photo as the server resamples
    it), the boxes come back doubled."""
    detector = load_detector(detector_dir)
    large = Image.open(panels["damaged"]).convert("RGB").resize((2 * WIDTH, 2 * HEIGHT))
    small = large.resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR, reducing_gap=3.0)
    bound = ServingLimits(max_working_side=WIDTH)

    at_bound = answer_frame(detector, _frame(small), 0.0, limits=bound)
    over_bound = answer_frame(detector, _frame(large), 0.0, limits=bound)

    [expected], [found] = (a.record["damage"] for a in at_bound), (
        a.record["damage"] for a in over_bound)
    assert found and len(found) == len(expected)
    for near, far in zip(expected, found, strict=True):
        assert far["label"] == near["label"] and far["score"] == pytest.approx(near["score"])
        assert far["box"] == pytest.approx([2 * v for v in near["box"]], abs=0.2)


def test_a_served_request_is_refused_whole_over_its_row_or_pixel_budget(detector_dir, panels):
    detector = load_detector(detector_dir)
    photo = Image.open(panels["clean"]).convert("RGB")
    frame = _frame(photo, photo, photo)

    with pytest.raises(OverLimit, match="3 rows in the request, over the limit of 2 rows"):
        answer_frame(detector, frame, 0.5, limits=ServingLimits(max_rows=2))
    with pytest.raises(OverLimit, match=f"declare more than {2 * WIDTH * HEIGHT:,} pixels, over "
                       f"the limit of {WIDTH * HEIGHT + 1:,} decoded pixels"):
        answer_frame(detector, frame, 0.5,
                     limits=ServingLimits(max_request_pixels=WIDTH * HEIGHT + 1))
    assert len(answer_frame(detector, frame, 0.5, limits=ServingLimits(
        max_rows=3, max_request_pixels=3 * WIDTH * HEIGHT))) == 3


def test_a_served_request_reads_no_path_unless_its_folder_is_allowed(
    detector_dir, panels, tmp_path
):
    detector = load_detector(detector_dir)
    photo = tmp_path / "allowed" / "photo.jpg"
    photo.parent.mkdir()
    photo.write_bytes(panels["clean"].read_bytes())
    frame = pd.DataFrame({"path": [str(photo)]})

    with pytest.raises(OverLimit, match="the 'path' column is off on this server") as off:
        answer_frame(detector, frame, 1.0, limits=ServingLimits())
    with pytest.raises(OverLimit, match="not a file under a folder this server allows"):
        answer_frame(detector, frame, 1.0,
                     limits=ServingLimits(allowed_path_roots=(str(tmp_path / "other"),)))
    [answered] = answer_frame(detector, frame, 1.0, limits=ServingLimits(
        allowed_path_roots=(str(photo.parent),)))

    assert off.value.status == 403
    assert answered.record == {"damage": "None"}
    assert answered.sha256 == hashlib.sha256(photo.read_bytes()).hexdigest()


def test_work_past_its_deadline_stops_before_the_next_image(detector_dir, panels):
    detector = load_detector(detector_dir)
    frame = _frame(Image.open(panels["clean"]).convert("RGB"))

    with pytest.raises(DeadlinePassed, match="request timed out after 5 s"):
        answer_frame(detector, frame, 0.5, limits=ServingLimits(timeout_s=5.0),
                     deadline=time.monotonic() - 1.0)
