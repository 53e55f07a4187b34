"""Starting, finding and stopping the Label Studio server by its own pid file."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from carsdepo_assets.labeling import server
from carsdepo_assets.state import StateLayout
from carsdepo_assets_tests.fixtures.label_studio import LabelStudioServer


@pytest.mark.label_studio
def test_start_finds_the_running_server_instead_of_starting_another(
    label_studio_server: LabelStudioServer,
):
    running = server.status(label_studio_server.layout)
    again = server.start(label_studio_server.layout)
    assert running is not None and running.pid == label_studio_server.info.pid
    assert again.already_running and again.pid == running.pid and again.url == running.url


def test_start_refuses_a_port_another_program_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Label Studio itself would move to the next free port; the URL would then be wrong."""
    monkeypatch.setenv(server.BIN_ENV_VAR, sys.executable)  # any executable: it must not run
    layout = StateLayout(tmp_path / "home").ensure()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(server.ServerError, match=f"127.0.0.1:{port}: the port is taken"):
            server.start(layout, host="127.0.0.1", port=port)
    assert not (layout.label_studio_server_file).exists()


def test_start_without_label_studio_installed_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(server.BIN_ENV_VAR, str(tmp_path / "missing" / "label-studio"))
    with pytest.raises(server.ServerError, match="make install-label-studio"):
        server.start(StateLayout(tmp_path / "home").ensure())


def test_a_stale_pid_file_is_cleared_without_signalling_anyone(tmp_path: Path):
    layout = StateLayout(tmp_path / "home").ensure()
    dead = subprocess.Popen(["sleep", "0"])
    dead.wait()
    pid_file = layout.label_studio_server_file
    pid_file.write_text(json.dumps({
        "url": "http://127.0.0.1:9", "pid": dead.pid, "data_dir": "", "log_path": "",
        "document_root": "",
    }))
    assert server.status(layout) is None
    assert server.stop(layout) is False
    assert not pid_file.exists()
