"""carsdepo on Celery workers for real: `deploy/celery/cluster.py up` (what `make cluster-up`
runs) starts PostgreSQL, Redis, the MLflow server, the Dagster webserver and daemon and one
worker per queue, once for the module. A backfill through the daemon runs its steps on the
`default` worker and stores what the embedded default stores; a tiny experiment sweep runs on
the `training` worker, whose pool process is SIGKILLed mid-step: the run fails, the daemon's
run retry completes it, and the sweep is stored once."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter

from carsdepo_assets.cli.runner import ingest_batch_through_dagster, local_instance
from carsdepo_assets.images.ingest import load_manifest
from carsdepo_assets.partitions import BATCHES_PARTITIONS_NAME
from carsdepo_assets.state import StateLayout
from carsdepo_assets_tests.fixtures.label_studio import free_port
from carsdepo_assets_tests.operations.conftest import land_batch
from deploy.celery import cluster as cluster_script

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
SCRIPT = Path(cluster_script.__file__)
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
WAIT_S = 300  # a ceiling, not a speed expectation
BATCHES = ["lot-a", "lot-b", "lot-c"]
TINY_SWEEP = {"min_sizes": [160], "augmentations": [0.3], "iterations": 2, "max_runs": 1}


@dataclass
class Cluster:
    script: object
    folder: Path
    settings: dict[str, str]
    home: StateLayout

    def instance(self) -> DagsterInstance:
        return DagsterInstance.from_config(self.settings["DAGSTER_HOME"])

    def pid(self, name: str) -> int:
        return self.script.Cluster(self.folder).pid_of(name)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    script = cluster_script
    for name, package in (("redis-server", "redis-server"), ("initdb", "postgresql")):
        try:
            script.binary(name, package)
        except script.ClusterError as missing:
            pytest.skip(str(missing))
    pytest.importorskip("dagster_celery", reason="dagster-celery comes with the dev extra")
    folder = tmp_path_factory.mktemp("cluster")
    ports = [f"--{key}-port={free_port()}" for key in ("pg", "redis", "mlflow", "dagster")]
    command = [sys.executable, str(SCRIPT)]
    try:
        up = subprocess.run([*command, "up", "--dir", str(folder), *ports], capture_output=True,
                            text=True, timeout=400)
        assert up.returncode == 0, f"cluster up failed:\n{up.stdout}{up.stderr}"
        settings = script.Cluster(folder).settings()
        script.stop_sensors(settings)  # the tests launch every run themselves
        with pytest.MonkeyPatch.context() as patch:
            for key, value in settings.items():  # the instance's PostgreSQL and storage
                patch.setenv(key, value)
            yield Cluster(script, folder, settings,
                          StateLayout(Path(settings["CARSDEPO_HOME"])).ensure())
    finally:
        down = subprocess.run([*command, "down", "--dir", str(folder)], capture_output=True,
                              text=True, timeout=300)
        print(down.stdout, down.stderr)


def wait_for_runs(cluster: Cluster, tags: dict[str, str], count: int) -> list:
    """The runs with ``tags`` once ``count`` of them have finished."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        with cluster.instance() as instance:
            runs = instance.get_runs(RunsFilter(tags=tags))
        if len(runs) >= count and all(run.status in FINISHED for run in runs):
            return runs
        time.sleep(1)
    logs = cluster.folder / "logs"
    pytest.fail(f"runs {[run.status for run in runs]} unfinished; daemon log:\n"
                f"{(logs / 'daemon.log').read_text()[-3000:]}")


def step_workers(instance: DagsterInstance, run_id: str) -> dict[str, str]:
    """Each step's Celery worker (``<queue>@<host>``), from the engine events of the run."""
    workers = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event and event.is_engine_event and "Celery worker" in (
                event.engine_event_data.metadata or {}):
            workers[event.step_key] = event.engine_event_data.metadata["Celery worker"].value
    return workers


def run_errors(instance: DagsterInstance, run_id: str) -> str:
    """The messages and errors of a run's events, as one text."""
    texts = []
    for record in instance.all_logs(run_id):
        texts.append(record.message or "")
        error = getattr(record.dagster_event and record.dagster_event.event_specific_data,
                        "error", None)
        if error is not None:
            texts.append(error.to_string())
    return "\n".join(texts)


def test_a_backfill_runs_on_the_default_worker_and_stores_what_the_embedded_default_stores(
    cluster, tmp_path
):
    for index, batch in enumerate(BATCHES):
        land_batch(cluster.home, batch, count=2, first_seed=10 * index)
    with cluster.instance() as instance:
        instance.add_dynamic_partitions(BATCHES_PARTITIONS_NAME, BATCHES)

    backfill = cluster.script.launch_backfill(cluster.settings, "ingest_job", BATCHES)
    runs = wait_for_runs(cluster, {"dagster/backfill": backfill}, len(BATCHES))

    assert [run.status for run in runs] == [DagsterRunStatus.SUCCESS] * len(BATCHES)
    with cluster.instance() as instance:
        for run in runs:
            workers = step_workers(instance, run.run_id)
            assert "raw_images" in workers  # the asset and its checks, each a Celery task
            assert {worker.split("@")[0] for worker in workers.values()} == {"default"}
    # the same photos through a carsdepo command on the embedded default (SQLite, in process,
    # although CARSDEPO_EXECUTOR=celery is set here: commands run their runs in process)
    embedded = StateLayout(tmp_path / "embedded").ensure()
    for batch in BATCHES:
        source = cluster.home.landing / batch
        copy = shutil.copytree(source, tmp_path / "photos" / batch)
        ingest_batch_through_dagster(copy, batch, embedded, local_instance(embedded))
        on_cluster, in_process = load_manifest(cluster.home, batch), load_manifest(embedded, batch)
        assert on_cluster.counts == in_process.counts and on_cluster.counts["stored"] == 2
        assert on_cluster.image_hashes() == in_process.image_hashes()
    assert sorted(path.name for path in cluster.home.images.rglob("*.*")) == sorted(
        path.name for path in embedded.images.rglob("*.*"))


def test_training_runs_on_the_training_worker_and_a_killed_worker_process_is_retried_once(
    cluster, tmp_path
):
    from dagster import AssetSpec, materialize
    from dagster_graphql import DagsterGraphQLClient
    from mlflow.tracking import MlflowClient

    from carsdepo_assets.assets.datasets import curated_dataset
    from carsdepo_assets.assets.experimentation import experiment_name
    from carsdepo_assets.images.ingest import ingest_batch
    from carsdepo_assets.labeling.coco_import import parse_coco
    from carsdepo_assets.labeling.history import write_snapshot
    from carsdepo_assets.labeling.simulated import AnnotatorProfile, simulated_snapshot
    from carsdepo_assets.resources.state import CarsdepoHome
    from carsdepo_assets.synth import generate_dataset

    synth = generate_dataset(tmp_path / "synth", n_images=16, seed=3, width=224, height=160)
    manifest = ingest_batch(synth.images_dir, "drifted", cluster.home)
    write_snapshot(simulated_snapshot(manifest, parse_coco(synth.annotations_path),
                                      AnnotatorProfile(seed=0)), cluster.home.annotations)
    with cluster.instance() as instance:
        instance.add_dynamic_partitions(BATCHES_PARTITIONS_NAME, ["drifted"])
        assert materialize([AssetSpec("annotations"), curated_dataset], instance=instance,
                           resources={"carsdepo_home": CarsdepoHome(path=str(cluster.home.root))},
                           ).success
    client = DagsterGraphQLClient("127.0.0.1",
                                  port_number=int(cluster.settings["CARSDEPO_DAGSTER_PORT"]))
    first = client.submit_job_execution(
        "experimentation_job", tags={"dagster/partition": "drifted"},
        run_config={"ops": {"experiment_sweep": {"config": TINY_SWEEP}}})

    killed = kill_training_pool_mid_step(cluster, first)

    [retry] = wait_for_runs(cluster, {"dagster/parent_run_id": first}, 1)
    assert killed and retry.status == DagsterRunStatus.SUCCESS
    with cluster.instance() as instance:
        assert instance.get_run_by_id(first).status == DagsterRunStatus.FAILURE
        assert "WorkerLostError" in run_errors(instance, first)  # Celery saw the process die
        assert step_workers(instance, first)["experiment_sweep"].startswith("training@")
        assert step_workers(instance, retry.run_id)["experiment_sweep"].startswith("training@")
        sweeps = instance.fetch_materializations(AssetKey("experiment_sweep"), limit=10).records
        assert [record.run_id for record in sweeps] == [retry.run_id]  # stored once, by the retry
    experiment = MlflowClient().get_experiment_by_name(experiment_name("drifted"))
    finished = MlflowClient().search_runs([experiment.experiment_id],
                                          "attributes.status = 'FINISHED'")
    assert [run.data.tags["dagster_run_id"] for run in finished] == [retry.run_id]
    # the killed attempt's MLflow run, if it had started one, was ended by the retry
    assert not MlflowClient().search_runs([experiment.experiment_id],
                                          "attributes.status = 'RUNNING'")


def kill_training_pool_mid_step(cluster: Cluster, run_id: str) -> list[int]:
    """SIGKILL the training worker's pool processes once the sweep's step has started in one of
    them (the process that runs the step); the pids killed."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        with cluster.instance() as instance:
            started = any(record.dagster_event and record.dagster_event.is_step_start
                          for record in instance.all_logs(run_id))
        if started:
            worker = psutil.Process(cluster.pid("worker-training"))
            # dagster-celery -> the celery main process -> its forked pool processes
            pool = [child for child in worker.children(recursive=True)
                    if child.ppid() != worker.pid]
            for process in pool:
                os.kill(process.pid, signal.SIGKILL)
            return [process.pid for process in pool]
        time.sleep(0.2)
    pytest.fail("the sweep's step never started on the training worker")
