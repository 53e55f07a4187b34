"""How `carsdepo app` starts the page: the command line, the web server's argv and
environment, and the settings the page reads back from it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from carsdepo_assets.app.launch import PAGE_SCRIPT, AppSettings, app_command
from carsdepo_assets.app.limits import PhotoLimits
from carsdepo_assets.cli import app as app_family
from carsdepo_assets.images.validate import ImagePolicy
from carsdepo_assets.prediction.inference_log import MODEL_NAME_ENV
from carsdepo_assets.state import ENV_VAR, StateLayout


def family_parser() -> argparse.ArgumentParser:
    """A parser holding only the ``app`` family, registered as ``cli.parser`` registers it."""
    parser = argparse.ArgumentParser(prog="carsdepo")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name, handler, help_text):
        sub = commands.add_parser(name, help=help_text)
        sub.set_defaults(handler=handler)
        return sub

    app_family.register(command)
    return parser


def test_the_page_listens_on_this_machine_by_default():
    args = family_parser().parse_args(["app"])
    assert (args.host, args.port, args.model_name) == ("127.0.0.1", 8501, None)
    assert args.handler is app_family.cmd_app
    args = family_parser().parse_args(["app", "--port", "18501", "--host", "0.0.0.0"])
    assert (args.host, args.port) == ("0.0.0.0", 18501)


def test_the_command_is_registered_in_carsdepo(capsys):
    from carsdepo_assets.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["app", "--help"])
    assert exited.value.code == 0
    assert "--port" in capsys.readouterr().out


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_streamlit_runs_the_page_headless_without_usage_statistics(tmp_path):
    layout = StateLayout(tmp_path / "home")
    limits = PhotoLimits(ImagePolicy(max_file_bytes=3 * 2**20 + 1))
    argv, env = app_command(layout, "my-model", "sqlite:///x.db", Path("/venv/bin"),
                            port=18502, limits=limits, environ={"PATH": "/usr/bin"})

    assert argv[:3] == ["/venv/bin/streamlit", "run", str(PAGE_SCRIPT)]
    assert PAGE_SCRIPT.is_file()
    assert option(argv, "--server.address") == "127.0.0.1"
    assert option(argv, "--server.port") == "18502"
    assert option(argv, "--server.headless") == "true"
    assert option(argv, "--browser.gatherUsageStats") == "false"
    assert option(argv, "--server.maxUploadSize") == "4"  # MiB, rounded up
    assert env[ENV_VAR] == str(layout.root.resolve())
    assert env[MODEL_NAME_ENV] == "my-model"
    assert env["MLFLOW_TRACKING_URI"] == "sqlite:///x.db"
    assert env["PATH"] == "/venv/bin:/usr/bin"
    assert env["MALLOC_ARENA_MAX"] == "1"


def test_the_page_reads_its_settings_back_and_names_what_is_missing(tmp_path):
    _, env = app_command(StateLayout(tmp_path), "my-model", "sqlite:///x.db", Path("/bin"),
                         environ={})
    settings = AppSettings.from_env(env)
    assert settings == AppSettings(StateLayout(tmp_path.resolve()), "my-model")

    with pytest.raises(ValueError, match=f"{ENV_VAR} and {MODEL_NAME_ENV} not set: start the "
                                         "page with `carsdepo app`"):
        AppSettings.from_env({})
