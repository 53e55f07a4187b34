"""The import contracts in pyproject.toml (``lint-imports``, run by ``make lint`` and
``make test``): the package keeps them, and an import that breaks a layer fails with a message
naming that import. The broken cases run the real tool on a copy of the package."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from carsdepo_assets.state import PROJECT_ROOT

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(project: Path) -> subprocess.CompletedProcess[str]:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: import-linter comes with the dev extra")
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=project, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(project), "COLUMNS": "200",
                                                       "PATH": str(LINT_IMPORTS.parent)})


def project_copy(tmp_path: Path) -> Path:
    """The package and its contracts, copied (sources only) so that a test may break them."""
    shutil.copytree(PROJECT_ROOT / "carsdepo_assets", tmp_path / "carsdepo_assets",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def add_import(project: Path, module: str, statement: str) -> None:
    path = project / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + f"\n{statement}\n")


def test_the_package_keeps_every_import_contract(tmp_path: Path) -> None:
    done = lint_imports(project_copy(tmp_path))

    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_detection_importing_prediction_breaks_the_layers_naming_the_import(
    tmp_path: Path,
) -> None:
    project = project_copy(tmp_path)
    add_import(project, "carsdepo_assets.detection.types",
               "import carsdepo_assets.prediction.inference_log  # noqa")

    done = lint_imports(project)

    assert done.returncode != 0
    assert "Layers: the CLI on top" in done.stdout and "BROKEN" in done.stdout
    assert ("carsdepo_assets.detection.types -> carsdepo_assets.prediction.inference_log"
            in done.stdout)


def test_a_domain_module_importing_dagster_breaks_its_contract_naming_the_import(
    tmp_path: Path,
) -> None:
    project = project_copy(tmp_path)
    add_import(project, "carsdepo_assets.monitoring.drift", "import dagster  # noqa")

    done = lint_imports(project)

    assert done.returncode != 0
    assert "never import Dagster BROKEN" in done.stdout
    assert "carsdepo_assets.monitoring.drift -> dagster" in done.stdout
