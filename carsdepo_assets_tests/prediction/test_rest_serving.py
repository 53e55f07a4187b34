"""REST serving: ``carsdepo serve`` runs MLflow's real server on a free localhost port, and real
HTTP requests go to ``/invocations``: good images get the JSON answers, bad requests a 4xx
with the reason (and the server keeps serving), and every answered row is in the inference log.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from carsdepo_assets.cli import main
from carsdepo_assets.prediction.inference_log import REST, InferenceLog
from carsdepo_assets.state import ENV_VAR, PROJECT_ROOT, StateLayout
from carsdepo_assets.taxonomy import NONE_ANSWER
from carsdepo_assets_tests.fixtures.processes import stop_process_group
from carsdepo_assets_tests.prediction.conftest import well_formed

pytestmark = pytest.mark.slow  # starts the real server (it imports torch and loads the model)
START_TIMEOUT_S = 300


@dataclass(frozen=True)
class Server:
    url: str
    home: StateLayout

    def invoke(self, payload: dict | str) -> requests.Response:
        body = {"data": payload} if isinstance(payload, str) else {"json": payload}
        return requests.post(f"{self.url}/invocations", timeout=120,
                             headers={"Content-Type": "application/json"}, **body)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(registry_template: StateLayout, tmp_path_factory) -> Iterator[Server]:
    """``carsdepo serve`` over a copy of the template registry, stopped with its process group."""
    home = StateLayout(tmp_path_factory.mktemp("serve-home")).ensure()
    shutil.copy2(registry_template.mlflow / "mlflow.db", home.mlflow / "mlflow.db")
    port = free_port()
    env = {**os.environ, ENV_VAR: str(home.root), "MLFLOW_TRACKING_URI": ""}
    log_path = home.root / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "carsdepo_assets.cli", "serve", "--port", str(port)],
            cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the server and its workers
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_ready(url, process, log_path)
        yield Server(url, home)
    finally:
        stop_process_group(process)


def _wait_until_ready(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"carsdepo serve exited with {process.returncode}:\n"
                        f"{log_path.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(1)
    pytest.fail(f"carsdepo serve did not answer in {START_TIMEOUT_S}s:\n"
                f"{log_path.read_text()[-3000:]}")


def records(*encoded: str, threshold: float | None = None) -> dict:
    """An /invocations body; threshold 1 makes every answer "None" whatever the tiny model's
    scores, threshold 0 keeps every candidate box."""
    body: dict = {"dataframe_records": [{"image": value} for value in encoded]}
    if threshold is not None:
        body["params"] = {"threshold": threshold}
    return body


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


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


def test_a_fifo_or_a_device_in_the_path_column_is_refused_unread(
    server: Server, photo: bytes, tmp_path: Path
) -> None:
    """Real special files: a read would block on the FIFO (no writer) or never end on
    /dev/zero; the request's own timeout bounds the test."""
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    good = tmp_path / "good.jpg"
    good.write_bytes(photo)
    rows = [{"path": str(p)} for p in (fifo, "/dev/zero", tmp_path / "zero.jpg", good)]

    answered = server.invoke({"dataframe_records": rows, "params": {"threshold": 1.0}})

    assert answered.status_code == 200, answered.text
    fifo_row, device_row, link_row, good_row = answered.json()["predictions"]
    assert fifo_row["error"].endswith("not a regular file: named pipe (FIFO), not read")
    assert device_row["error"].endswith("not a regular file: character device, not read")
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
