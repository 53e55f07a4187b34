"""REST serving: ``carsdepo serve`` runs MLflow's real server on a free localhost port, and real
HTTP requests go to ``/invocations``: good images get the JSON answers, bad requests a 4xx
with the reason (and the server keeps serving), and every answered row is in the inference log.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from PIL import Image

from carsdepo_assets.cli import main
from carsdepo_assets.prediction.inference_log import REST, InferenceLog
from carsdepo_assets.state import StateLayout
from carsdepo_assets.taxonomy import NONE_ANSWER
from carsdepo_assets_tests.prediction.conftest import well_formed
from carsdepo_assets_tests.prediction.rest_server import (
    CLIENT_TIMEOUT_S,
    Server,
    b64,
    png_declaring,
    records,
    running_server,
)

pytestmark = pytest.mark.slow  # starts the real server (it imports torch and loads the model)


@pytest.fixture(scope="module")
def allowed(tmp_path_factory) -> Path:
    """The one folder this module's server reads the ``path`` column's files under."""
    return tmp_path_factory.mktemp("allowed")


@pytest.fixture(scope="module")
def server(registry_template: StateLayout, allowed: Path, tmp_path_factory) -> Iterator[Server]:
    """``carsdepo serve`` with its default limits but a 4 MiB body, reading files under
    ``allowed`` only, in two worker processes (the default where there are four cores)."""
    with running_server(registry_template, tmp_path_factory.mktemp("serve-home"),
                        ["--allow-paths-under", str(allowed), "--max-body-mb", "4",
                         "--workers", "2"]) as running:
        yield running


@pytest.fixture(scope="module")
def photo(panels: Path) -> bytes:
    return sorted((panels / "images").glob("*.jpg"))[0].read_bytes()


def test_served_champion_answers_base64_images_with_none_or_detections(
    server: Server, photo: bytes
) -> None:
    nothing_sure = server.invoke(records(b64(photo), b64(photo), threshold=1.0))
    every_candidate = server.invoke(records(b64(photo), threshold=0.0))

    assert nothing_sure.status_code == 200, nothing_sure.text
    assert nothing_sure.json() == {"predictions": [{"damage": NONE_ANSWER}] * 2}
    assert every_candidate.status_code == 200, every_candidate.text
    [answer] = every_candidate.json()["predictions"]
    assert well_formed(answer["damage"])


@pytest.mark.parametrize(("payload", "reason"), [
    ("{this is not JSON", "Invalid input"),
    ({"dataframe_records": [{"filename": "car.jpg"}]}, "expected a column 'image'"),
    (records(b64(b"plain text, not a picture")), "row 0: not an image"),
    (records(b64(png_declaring(8000, 7000))), "row 0: decompression bomb: header declares "
                                              "8000x7000"),
], ids=["invalid-json", "no-image-column", "not-an-image", "oversized-image"])
def test_bad_request_gets_a_4xx_with_the_reason_and_the_server_keeps_serving(
    server: Server, photo: bytes, payload: dict | str, reason: str
) -> None:
    refused = server.invoke(payload)
    after = server.invoke(records(b64(photo), threshold=1.0))

    assert 400 <= refused.status_code < 500
    assert reason in refused.json()["message"]
    assert after.status_code == 200 and after.json() == {"predictions": [{"damage": NONE_ANSWER}]}


def test_every_served_row_is_recorded_in_the_inference_log(server: Server, photo: bytes) -> None:
    text = b"not a photo " + os.urandom(8)  # a row no earlier request sent

    response = server.invoke(records(b64(photo), b64(text), threshold=1.0))

    assert response.status_code == 200  # one good row: the request is answered
    logged = {r.image_sha256: r for r in InferenceLog(server.home.inference_log).read()}
    good = logged[hashlib.sha256(photo).hexdigest()]
    bad = logged[hashlib.sha256(text).hexdigest()]
    assert (good.source, good.model_name, good.model_version) == (
        REST, "carsdepo-damage-detector", "1")
    assert good.result == NONE_ANSWER and good.latency_ms > 0
    assert bad.result is None and bad.error.startswith("not an image")


@pytest.mark.parametrize("threshold", [5.0, -1.0])
def test_a_threshold_outside_0_1_gets_a_400_and_nothing_is_logged(
    server: Server, photo: bytes, threshold: float
) -> None:
    marker = photo + os.urandom(8)  # JPEG readers ignore trailing bytes: a fresh sha256
    refused = server.invoke(records(b64(marker), threshold=threshold))

    assert refused.status_code == 400
    assert f"threshold={threshold}: must be within [0, 1]" in refused.json()["message"]
    logged = {r.image_sha256 for r in InferenceLog(server.home.inference_log).read()}
    assert hashlib.sha256(marker).hexdigest() not in logged


def test_the_inference_log_records_the_threshold_of_each_answer(
    server: Server, photo: bytes
) -> None:
    marker = photo + os.urandom(8)
    assert server.invoke(records(b64(marker), threshold=0.25)).status_code == 200
    logged = {r.image_sha256: r for r in InferenceLog(server.home.inference_log).read()}
    assert logged[hashlib.sha256(marker).hexdigest()].threshold == 0.25


def test_a_fifo_or_a_link_to_a_device_under_the_allowed_folder_is_refused_unread(
    server: Server, photo: bytes, allowed: Path
) -> None:
    """Real special files: a read would block on the FIFO (no writer) or never end on
    /dev/zero; the request's own timeout bounds the test."""
    fifo = allowed / "pipe.jpg"
    os.mkfifo(fifo)
    (allowed / "zero.jpg").symlink_to("/dev/zero")
    good = allowed / "good.jpg"
    good.write_bytes(photo)
    rows = [{"path": str(p)} for p in (fifo, allowed / "zero.jpg", good)]

    answered = server.invoke({"dataframe_records": rows, "params": {"threshold": 1.0}})

    assert answered.status_code == 200, answered.text
    fifo_row, link_row, good_row = answered.json()["predictions"]
    assert fifo_row["error"].endswith("not a regular file: named pipe (FIFO), not read")
    assert link_row["error"].endswith("symbolic link: not followed (it points to /dev/zero)")
    assert good_row == {"damage": NONE_ANSWER}


def test_requests_of_1_and_of_8_images_get_the_answers_carsdepo_predict_gives(
    server: Server, panels: Path, carsdepo_home: StateLayout, champion, capsys
) -> None:
    """Same model, same photos: one image per request, eight per request (one forward batch)
    and the command line answer alike, boxes and scores included (threshold 0 keeps every
    candidate)."""
    paths = (sorted((panels / "images").glob("*.jpg")) * 2)[:8]
    encoded = [b64(path.read_bytes()) for path in paths]

    assert main(["predict", *map(str, paths), "--json", "--threshold", "0"]) == 0
    by_command = [json.loads(line)["damage"] for line in capsys.readouterr().out.splitlines()]
    eight = server.invoke(records(*encoded, threshold=0.0))
    one_by_one = [server.invoke(records(image, threshold=0.0)) for image in encoded]

    assert eight.status_code == 200 and all(r.status_code == 200 for r in one_by_one)
    assert [answer["damage"] for answer in eight.json()["predictions"]] == by_command
    assert [r.json()["predictions"][0]["damage"] for r in one_by_one] == by_command
    assert all(well_formed(damage) for damage in by_command)


# -- the request budget and hostile requests ---------------------------------------------------

@pytest.fixture(scope="module")
def big_png() -> bytes:
    """A one-colour 7000x7000 PNG: about 150 KB of body, 147 MB once decoded."""
    buffer = io.BytesIO()
    Image.new("RGB", (7000, 7000), (90, 90, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def logged_digests(server: Server) -> set[str | None]:
    return {r.image_sha256 for r in InferenceLog(server.home.inference_log).read()}


def test_eight_rows_of_a_7000px_png_are_refused_before_any_is_decoded(
    server: Server, big_png: bytes
) -> None:
    refused = server.invoke(records(*[b64(big_png)] * 8, threshold=1.0))

    assert refused.status_code == 400
    message = refused.json()["message"]
    assert "over the limit of 100,000,000 decoded pixels" in message
    assert "carsdepo serve --max-request-megapixels changes it" in message
    assert hashlib.sha256(big_png).hexdigest() not in logged_digests(server)


def test_one_7000px_png_is_answered_in_its_own_pixels_from_a_bounded_working_size(
    server: Server, big_png: bytes
) -> None:
    """Read at 2048 px (the working-side bound), answered in 7000 px coordinates
    (``test_pyfunc`` checks the scaling exactly)."""
    answered = server.invoke(records(b64(big_png), threshold=0.0))

    assert answered.status_code == 200, answered.text
    [answer] = answered.json()["predictions"]
    assert well_formed(answer["damage"], 7000, 7000)


def test_more_rows_than_the_limit_get_a_400_naming_the_option(
    server: Server, photo: bytes
) -> None:
    refused = server.invoke(records(*[b64(photo)] * 65))

    assert refused.status_code == 400
    assert ("65 rows in the request, over the limit of 64 rows (carsdepo serve --max-rows "
            "changes it)") in refused.json()["message"]


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_gets_a_413_naming_the_option(
    server: Server, declared: bool
) -> None:
    body = b'{"dataframe_records": [{"image": "' + b"A" * (5 * 1024 * 1024) + b'"}]}'
    chunks = (body[start:start + 65536] for start in range(0, len(body), 65536))

    refused = requests.post(f"{server.url}/invocations", data=body if declared else chunks,
                            headers={"Content-Type": "application/json"},
                            timeout=CLIENT_TIMEOUT_S)

    assert refused.status_code == 413
    assert "over the limit of 4,194,304 bytes (carsdepo serve --max-body-mb changes it)" in (
        refused.json()["message"])


@pytest.mark.parametrize("path", [
    "/etc/shadow", "/etc/no-such-file", "{allowed}/../../etc/shadow", "etc/shadow",
], ids=["outside", "outside-missing", "dot-dot", "relative"])
def test_a_path_outside_the_allowed_folders_gets_a_403_that_says_nothing_of_the_file(
    server: Server, allowed: Path, path: str
) -> None:
    before = list(InferenceLog(server.home.inference_log).read())

    refused = server.invoke({"dataframe_records": [{"path": path.format(allowed=allowed)}]})

    assert refused.status_code == 403
    message = refused.json()["message"]
    assert ("row 0: 'path' is not a file under a folder this server allows (carsdepo serve "
            "--allow-paths-under)") in message
    assert "No such file" not in message and "regular file" not in message
    assert list(InferenceLog(server.home.inference_log).read()) == before


def test_a_linked_folder_under_the_allowed_one_does_not_lead_outside(
    server: Server, allowed: Path
) -> None:
    (allowed / "etc").symlink_to("/etc")

    answered = server.invoke({"dataframe_records": [{"path": str(allowed / "etc" / "shadow")}]})

    assert answered.status_code == 400  # the only row is refused: no usable image
    assert "symbolic link: not followed (it points to /etc)" in answered.json()["message"]
    assert hashlib.sha256(Path("/etc/shadow").read_bytes()).hexdigest() not in (
        logged_digests(server))


def test_the_inference_log_is_readable_by_its_owner_only(server: Server, photo: bytes) -> None:
    assert server.invoke(records(b64(photo), threshold=1.0)).status_code == 200
    [day] = InferenceLog(server.home.inference_log).files()[-1:]
    assert stat.S_IMODE(day.stat().st_mode) == 0o600


DEEP = 100_000


@pytest.mark.parametrize(("body", "content_type"), [
    ('{"dataframe_records": [{"image": "x"}]}', None),
    ('{"dataframe_records": ' + "[" * DEEP + "]" * DEEP + "}", "application/json"),
    ("[" * DEEP + "]" * DEEP, "application/json"),
    ("[]", "application/json"),
    ("5", "application/json"),
    ('"text"', "application/json"),
    ('{"dataframe_records": 5}', "application/json"),
    ('{"dataframe_records": [1, 2]}', "application/json"),
    ('{"dataframe_records": [[{"image": "x"}]]}', "application/json"),
    ('{"dataframe_records": [{"image": {"nested": 1}}]}', "application/json"),
    ('{"dataframe_split": {"columns": ["image"], "data": "x"}}', "application/json"),
    ('{"dataframe_split": 5}', "application/json"),
    ('{"instances": [[1, 2]]}', "application/json"),
    ('{"inputs": {"image": 5}}', "application/json"),
    ('{"inputs": 5}', "application/json"),
    ('{"dataframe_records": [{"image": "x"}], "params": 5}', "application/json"),
    ('{"dataframe_records": [{"image": "x"}], "params": {"threshold": "high"}}',
     "application/json"),
    ('{"dataframe_records": [{"image": "x"}], "params": {"threshold": null}}',
     "application/json"),
    ('{"dataframe_records": [{"image": 1e309}]}', "application/json"),
    ('{"dataframe_records": [{"image": "x"}]}', "text/plain"),
    ('{"dataframe_records": [{"image": "x"}]}', "application/json; charset=latin-1"),
    ('{"dataframe_records": [{"image": "x"}]}', "application/json; boundary=x"),
    ("image\n\"unterminated", "text/csv"),
    ("a,b\n1,2,3,4\n", "text/csv"),
    ("not parquet", "application/vnd.apache.parquet"),
    (b"\xff\xfe\x00garbage", "application/json"),
])
def test_every_malformed_request_gets_a_4xx_and_the_server_keeps_serving(
    server: Server, photo: bytes, body: str | bytes, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}

    refused = requests.post(f"{server.url}/invocations", data=body, headers=headers,
                            timeout=CLIENT_TIMEOUT_S)
    after = server.invoke(records(b64(photo), threshold=1.0))

    assert 400 <= refused.status_code < 500, refused.text[:500]
    assert after.status_code == 200
