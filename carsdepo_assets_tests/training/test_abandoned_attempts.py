"""A retried run ends the MLflow runs its killed earlier attempts left RUNNING.

The cluster test kills a real worker mid-step; this one checks the bookkeeping on a real MLflow
store, with the run an attempt's dead process leaves behind (started, never ended)."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from carsdepo_assets.resources.state import CarsdepoHome


def test_a_retry_ends_the_mlflow_runs_its_dead_earlier_attempts_left_running(tmp_path):
    home = CarsdepoHome(path=str(tmp_path))
    home.connect_mlflow("retried-experiment")
    client = MlflowClient()
    experiment = client.get_experiment_by_name("retried-experiment").experiment_id
    abandoned = client.create_run(experiment, tags={"dagster_run_id": "first-attempt"})
    other_run = client.create_run(experiment, tags={"dagster_run_id": "someone-else"})
    finished = client.create_run(experiment, tags={"dagster_run_id": "first-attempt"})
    client.set_terminated(finished.info.run_id, status="FINISHED")

    retry_tags = {"dagster/parent_run_id": "first-attempt", "dagster/root_run_id": "first-attempt"}
    ended = home.end_earlier_attempts(retry_tags, "retried-experiment")

    status = {run_id: client.get_run(run_id).info.status for run_id in
              (abandoned.info.run_id, other_run.info.run_id, finished.info.run_id)}
    assert ended == [abandoned.info.run_id]
    assert status == {abandoned.info.run_id: "KILLED", other_run.info.run_id: "RUNNING",
                      finished.info.run_id: "FINISHED"}
    assert home.end_earlier_attempts({}, "retried-experiment") == []  # a first attempt: nothing
