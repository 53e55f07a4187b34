"""Wall time of a backfill of N batches (ingest_job) on Celery workers beside the embedded default.

    python -m benchmarks.bench_cluster [--batches 8] [--photos 20] [--slots 1 2]

Three figures per invocation: the embedded default (SQLite, `dagster-daemon`, each run's steps in
its own process, at most two runs at once: the repo's dagster.yaml) and the Celery cluster of
deploy/celery (PostgreSQL, Redis, the daemon) whose `default` worker runs one step at a time,
then two (`--concurrency default=N`). Each starts from an empty state folder; the time runs from
the backfill's creation to the end of its last run, so starting the services is not counted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._record import record
from benchmarks.bench_demo import free_port
from benchmarks.bench_ingest import make_batch
from deploy.celery import cluster as cluster_script

SUITE = "cluster"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(cluster_script.__file__)
BIN = Path(sys.executable).parent
WAIT_S = 1800


def land(home: Path, batches: list[str], photos: int) -> None:
    for batch in batches:
        folder = home / "landing" / batch
        folder.mkdir(parents=True)
        make_batch(folder, photos, (640, 480))


def backfill_seconds(env: dict[str, str], batches: list[str]) -> float:
    """From the backfill's creation to the end of its last run, once all have finished (in a
    subprocess with ``env``: the instance reads its settings from the environment)."""
    code = f"""
import sys, time
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
done = {{DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}}
deadline = time.monotonic() + {WAIT_S}
while time.monotonic() < deadline:
    with DagsterInstance.get() as instance:
        [backfill] = instance.get_backfills()
        runs = instance.get_runs(RunsFilter(tags={{"dagster/backfill": backfill.backfill_id}}))
        if len(runs) == {len(batches)} and all(run.status in done for run in runs):
            failed = [run.run_id for run in runs if run.status != DagsterRunStatus.SUCCESS]
            if failed:
                sys.exit(f"runs failed: {{failed}}")
            ends = [instance.get_run_stats(run.run_id).end_time for run in runs]
            print(max(ends) - backfill.backfill_timestamp)
            break
    print(f"  {{sum(run.status in done for run in runs)}}/{len(batches)} runs finished",
          file=sys.stderr, flush=True)
    time.sleep(2)
else:
    sys.exit("backfill unfinished after {WAIT_S} s")
"""
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=PROJECT_ROOT, text=True,
                          stdout=subprocess.PIPE, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def add_partitions(env: dict[str, str], batches: list[str]) -> None:
    code = ("from dagster import DagsterInstance\n"
            "with DagsterInstance.get() as instance:\n"
            f"    instance.add_dynamic_partitions('batches', {batches!r})\n")
    subprocess.run([sys.executable, "-c", code], env=env, cwd=PROJECT_ROOT, check=True)


def embedded(work: Path, batches: list[str], photos: int) -> float:
    """The backfill on the repo's dagster.yaml: the daemon, then `dagster job backfill`."""
    home = work / "embedded"
    env = {**os.environ, "CARSDEPO_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
           "MLFLOW_TRACKING_URI": "", "PYTHONWARNINGS": "ignore"}
    for key in ("CARSDEPO_EXECUTOR", "CARSDEPO_CELERY_BROKER", "CARSDEPO_CELERY_BACKEND"):
        env.pop(key, None)
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").write_bytes((PROJECT_ROOT / "dagster.yaml").read_bytes())
    land(home, batches, photos)
    add_partitions(env, batches)
    print("==> embedded default: dagster-daemon, then the backfill", flush=True)
    log_path = work / "embedded-daemon.log"
    with log_path.open("w") as log:
        daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                                  env=env, cwd=PROJECT_ROOT, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while "QueuedRunCoordinatorDaemon" not in log_path.read_text():  # ready, as the cluster's
            if daemon.poll() is not None:
                sys.exit(f"dagster-daemon exited:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        subprocess.run([str(BIN / "dagster"), "job", "backfill", "-w", "workspace.yaml", "-j",
                        "ingest_job", "--partitions", ",".join(batches), "--noprompt"],
                       env=env, cwd=PROJECT_ROOT, check=True, capture_output=True)
        return backfill_seconds(env, batches)
    finally:
        os.killpg(daemon.pid, 15)
        daemon.wait(timeout=60)


def on_cluster(work: Path, batches: list[str], photos: int, slots: int) -> float:
    """The backfill on deploy/celery's cluster, its `default` worker with ``slots``."""
    folder = work / f"cluster-{slots}"
    ports = [f"--{key}-port={free_port()}" for key in ("pg", "redis", "mlflow", "dagster")]
    command = [sys.executable, str(SCRIPT)]
    print(f"==> cluster, default worker with {slots} slot(s): starting it", flush=True)
    try:
        subprocess.run([*command, "up", "--dir", str(folder), *ports,
                        f"--concurrency=default={slots}"], check=True)
        settings = cluster_script.Cluster(folder).settings()
        env = {**os.environ, **settings, "PYTHONWARNINGS": "ignore"}
        cluster_script.stop_sensors(settings)  # only the backfill's runs
        land(Path(settings["CARSDEPO_HOME"]), batches, photos)
        add_partitions(env, batches)
        cluster_script.launch_backfill(settings, "ingest_job", batches)
        return backfill_seconds(env, batches)
    finally:
        subprocess.run([*command, "down", "--dir", str(folder)], check=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=8, help="batches in the backfill")
    parser.add_argument("--photos", type=int, default=20, help="640x480 photos per batch")
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 2],
                        help="the `default` worker's concurrency, one cluster each")
    args = parser.parse_args(argv)
    batches = [f"bench-{index:03d}" for index in range(args.batches)]
    data = f"backfill of ingest_job over {args.batches} batches of {args.photos} photos"
    with tempfile.TemporaryDirectory(prefix="carsdepo-bench-cluster-") as scratch:
        work = Path(scratch)
        seconds = embedded(work, batches, args.photos)
        record(SUITE, "backfill_embedded_default", round(seconds, 1), "s", data,
               batches=args.batches)
        for slots in args.slots:
            start = time.monotonic()
            seconds = on_cluster(work, batches, args.photos, slots)
            print(f"  (cluster up, backfill and down took {time.monotonic() - start:.0f} s)")
            record(SUITE, f"backfill_celery_{slots}_slot", round(seconds, 1), "s", data,
                   batches=args.batches, default_worker_slots=slots)


if __name__ == "__main__":
    main()
