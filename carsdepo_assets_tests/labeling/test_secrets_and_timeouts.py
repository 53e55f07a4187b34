"""The public local token only reaches the local loopback server, and a hung Label Studio costs a
sensor a skip with the reason, not a tick error."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from dagster import SkipReason, build_sensor_context
from dagster._grpc.client import DEFAULT_SENSOR_GRPC_TIMEOUT

from carsdepo_assets.labeling import server
from carsdepo_assets.resources.label_studio import LabelStudioResource
from carsdepo_assets.sensors.annotations import annotation_sensor
from carsdepo_assets.state import StateLayout
from carsdepo_assets_tests.fixtures.label_studio import LabelStudioServer, free_port


@pytest.fixture
def no_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(server.API_KEY_ENV, raising=False)


def test_a_set_api_key_is_used_as_it_is(carsdepo_home: StateLayout) -> None:
    token = server.api_token("https://ls.example.com", carsdepo_home,
                             {server.API_KEY_ENV: "real-token"})
    assert token == "real-token"


@pytest.mark.parametrize("url", ["https://ls.example.com", "http://127.0.0.1:8080"])
def test_without_an_api_key_and_no_local_server_the_error_names_the_variable(
    carsdepo_home: StateLayout, url: str
) -> None:
    with pytest.raises(server.MissingSecret, match="LABEL_STUDIO_API_KEY is not set"):
        server.api_token(url, carsdepo_home, {})


@pytest.mark.label_studio
def test_the_local_token_is_given_for_the_server_started_from_this_state_folder_only(
    label_studio_server: LabelStudioServer, carsdepo_home: StateLayout
) -> None:
    url = label_studio_server.url
    assert server.api_token(url, label_studio_server.layout, {}) == server.DEFAULT_TOKEN
    with pytest.raises(server.MissingSecret):  # the same URL, another state folder
        server.api_token(url, carsdepo_home, {})


def test_start_refuses_the_public_defaults_on_an_address_others_can_reach(
    tmp_path, monkeypatch: pytest.MonkeyPatch, no_api_key
) -> None:
    monkeypatch.delenv("LABEL_STUDIO_PASSWORD", raising=False)
    layout = StateLayout(tmp_path / "home").ensure()
    with pytest.raises(server.ServerError, match="public local defaults of LABEL_STUDIO_PASSW"):
        server.start(layout, host="0.0.0.0", port=free_port())
    assert not (layout.label_studio_server_file).exists()


def test_the_sensor_without_an_api_key_skips_naming_the_variable(
    carsdepo_home: StateLayout, no_api_key
) -> None:
    remote = LabelStudioResource(url="https://ls.example.com")
    outcome = annotation_sensor(build_sensor_context(resources={"label_studio": remote}))
    assert isinstance(outcome, SkipReason)
    assert "LABEL_STUDIO_API_KEY is not set" in outcome.skip_message


@pytest.fixture
def hung_server() -> Iterator[str]:
    """A real TCP server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def test_the_http_timeout_is_below_the_sensor_timeout() -> None:
    assert LabelStudioResource(api_key="k").timeout_s < DEFAULT_SENSOR_GRPC_TIMEOUT


def test_a_hung_label_studio_gives_the_sensor_a_skip_with_the_reason(hung_server: str) -> None:
    hung = LabelStudioResource(url=hung_server, api_key="k", timeout_s=2)
    cursor = "2026-01-01T00:00:00+00:00"
    context = build_sensor_context(cursor=cursor, resources={"label_studio": hung})
    outcome = annotation_sensor(context)
    assert isinstance(outcome, SkipReason) and "unreachable" in outcome.skip_message
    assert hung_server in outcome.skip_message and context.cursor == cursor
