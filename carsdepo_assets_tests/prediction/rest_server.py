"""A real ``carsdepo serve`` for tests: started on a free localhost port over a copy of the
template registry, with the options a test module asks for, stopped with its process group."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from carsdepo_assets.state import ENV_VAR, PROJECT_ROOT, StateLayout
from carsdepo_assets_tests.fixtures.processes import stop_process_group

START_TIMEOUT_S = 300
CLIENT_TIMEOUT_S = 120  # generous: a test only asks that nothing hangs


@dataclass(frozen=True)
class Server:
    url: str
    home: StateLayout

    def invoke(self, payload: dict | str, **post) -> requests.Response:
        body = {"data": payload} if isinstance(payload, str) else {"json": payload}
        headers = post.pop("headers", {"Content-Type": "application/json"})
        return requests.post(f"{self.url}/invocations", timeout=CLIENT_TIMEOUT_S,
                             headers=headers, **body, **post)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_server(template: StateLayout, home_root: Path,
                   options: Sequence[str] = ()) -> Iterator[Server]:
    """``carsdepo serve [options]`` with the template's registry copied into ``home_root``."""
    home = StateLayout(home_root).ensure()
    shutil.copy2(template.mlflow / "mlflow.db", home.mlflow / "mlflow.db")
    port = free_port()
    env = {**os.environ, ENV_VAR: str(home.root), "MLFLOW_TRACKING_URI": ""}
    log_path = home.root / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "carsdepo_assets.cli", "serve", "--port", str(port),
             *options],
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
