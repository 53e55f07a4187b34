"""The "your own photos" tutorial (docs/your-own-photos.md) cannot rot: its ```bash blocks run
in order, as written, in one shell (a real Label Studio, real Dagster runs, a real MLflow
store, the page's own trial settings), and every other command it shows, in a block marked
"checked, not run" or inline, names a real command and options it accepts."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from carsdepo_assets.cli import main
from carsdepo_assets.cli.parser import build_parser
from carsdepo_assets.labeling import server
from carsdepo_assets.state import StateLayout
from carsdepo_assets_tests.fixtures.label_studio import free_port, migrated_data_dir

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PAGE = PROJECT_ROOT / "docs" / "your-own-photos.md"
NOT_RUN = "<!-- checked, not run"
FENCE = re.compile(r"(?P<marker><!-- checked, not run[^>]*-->\n)?```bash\n(?P<code>.*?)```",
                   re.DOTALL)
INLINE = re.compile(r"`((?:carsdepo|make) [^`]+)`")
STATE_FOLDER = re.compile(r"export CARSDEPO_HOME=\$PWD/(\S+)")


@dataclass(frozen=True)
class Block:
    code: str
    run: bool


def page_blocks() -> list[Block]:
    return [Block(match["code"], not match["marker"])
            for match in FENCE.finditer(PAGE.read_text())]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    (choices,) = [action.choices for action in build_parser()._actions
                  if isinstance(action, argparse._SubParsersAction)]
    return choices


def problems_of(command: str, makefile: str) -> list[str]:
    """What is wrong with one command the page shows ([] when nothing): an unknown make target,
    an unknown carsdepo command, or an option that command does not accept."""
    words = shlex.split(command)
    if words[0] == "make":
        return [] if re.search(rf"^{re.escape(words[1])}:", makefile, re.MULTILINE) else [
            f"{command}: no make target {words[1]}"]
    parser = subcommands().get(words[1])
    if parser is None:
        return [f"{command}: no carsdepo command {words[1]}"]
    return [f"{command}: {words[1]} has no option {word.split('=')[0]}"
            for word in words[2:] if word.startswith("--")
            and word.split("=")[0] not in parser._option_string_actions]


def test_every_command_the_page_shows_but_does_not_run_exists_with_its_options():
    text = PAGE.read_text()
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    shown = [command for command in INLINE.findall(text)]
    for block in page_blocks():
        if not block.run:
            lines = [line for line in block.code.splitlines() if line.strip()]
            shown += lines
            for line in lines:  # a whole command: it parses as it stands
                build_parser().parse_args(shlex.split(line)[1:])
    assert "carsdepo serve --port 5001" in shown and "make dev" in shown
    assert [problem for command in shown for problem in problems_of(command, makefile)] == []


def test_the_check_itself_finds_an_unknown_option_command_and_make_target():
    makefile = "dev: install\n"
    assert problems_of("carsdepo train --iterations 3", makefile) == [
        "carsdepo train --iterations 3: train has no option --iterations"]
    assert problems_of("carsdepo fly", makefile) == ["carsdepo fly: no carsdepo command fly"]
    assert problems_of("make deploy", makefile) == ["make deploy: no make target deploy"]
    assert problems_of("make dev", makefile) == []


@pytest.mark.parametrize("command", ["tasks", "monitor"])
def test_a_batch_command_on_a_batch_never_ingested_says_to_ingest_it_first(
    carsdepo_home: StateLayout, command: str, capsys
):
    assert main([command, "lot-99"]) == 1
    assert f"carsdepo {command}: batch 'lot-99' is not ingested" in capsys.readouterr().err
    assert main([command, "../lot"]) == 1
    assert "invalid batch name '../lot'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.label_studio
def test_the_tutorial_runs_as_written_from_a_folder_of_photos_to_answers(
    tmp_path: Path, pytestconfig: pytest.Config
):
    blocks = page_blocks()
    (state_folder,) = STATE_FOLDER.findall(blocks[0].code)
    home = tmp_path / state_folder
    # Label Studio's database, migrated once per install (migrations take minutes)
    template = migrated_data_dir(pytestconfig.cache.mkdir("label-studio"),
                                 server.label_studio_bin())
    shutil.copytree(template, home / "label-studio" / server.DATA_FOLDER)
    script = "set -euo pipefail\n" + "".join(
        f"echo '::: block {number}' >&2\n{block.code}"
        for number, block in enumerate(blocks) if block.run)
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("CARSDEPO_", "DAGSTER_", "LABEL_STUDIO_", "MLFLOW_"))}
    environment.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                       LABEL_STUDIO_URL=f"http://127.0.0.1:{free_port()}")
    try:
        tutorial = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=environment,
                                  capture_output=True, text=True, timeout=1200)
    finally:
        subprocess.run([sys.executable, "-m", "carsdepo_assets.cli", "labelstudio", "stop"],
                       env={**environment, "CARSDEPO_HOME": str(home)}, capture_output=True,
                       timeout=120)
    console = tutorial.stdout + tutorial.stderr
    # what a failure shows: the commands' own lines (Dagster's step log is in the runs)
    said = "\n".join(line for line in tutorial.stderr.splitlines() if " - dagster - " not in line)

    assert tutorial.returncode == 0, f"{tutorial.stdout}\n{said[-6000:]}"
    assert "log in as admin@carsdepo.local / carsdepo-local-password" in console  # as the page
    assert "batch lot-12: 24 files" in console and "24 tasks created" in console
    assert re.search(r"annotation_sensor tick \d+: dataset_job run \S+ succeeded", console)
    assert "test split (" in console and "(lower bound " in console
    assert "carsdepo-damage-detector v1 is the champion" in console
    assert re.search(r"panel_00000\.jpg: ", tutorial.stdout)
    assert re.search(r"batch lot-13: (deviation [\d.]+%|no deviation measured) -> \w+", console)
    assert re.search(r"\d+ pre-annotations of carsdepo-damage-detector v1", console)
    assert "carsdepo-damage-detector v2 is the champion, replacing v1" in console
    assert "version 1 is the champion again (replacing version 2)" in console
    assert "Warning" not in console and "WARNING" not in console, console
    assert "Traceback" not in console
