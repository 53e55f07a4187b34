"""The console shows carsdepo's messages, not other packages' warnings: real commands in a
subprocess, as a user runs them, print no "Warning" on stderr (dagster-mlflow's BetaWarning and
Dagster's PreviewWarning used to come with every command that loads the code location), while
carsdepo's own warnings, and every warning a developer asks for with ``-W``, still show."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from carsdepo_assets.synth import generate_dataset

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# importing dagster_mlflow raises its BetaWarning (a module-level beta hook)
IMPORT_THAT_WARNS = "import dagster_mlflow"


def run(*argv: str, home: Path, python_options: tuple[str, ...] = ()
        ) -> subprocess.CompletedProcess:
    environment = {**os.environ, "CARSDEPO_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    environment.pop("PYTHONWARNINGS", None)
    return subprocess.run([sys.executable, *python_options, *argv], cwd=PROJECT_ROOT,
                          env=environment, capture_output=True, text=True, timeout=300)


def carsdepo(*arguments: str, home: Path) -> subprocess.CompletedProcess:
    return run("-m", "carsdepo_assets.cli", *arguments, home=home)


def test_help_init_and_argument_errors_print_no_warning(tmp_path: Path):
    home = tmp_path / "home"

    help_text = carsdepo("--help", home=home)
    init = carsdepo("init", home=home)
    wrong_option = carsdepo("train", "--preset", "fastest", home=home)
    missing_folder = carsdepo("ingest", str(tmp_path / "nowhere"), home=home)

    assert (help_text.returncode, init.returncode) == (0, 0), help_text.stderr + init.stderr
    assert wrong_option.returncode == 2 and "invalid choice: 'fastest'" in wrong_option.stderr
    assert missing_folder.returncode == 1 and "does not exist" in missing_folder.stderr
    for process in (help_text, init, wrong_option, missing_folder):
        assert "Warning" not in process.stderr, process.stderr


@pytest.mark.slow
def test_a_command_that_loads_the_code_location_prints_no_warning(tmp_path: Path):
    photos = generate_dataset(tmp_path / "lot", n_images=1, seed=0, width=192, height=160)

    ingest = carsdepo("ingest", str(photos.images_dir), "--batch", "lot", home=tmp_path / "home")

    assert ingest.returncode == 0, ingest.stderr
    assert "1 stored" in ingest.stdout
    assert "Warning" not in ingest.stderr, ingest.stderr


def quiet_then(code: str) -> str:
    return f"from carsdepo_assets.cli.console import quiet_third_parties\n" \
           f"quiet_third_parties()\n{code}"


@pytest.mark.slow
def test_third_party_warnings_are_hidden_and_carsdepo_s_own_and_asked_for_ones_are_not(
    tmp_path: Path
):
    own = ("import warnings\nwarnings.warn_explicit('a warning of ours', UserWarning, "
           "'carsdepo_assets/x.py', 1, module='carsdepo_assets.x')")

    quieted = run("-c", quiet_then(f"{IMPORT_THAT_WARNS}\n{own}"), home=tmp_path)
    asked_for = run("-c", quiet_then(IMPORT_THAT_WARNS), home=tmp_path,
                    python_options=("-W", "default"))

    assert "BetaWarning" in asked_for.stderr  # the import does warn: the check can fail
    assert "BetaWarning" not in quieted.stderr
    assert "UserWarning: a warning of ours" in quieted.stderr
