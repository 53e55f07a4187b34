"""Fixtures for the operations tests: batches in the landing zone, the Dagster CLI as a user
runs it, and a real PostgreSQL server started from Debian's binaries."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from carsdepo_assets.cli.runner import prepare_dagster_home
from carsdepo_assets.state import PROJECT_ROOT, StateLayout
from carsdepo_assets_tests.fixtures.label_studio import free_port
from carsdepo_assets_tests.images.samples import jpeg
from deploy.celery import cluster as cluster_script

PG_USER = "carsdepo"
PG_PASSWORD = "carsdepo-test"


def land_batch(layout: StateLayout, batch: str, count: int, first_seed: int = 0) -> Path:
    """``count`` distinct JPEG photos in ``landing/<batch>``, where raw_images looks by default."""
    folder = layout.landing / batch
    folder.mkdir(parents=True)
    for seed in range(first_seed, first_seed + count):
        (folder / f"car-{seed:03d}.jpg").write_bytes(jpeg(seed))
    return folder


@pytest.fixture
def cli_env(carsdepo_home: StateLayout) -> dict[str, str]:
    """The environment of a Dagster CLI process on this test's state directory, whose
    DAGSTER_HOME holds the repo's dagster.yaml (queued run coordinator), as ``make dev`` has."""
    prepare_dagster_home(carsdepo_home)
    return {**os.environ, "PYTHONWARNINGS": "ignore"}


def run_cli(args: list[str], env: dict[str, str], timeout: float = 600) -> str:
    """Run a console script of the venv from the repo root; its output, or a failure showing it."""
    command = [str(Path(sys.executable).parent / args[0]), *args[1:]]
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{output[-4000:]}"
    return output


def postgres_binary(name: str) -> str | None:
    """``name`` where the cluster script finds it (the PATH, else Debian's newest
    /usr/lib/postgresql/<version>/bin), or None."""
    try:
        return cluster_script.binary(name, "postgresql")
    except cluster_script.ClusterError:
        return None


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str = PG_USER
    password: str = PG_PASSWORD

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        import psycopg2

        connection = psycopg2.connect(host=self.host, port=self.port, user=self.user,
                                      password=self.password, dbname="postgres")
        connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
        try:
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()

    def dagster_env(self, database: str) -> dict[str, str]:
        """The variables deploy/dagster/*.yaml read."""
        return {"DAGSTER_PG_HOST": self.host, "DAGSTER_PG_PORT": str(self.port),
                "DAGSTER_PG_DB": database, "DAGSTER_PG_USER": self.user,
                "DAGSTER_PG_PASSWORD": self.password}


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of its own (initdb in a temporary folder, a free port on 127.0.0.1,
    password authentication), stopped and deleted afterwards. PostgreSQL refuses to run as root:
    as root, it runs as the ``postgres`` user Debian's package creates."""
    pytest.importorskip("psycopg2", reason="psycopg2 comes with dagster-postgres (dev extra)")
    initdb, pg_ctl = postgres_binary("initdb"), postgres_binary("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's "
                    "postgresql package (`make system-deps`)")
    as_owner: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="carsdepo-pg-"))
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_owner = ["runuser", "-u", "postgres", "--"]
    password_file = root / "password"
    password_file.write_text(PG_PASSWORD + "\n")
    if as_owner:
        os.chown(password_file, owner.pw_uid, owner.pw_gid)
    data, port = root / "data", free_port()
    server_options = f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off"

    def pg(*args: str) -> None:
        done = subprocess.run([*as_owner, *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {done.stdout}{done.stderr}")

    try:
        pg(initdb, "-D", str(data), "-U", PG_USER, f"--pwfile={password_file}",
           "--auth=scram-sha-256", "-E", "UTF8", "--no-sync")
        pg(pg_ctl, "-D", str(data), "-l", str(root / "server.log"), "-o", server_options,
           "-w", "-t", "60", "start")
        yield PostgresServer(host="127.0.0.1", port=port)
    finally:
        if (data / "postmaster.pid").exists():
            pg(pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
