"""Champion/challenger rules against a real MLflow registry (SQLite) in a temporary home."""

from __future__ import annotations

import math
import shutil
import socket
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from carsdepo_assets.detection.champion import (
    CHALLENGER,
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    PREVIOUS_CHAMPION_TAG,
    PROMOTED_AT_TAG,
    ROLLED_BACK_AT_TAG,
    MlflowUnreachableError,
    RegistryError,
    alias_version,
    check_reachable,
    configure_mlflow,
    current_champion,
    gate,
    mlflow_tracking_uri,
    promote,
    register_challenger,
    rollback,
)
from carsdepo_assets.state import StateLayout

MODEL = "damage-detector"


@pytest.fixture(scope="module")
def empty_database(tmp_path_factory) -> Path:
    """An MLflow SQLite database with its tables created: copying it is much faster than
    letting MLflow run its schema migrations again for every test."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_store(carsdepo_home: StateLayout, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                 empty_database: Path):
    """MLflow pointed at the temporary home; the working directory is a scratch folder so that
    anything MLflow would wrongly drop into ``./mlruns`` is seen."""
    shutil.copyfile(empty_database, carsdepo_home.mlflow / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # restored after the test: MLflow rewrites it
    uri = configure_mlflow(carsdepo_home, "registry-tests")
    yield uri
    mlflow.set_tracking_uri(None)


def register_version(tmp_path: Path, tag: str) -> str:
    """Register a real (minimal) local model folder as a new challenger version."""
    folder = tmp_path / f"model-{tag}"
    folder.mkdir()
    (folder / "MLmodel").write_text("flavors: {}\n")
    return register_challenger(str(folder), MODEL, tags={"trained_on": tag})


GOOD = {"AP50": 0.92, "none_accuracy": 0.97, "AP": 0.60}


@pytest.mark.parametrize(
    ("challenger", "champion", "passed", "reason"),
    [
        (GOOD, None, True, "no champion to compare with"),
        ({**GOOD, "AP50": 0.85}, None, False, "AP50 0.8500 is below the minimum 0.9000"),
        ({"none_accuracy": 0.97}, None, False, "AP50 is missing"),
        ({**GOOD, "AP50": math.nan}, None, False, "AP50 is missing"),
        (GOOD, {**GOOD, "AP50": 0.94}, True, "AP50 0.9200 vs champion 0.9400: within"),
        (GOOD, {**GOOD, "AP50": 0.96}, False, "falls below the champion's 0.9600 by 0.0400"),
        (GOOD, {**GOOD, "none_accuracy": 0.99}, True, "none_accuracy 0.9700 vs champion 0.9900"),
        (GOOD, {"AP50": 0.5}, True, "none_accuracy: the champion has no value, not compared"),
        (GOOD, {**GOOD, "AP": 0.99}, True, "AP50 0.9200 vs champion"),  # AP is not a key metric
    ],
)
def test_gate_decides_by_minimums_and_tolerance_to_champion(challenger, champion, passed, reason):
    decision = gate(challenger, champion, minimums={"AP50": 0.90, "none_accuracy": 0.95},
                    tolerance=0.03)

    assert decision.passed is passed
    assert any(reason in sentence for sentence in decision.reasons), decision.reasons


def test_gate_compares_the_key_metrics_it_is_given():
    decision = gate(GOOD, {**GOOD, "AP": 0.99}, minimums={}, tolerance=0.03, key_metrics=["AP"])

    assert not decision.passed
    assert decision.reasons == (
        "AP 0.6000 falls below the champion's 0.9900 by 0.3900, more than the tolerance 0.03",)


def test_store_defaults_to_sqlite_under_home_with_artifacts_beside_it(mlflow_store, carsdepo_home,
                                                                      tmp_path):
    assert mlflow_store == f"sqlite:///{carsdepo_home.mlflow / 'mlflow.db'}"
    with mlflow.start_run():
        mlflow.log_text("hello", "note.txt")
    assert list((carsdepo_home.mlflow / "artifacts").rglob("note.txt"))
    assert not (tmp_path / "mlruns").exists()


def test_experiments_open_in_mlflows_model_training_view_made_here_or_before(mlflow_store,
                                                                             carsdepo_home):
    MlflowClient().create_experiment("made-before-the-tag")
    configure_mlflow(carsdepo_home, "made-before-the-tag")

    for name in ("registry-tests", "made-before-the-tag"):
        assert mlflow.get_experiment_by_name(name).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND


def test_tracking_uri_from_environment_overrides_the_local_store(carsdepo_home, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")

    assert mlflow_tracking_uri(carsdepo_home) == "http://mlflow.internal:5000"


def test_register_challenger_adds_a_version_with_alias_and_tags(mlflow_store, tmp_path):
    first = register_version(tmp_path, "a")
    second = register_version(tmp_path, "b")

    assert (first, second) == ("1", "2")
    assert alias_version(MODEL, CHALLENGER) == "2"
    assert MlflowClient().get_model_version(MODEL, second).tags["trained_on"] == "b"
    assert current_champion(MODEL) is None
    assert current_champion("no-such-model") is None


def test_promotion_sets_champion_and_records_the_previous_one(mlflow_store, tmp_path):
    first, second = register_version(tmp_path, "a"), register_version(tmp_path, "b")

    assert promote(MODEL, first).previous_champion is None
    promotion = promote(MODEL, second)

    assert promotion.previous_champion == first
    assert current_champion(MODEL) == second
    tags = MlflowClient().get_model_version(MODEL, second).tags
    assert tags[PREVIOUS_CHAMPION_TAG] == first
    assert PROMOTED_AT_TAG in tags
    assert promote(MODEL, second) == promotion  # promoting the champion again changes nothing


def test_rollback_restores_previous_champions_one_by_one(mlflow_store, tmp_path):
    versions = [register_version(tmp_path, tag) for tag in "abc"]
    for version in versions:
        promote(MODEL, version)

    assert rollback(MODEL) == versions[1]
    assert current_champion(MODEL) == versions[1]
    assert ROLLED_BACK_AT_TAG in MlflowClient().get_model_version(MODEL, versions[2]).tags
    assert rollback(MODEL) == versions[0]
    with pytest.raises(RegistryError, match="champion version 1 did not replace an earlier"):
        rollback(MODEL)
    assert current_champion(MODEL) == versions[0]


def test_rollback_without_a_champion_is_a_clear_error(mlflow_store, tmp_path):
    register_version(tmp_path, "a")

    with pytest.raises(RegistryError, match=f"model '{MODEL}' has no champion"):
        rollback(MODEL)


def test_promoting_an_unknown_version_is_a_clear_error(mlflow_store, tmp_path):
    register_version(tmp_path, "a")

    with pytest.raises(RegistryError, match=f"cannot promote '{MODEL}' version 7"):
        promote(MODEL, "7")


def test_unreachable_tracking_server_fails_fast_naming_the_uri(carsdepo_home, monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

    with pytest.raises(MlflowUnreachableError, match=f"MLflow tracking server {uri} is unreach"):
        configure_mlflow(carsdepo_home, "never-created")
    check_reachable(f"sqlite:///{carsdepo_home.mlflow / 'mlflow.db'}")  # local: nothing to check
