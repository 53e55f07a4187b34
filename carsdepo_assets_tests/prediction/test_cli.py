"""``carsdepo predict`` and ``carsdepo rollback`` against a real registry (the CLI's own entry
point, in-process: loading the model dominates, a subprocess would only add start-up time)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from carsdepo_assets.cli import main
from carsdepo_assets.detection.champion import CHAMPION, alias_version, promote
from carsdepo_assets.prediction.inference_log import CLI, InferenceLog
from carsdepo_assets.prediction.models import ModelRef
from carsdepo_assets.state import StateLayout
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


def test_predict_without_a_champion_says_so_and_exits_2(
    empty_registry: StateLayout, photos: dict[str, Path], capsys
) -> None:
    code = main(["predict", str(photos["good"]), "--json"])

    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("carsdepo predict: model 'carsdepo-damage-detector' has no champion "
                          "yet: train one first")


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


def test_serve_without_a_champion_says_so_instead_of_starting_a_server(
    empty_registry: StateLayout, capsys
) -> None:
    code = main(["serve", "--port", "5999"])

    assert code == 2
    assert "carsdepo serve: model 'carsdepo-damage-detector' has no champion yet" in (
        capsys.readouterr().err)
