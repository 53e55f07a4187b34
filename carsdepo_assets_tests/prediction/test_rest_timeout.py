"""A request past its timeout on a real ``carsdepo serve``: the client gets a 504, the work
stops (nothing of it reaches the inference log) and the next client is answered.

The server has one worker process, so the next request is answered only if the timed-out one
stopped working: otherwise it would wait behind the rest of its work (seconds of it) and be
refused as busy. Generous client timeouts; nothing here asserts a duration.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from carsdepo_assets.prediction.inference_log import InferenceLog
from carsdepo_assets.state import StateLayout
from carsdepo_assets.taxonomy import NONE_ANSWER
from carsdepo_assets_tests.prediction.rest_server import Server, b64, records, running_server

pytestmark = pytest.mark.slow  # starts the real server
TIMEOUT_S = 3
ROWS = 160


@pytest.fixture(scope="module")
def server(registry_template: StateLayout, tmp_path_factory) -> Iterator[Server]:
    with running_server(registry_template, tmp_path_factory.mktemp("timeout-home"), [
        "--workers", "1", "--timeout", str(TIMEOUT_S), "--max-rows", str(ROWS),
        "--max-request-megapixels", "5000",
    ]) as running:
        yield running


def one_colour_png(side: int, shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (shade, shade, shade)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_request_past_the_timeout_stops_and_the_next_client_is_answered(
    server: Server,
) -> None:
    """160 rows of a 4000 px photo: each decoded and resampled before the model sees it, many
    times the timeout's worth of work on any machine this runs on."""
    slow = one_colour_png(4000, 77)
    quick = one_colour_png(64, 200)

    late = server.invoke(records(*[b64(slow)] * ROWS, threshold=1.0))
    after = server.invoke(records(b64(quick), threshold=1.0))

    assert late.status_code == 504, late.text[:500]
    assert (f"request timed out after {TIMEOUT_S} s: its remaining images were not answered "
            "(carsdepo serve --timeout changes the limit)") in late.json()["message"]
    assert after.status_code == 200 and after.json() == {
        "predictions": [{"damage": NONE_ANSWER}]}
    logged = [r.image_sha256 for r in InferenceLog(server.home.inference_log).read()]
    assert hashlib.sha256(slow).hexdigest() not in logged
    assert hashlib.sha256(quick).hexdigest() in logged


def test_a_client_arriving_during_a_slow_request_is_answered_or_told_the_server_is_busy(
    server: Server,
) -> None:
    """One worker, busy past the newcomer's own timeout: the newcomer gets its answer (if the
    slow request stopped first) or a 503 that says why, never a hang or a 500."""
    slow = one_colour_png(4000, 78)
    with ThreadPoolExecutor(1) as pool:
        late = pool.submit(server.invoke, records(*[b64(slow)] * ROWS, threshold=1.0))
        time.sleep(1.0)  # the slow request is being worked on
        newcomer = server.invoke(records(b64(one_colour_png(64, 201)), threshold=1.0))
        assert late.result().status_code == 504

    assert newcomer.status_code in (200, 503), newcomer.text[:500]
    if newcomer.status_code == 503:
        assert "server busy: the request waited its whole timeout behind other requests" in (
            newcomer.json()["message"])
    assert server.invoke(records(b64(one_colour_png(64, 202)), threshold=1.0)).status_code == 200
