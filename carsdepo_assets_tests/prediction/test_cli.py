"""``carsdepo predict`` and ``carsdepo rollback`` against a real registry (the CLI's own entry
point, in-process: loading the model dominates, a subprocess would only add start-up time)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from carsdepo_assets.cli import main
from carsdepo_assets.detection.champion import CHAMPION, alias_version, configure_mlflow, promote
from carsdepo_assets.prediction.inference_log import CLI, InferenceLog
from carsdepo_assets.prediction.models import ModelRef
from carsdepo_assets.resources.mlflow import DEFAULT_MODEL_NAME
from carsdepo_assets.state import ENV_VAR, StateLayout
from carsdepo_assets.taxonomy import NONE_ANSWER
from carsdepo_assets_tests.prediction.conftest import well_formed


@pytest.fixture
def photos(panels: Path, tmp_path: Path) -> dict[str, Path]:
    """A real panel photo and a file that is not an image at all."""
    text = tmp_path / "notes.jpg"
    text.write_text("a text file named like a photo")
    return {"good": sorted((panels / "images").glob("*.jpg"))[0], "bad": text}


@pytest.mark.slow
def test_predict_json_answers_each_image_and_exits_1_when_one_is_unreadable(
    carsdepo_home: StateLayout, champion: ModelRef, photos: dict[str, Path], capsys
) -> None:
    code = main(["predict", str(photos["good"]), str(photos["bad"]), "--json",
                 "--threshold", "0"])

    out, err = capsys.readouterr()
    good, bad = (json.loads(line) for line in out.splitlines())
    assert code == 1
    assert good["image"] == str(photos["good"]) and well_formed(good["damage"])
    assert bad["image"] == str(photos["bad"]) and bad["error"].startswith("not an image")
    assert "1 of 2 images could not be answered" in err
    logged = list(InferenceLog(carsdepo_home.inference_log).read())
    assert [(r.source, r.image, r.model_version) for r in logged] == [
        (CLI, str(photos["good"]), "1"), (CLI, str(photos["bad"]), "1")]
    assert logged[0].image_sha256 == hashlib.sha256(photos["good"].read_bytes()).hexdigest()
    assert logged[0].result == good["damage"] and logged[1].error == bad["error"]


@pytest.mark.slow
def test_predict_answers_good_photos_beside_a_fifo_and_a_dev_zero_link(
    carsdepo_home: StateLayout, champion: ModelRef, photos: dict[str, Path], tmp_path: Path,
    capsys
) -> None:
    """Real special files; the alarm bounds the test should a read block or never end."""
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    signal.alarm(120)
    try:
        code = main(["predict", str(tmp_path / "pipe.jpg"), str(tmp_path / "zero.jpg"),
                     str(photos["good"]), "--json", "--threshold", "1"])
    finally:
        signal.alarm(0)

    pipe, zero, good = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert code == 1
    assert pipe["error"].endswith("named pipe (FIFO), not read")
    assert zero["error"].endswith("symbolic link: not followed (it points to /dev/zero)")
    assert good["damage"] == NONE_ANSWER
    logged = list(InferenceLog(carsdepo_home.inference_log).read())
    assert [r.image_sha256 is None for r in logged] == [True, True, False]
    assert {r.threshold for r in logged} == {1.0}


@pytest.mark.slow
def test_predict_by_version_prints_a_readable_none_and_exits_0(
    carsdepo_home: StateLayout, champion: ModelRef, photos: dict[str, Path], capsys
) -> None:
    code = main(["predict", str(photos["good"]), "--model", "1", "--threshold", "1"])

    assert code == 0
    assert capsys.readouterr().out == f"{photos['good']}: {NONE_ANSWER}\n"


def test_predict_with_an_empty_registry_says_there_is_no_such_model_and_exits_2(
    empty_registry: StateLayout, photos: dict[str, Path], capsys
) -> None:
    code = main(["predict", str(photos["good"]), "--json"])

    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("carsdepo predict: no registered model 'carsdepo-damage-detector': "
                          "the registry is empty: train one first")


def test_predict_for_a_model_without_a_champion_says_so_and_exits_2(
    empty_registry: StateLayout, photos: dict[str, Path], capsys
) -> None:
    configure_mlflow(empty_registry)
    MlflowClient().create_registered_model(DEFAULT_MODEL_NAME)

    code = main(["predict", str(photos["good"]), "--json"])

    assert code == 2
    assert capsys.readouterr().err.startswith(
        f"carsdepo predict: model '{DEFAULT_MODEL_NAME}' has no champion yet: train one first")


def test_predict_names_a_model_the_registry_does_not_know_as_such(
    carsdepo_home: StateLayout, champion: ModelRef, photos: dict[str, Path], capsys
) -> None:
    code = main(["predict", str(photos["good"]), "--model-name", "foo"])

    assert code == 2
    assert capsys.readouterr().err == (
        "carsdepo predict: no registered model 'foo': the registry has "
        f"'{DEFAULT_MODEL_NAME}' (--model-name)\n")


def test_predict_names_missing_and_unreadable_files_before_any_model_is_looked_up(
    empty_registry: StateLayout, tmp_path: Path, capsys
) -> None:
    """No registry lookup, no model load: the registry here has no model at all, and the
    command still answers (exit 1, not 2) for the files alone, in a fresh process that never
    imports torch or MLflow."""
    empty = tmp_path / "empty.jpg"
    empty.touch()
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    names = [str(tmp_path / "missing.jpg"), str(empty), str(folder)]
    probe = ("import json, sys\n"
             "from carsdepo_assets.cli import main\n"
             f"code = main(['predict', *{names!r}, '--json'])\n"
             "heavy = [m for m in ('torch', 'mlflow', 'pandas') if m in sys.modules]\n"
             "print(json.dumps({'code': code, 'heavy': heavy}))\n")

    finished = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                              timeout=120, env={**os.environ, ENV_VAR: str(empty_registry.root)})

    *answers, summary = (json.loads(line) for line in finished.stdout.splitlines())
    assert summary == {"code": 1, "heavy": []}, finished.stderr
    assert answers == [
        {"image": names[0], "error": f"cannot read {names[0]}: No such file or directory"},
        {"image": names[1], "error": "zero bytes: the file is empty"},
        {"image": names[2], "error": f"{names[2]}: not a regular file: folder, not read"},
    ]
    assert "3 of 3 images could not be answered" in finished.stderr
    assert list(InferenceLog(empty_registry.inference_log).read()) == []


@pytest.mark.slow
def test_predict_json_names_the_model_version_and_threshold_that_answered(
    carsdepo_home: StateLayout, champion: ModelRef, photos: dict[str, Path], capsys
) -> None:
    assert main(["predict", str(photos["good"]), "--json"]) == 0
    [answer] = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    [logged] = InferenceLog(carsdepo_home.inference_log).read()

    assert (answer["model"], answer["model_version"]) == (DEFAULT_MODEL_NAME, "1")
    assert answer["threshold"] == logged.threshold
    assert 0.0 <= answer["threshold"] <= 1.0
    day = InferenceLog(carsdepo_home.inference_log).files()[0]
    assert stat.S_IMODE(day.stat().st_mode) == 0o600


@pytest.mark.slow
def test_rollback_restores_the_replaced_champion_then_refuses_to_go_further(
    carsdepo_home: StateLayout, champion: ModelRef, capsys
) -> None:
    source = MlflowClient().get_model_version(champion.name, champion.version).source
    second = mlflow.register_model(source, champion.name).version
    promote(champion.name, str(second))

    first_code = main(["rollback"])
    first_out = capsys.readouterr().out
    second_code = main(["rollback"])

    assert first_code == 0 and alias_version(champion.name, CHAMPION) == champion.version
    assert first_out == (f"{champion.name}: version {champion.version} is the champion again "
                         f"(replacing version {second})\n")
    assert second_code == 1
    assert "did not replace an earlier champion" in capsys.readouterr().err


def test_serve_without_a_model_says_so_instead_of_starting_a_server(
    empty_registry: StateLayout, capsys
) -> None:
    code = main(["serve", "--port", "5999"])

    assert code == 2
    assert "carsdepo serve: no registered model 'carsdepo-damage-detector'" in (
        capsys.readouterr().err)


def test_serve_refuses_an_allowed_path_folder_that_does_not_exist(
    empty_registry: StateLayout, tmp_path: Path, capsys
) -> None:
    code = main(["serve", "--allow-paths-under", str(tmp_path / "nowhere")])

    assert code == 2
    assert capsys.readouterr().err == (
        f"carsdepo serve: --allow-paths-under {tmp_path / 'nowhere'}: not a folder\n")
