"""carsdepo on Celery workers, on this host: PostgreSQL, Redis, the MLflow server, the Dagster
webserver and daemon, and one Celery worker per queue, each its own process with a log and a
pid file under the cluster folder (``make cluster-up`` / ``cluster-down`` / ``cluster-status``).

    python deploy/celery/cluster.py up [--dir .carsdepo-cluster] [--home DIR] [--*-port N]
                                       [--concurrency QUEUE=N]
    python deploy/celery/cluster.py status|down [--dir .carsdepo-cluster]

``up`` starts what is not running (so it is also how a dead process comes back) and writes
``<dir>/env``: the variables every process got, to ``source`` before using ``dagster`` against
the cluster. The first ``up`` fixes the ports and a random PostgreSQL password; later ones reuse
them. PostgreSQL's data folder is a throw-away one: ``down`` deletes it with the run history.
On several machines the same commands run per host; docs/guides/cluster.md says how.
"""

from __future__ import annotations

import argparse
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parent.parent
BIN = Path(sys.executable).parent
DEFAULT_PORTS = {"pg": 55432, "redis": 56379, "mlflow": 5050, "dagster": 3030}
PG_USER = "carsdepo"
DATABASES = ("dagster", "mlflow")
# Slots per queue: two small steps at a time on `default`, one training at a time.
WORKERS = {"default": 2, "training": 1}
START_TIMEOUT_S = 180


class ClusterError(RuntimeError):
    """Something the cluster needs is missing or did not start; the message says what to do."""


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    port: int | None = None  # ready once it accepts connections here
    ready_line: str | None = None  # ... or once its log shows this
    env: dict[str, str] | None = None  # beside the cluster's (secrets kept off the command line)


def binary(name: str, package: str) -> str:
    """``name`` on the PATH or in Debian's PostgreSQL folder (the newest version's, where the
    server's tools live off the PATH); a clear error when absent."""
    found = shutil.which(name)
    if not found:
        versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                          key=lambda path: int(path.parts[-3]))
        found = str(versions[-1]) if versions else None
    if not found:
        raise ClusterError(f"{name} not found: install Debian's {package} package "
                           f"(`make system-deps`, or `apt-get install {package}`)")
    return found


class Cluster:
    def __init__(self, folder: Path):
        self.dir = folder.resolve()
        self.run = self.dir / "run"
        self.logs = self.dir / "logs"
        self.env_file = self.dir / "env"

    # -- settings -----------------------------------------------------------------------------
    def settings(self) -> dict[str, str]:
        """The variables of ``<dir>/env`` (empty before the first ``up``)."""
        if not self.env_file.exists():
            return {}
        pairs = (shlex.split(line)[1].split("=", 1) for line in self.env_file.read_text()
                 .splitlines() if line.startswith("export "))
        return dict(pairs)

    def configure(self, home: Path | None, ports: dict[str, int | None],
                  slots: dict[str, int]) -> dict[str, str]:
        """Write ``<dir>/env`` on the first ``up``; a later one keeps it (same ports, password)
        and refuses a conflicting ``--home``."""
        known = self.settings()
        if known:
            if home is not None and Path(known["CARSDEPO_HOME"]) != home.resolve():
                raise ClusterError(f"the cluster in {self.dir} uses CARSDEPO_HOME="
                                   f"{known['CARSDEPO_HOME']}; `down` it and delete {self.dir} "
                                   "to change it")
            return known
        chosen = {key: ports.get(key) or default for key, default in DEFAULT_PORTS.items()}
        home = (home or self.dir / "home").resolve()
        env = {
            "CARSDEPO_HOME": str(home),
            "DAGSTER_HOME": str(self.dir / "dagster"),
            "CARSDEPO_DAGSTER_STORAGE": str(home / "dagster-cluster"),
            "CARSDEPO_EXECUTOR": "celery",
            "CARSDEPO_CELERY_BROKER": f"redis://127.0.0.1:{chosen['redis']}/0",
            "CARSDEPO_CELERY_BACKEND": f"redis://127.0.0.1:{chosen['redis']}/1",
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(chosen["pg"]),
            "DAGSTER_PG_DB": "dagster",
            "DAGSTER_PG_USER": PG_USER,
            "DAGSTER_PG_PASSWORD": secrets.token_urlsafe(18),
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{chosen['mlflow']}",
            "CARSDEPO_DAGSTER_PORT": str(chosen["dagster"]),
            **{f"CARSDEPO_WORKER_SLOTS_{queue.upper()}": str(slots.get(queue, default))
               for queue, default in WORKERS.items()},
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        self.env_file.write_text("".join(f"export {key}={shlex.quote(value)}\n"
                                         for key, value in env.items()))
        self.env_file.chmod(0o600)
        return env

    def process_env(self, settings: dict[str, str]) -> dict[str, str]:
        path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"  # celery, dagster, mlflow
        return {**os.environ, **settings, "PATH": path, "PYTHONUNBUFFERED": "1"}

    def services(self, settings: dict[str, str]) -> list[Service]:
        """Every process but PostgreSQL (pg_ctl runs that one), in start order."""
        mlflow_port = int(settings["MLFLOW_TRACKING_URI"].rsplit(":", 1)[1])
        redis_port = int(settings["CARSDEPO_CELERY_BROKER"].split(":")[2].split("/")[0])
        dagster_port = int(settings["CARSDEPO_DAGSTER_PORT"])
        workspace = str(PROJECT_ROOT / "workspace.yaml")
        services = [
            Service("redis", [binary("redis-server", "redis-server"), "--port", str(redis_port),
                              "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                              "--dir", str(self.dir)], port=redis_port),
            Service("mlflow", [str(BIN / "mlflow"), "server", "--host", "127.0.0.1",
                               "--port", str(mlflow_port), "--workers", "1",
                               "--artifacts-destination",
                               str(Path(settings["CARSDEPO_HOME"]) / "mlflow-artifacts"),
                               "--serve-artifacts"], port=mlflow_port,
                    env={"MLFLOW_BACKEND_STORE_URI": self.pg_url(settings, "mlflow")}),
            Service("webserver", [str(BIN / "dagster-webserver"), "-w", workspace,
                                  "-h", "127.0.0.1", "-p", str(dagster_port)], port=dagster_port),
            Service("daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace],
                    ready_line="daemon"),
        ]
        for queue in WORKERS:
            slots = settings[f"CARSDEPO_WORKER_SLOTS_{queue.upper()}"]
            services.append(Service(
                f"worker-{queue}",
                [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                 "-y", str(HERE / "celery.yaml"), "-q", queue, "-n", queue,
                 # imported before the pool forks: a step does not load the code location anew
                 "-i", "carsdepo_assets.definitions", "--", f"--concurrency={slots}"],
                ready_line=" ready."))
        return services

    @staticmethod
    def pg_url(settings: dict[str, str], database: str) -> str:
        return (f"postgresql+psycopg2://{PG_USER}:{settings['DAGSTER_PG_PASSWORD']}"
                f"@127.0.0.1:{settings['DAGSTER_PG_PORT']}/{database}")

    # -- processes ----------------------------------------------------------------------------
    def pid_of(self, name: str) -> int | None:
        """The pid of ``name`` if its recorded process is still that process."""
        import psutil

        pid_file = self.run / f"{name}.pid"
        if not pid_file.exists():
            return None
        pid, started = pid_file.read_text().split()
        try:
            process = psutil.Process(int(pid))
            if abs(process.create_time() - float(started)) < 1 and process.status() != "zombie":
                return int(pid)
        except psutil.NoSuchProcess:
            pass
        return None

    def start(self, service: Service, env: dict[str, str]) -> subprocess.Popen | None:
        import psutil

        if self.pid_of(service.name):
            print(f"  {service.name}: already running (pid {self.pid_of(service.name)})")
            return None
        if service.port and port_open(service.port):
            raise ClusterError(f"{service.name}: port {service.port} is taken by another "
                               f"program; pick another (`cluster.py up --help`)")
        log = self.logs / f"{service.name}.log"
        with log.open("a") as output:
            process = subprocess.Popen(service.argv, cwd=PROJECT_ROOT,
                                       env={**env, **(service.env or {})}, stdout=output,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        started = psutil.Process(process.pid).create_time()
        (self.run / f"{service.name}.pid").write_text(f"{process.pid} {started}\n")
        print(f"  {service.name}: started (pid {process.pid}, log {log})")
        return process

    def wait_ready(self, service: Service, process: subprocess.Popen, log_from: int) -> None:
        log = self.logs / f"{service.name}.log"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ClusterError(f"{service.name} exited ({process.returncode}) while starting; "
                                   f"the end of {log}:\n{tail(log)}")
            if service.port and port_open(service.port):
                return
            if service.ready_line and service.ready_line in log.read_text()[log_from:]:
                return
            time.sleep(0.5)
        raise ClusterError(f"{service.name} not ready after {START_TIMEOUT_S} s; the end of "
                           f"{log}:\n{tail(log)}")

    def stop(self, name: str) -> None:
        pid = self.pid_of(name)
        (self.run / f"{name}.pid").unlink(missing_ok=True)
        if pid is None:
            return
        for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            try:
                os.killpg(pid, sig)  # the process and what it started (code servers, the pool)
            except ProcessLookupError:
                break
            if wait_gone(pid, wait_s):
                break
        print(f"  {name}: stopped")

    # -- PostgreSQL ---------------------------------------------------------------------------
    def postgres(self, settings: dict[str, str]) -> None:
        """Start PostgreSQL on a throw-away data folder (created on first use, with the
        databases); as root it runs as the ``postgres`` user, as PostgreSQL requires."""
        initdb, pg_ctl = binary("initdb", "postgresql"), binary("pg_ctl", "postgresql")
        as_owner, owner = [], None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError as error:
                raise ClusterError("running as root and there is no 'postgres' user to run "
                                   "PostgreSQL as") from error
            as_owner = ["runuser", "-u", "postgres", "--"]
        marker = self.run / "postgres.data"
        root = Path(marker.read_text().strip()) if marker.exists() else None
        data = root / "data" if root else None
        if data and (data / "postmaster.pid").exists() and port_open(
                int(settings["DAGSTER_PG_PORT"])):
            print(f"  postgres: already running ({data})")
            return
        fresh = data is None or not data.exists()
        if fresh:
            # /tmp, not the cluster folder: the postgres user must be able to reach it
            root = Path(tempfile.mkdtemp(prefix="carsdepo-cluster-pg-"))
            data = root / "data"
            password = root / "password"
            password.write_text(settings["DAGSTER_PG_PASSWORD"] + "\n")
            if owner:
                os.chown(root, owner.pw_uid, owner.pw_gid)
                os.chown(password, owner.pw_uid, owner.pw_gid)
            pg_command([*as_owner, initdb, "-D", str(data), "-U", PG_USER,
                        f"--pwfile={password}", "--auth=scram-sha-256", "-E", "UTF8",
                        "--no-sync"])
            password.unlink()
            marker.write_text(f"{root}\n")
        options = (f"-p {settings['DAGSTER_PG_PORT']} -c listen_addresses=127.0.0.1 -k {root}")
        pg_command([*as_owner, pg_ctl, "-D", str(data), "-l", str(root / "server.log"),
                    "-o", options, "-w", "-t", "60", "start"])
        print(f"  postgres: started (data {data}, log {root / 'server.log'})")
        if fresh:
            create_databases(settings)

    def stop_postgres(self) -> None:
        marker = self.run / "postgres.data"
        if not marker.exists():
            return
        root = Path(marker.read_text().strip())
        if (root / "data" / "postmaster.pid").exists():
            as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
            pg_command([*as_owner, binary("pg_ctl", "postgresql"), "-D", str(root / "data"),
                        "-m", "fast", "-w", "stop"])
        shutil.rmtree(root, ignore_errors=True)
        marker.unlink()
        print("  postgres: stopped, its data folder deleted")

    # -- commands -----------------------------------------------------------------------------
    def up(self, home: Path | None, ports: dict[str, int | None],
           slots: dict[str, int]) -> None:
        for module in ("dagster_celery", "psycopg2", "psutil"):
            try:
                __import__(module)
            except ImportError as error:
                raise ClusterError(f"{module} is not installed in {sys.prefix}: run "
                                   "`make install`") from error
        settings = self.configure(home, ports, slots)
        services = self.services(settings)  # checks the binaries before anything starts
        for folder in (self.run, self.logs, Path(settings["DAGSTER_HOME"]),
                       Path(settings["CARSDEPO_DAGSTER_STORAGE"])):
            folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HERE / "dagster.yaml", Path(settings["DAGSTER_HOME"]) / "dagster.yaml")
        Path(settings["CARSDEPO_HOME"]).mkdir(parents=True, exist_ok=True)
        print(f"==> carsdepo cluster in {self.dir} (CARSDEPO_HOME={settings['CARSDEPO_HOME']})")
        self.postgres(settings)
        env = self.process_env(settings)
        started = []
        for service in services:
            log = self.logs / f"{service.name}.log"
            log_from = log.stat().st_size if log.exists() else 0
            process = self.start(service, env)
            if process is not None:  # all start at once: the workers retry the broker meanwhile
                started.append((service, process, log_from))
        for waiting in started:
            self.wait_ready(*waiting)
        print(f"==> ready: Dagster http://127.0.0.1:{settings['CARSDEPO_DAGSTER_PORT']}, "
              f"MLflow {settings['MLFLOW_TRACKING_URI']}; `source {self.env_file}` to use "
              "the dagster CLI on it")

    def down(self) -> None:
        if not self.dir.exists():
            print(f"==> no cluster in {self.dir}")
            return
        print(f"==> stopping the carsdepo cluster in {self.dir}")
        names = [f"worker-{queue}" for queue in WORKERS] + ["daemon", "webserver", "mlflow",
                                                            "redis"]
        for name in names:
            self.stop(name)
        self.stop_postgres()

    def status(self) -> int:
        if not self.env_file.exists():
            print(f"==> no cluster in {self.dir} (`make cluster-up` starts one)")
            return 1
        settings = self.settings()
        running = 0
        names = ["redis", "mlflow", "webserver", "daemon", *(f"worker-{q}" for q in WORKERS)]
        pg_up = port_open(int(settings["DAGSTER_PG_PORT"]))
        print(f"  {'postgres':16} {'running' if pg_up else 'stopped'} "
              f"(port {settings['DAGSTER_PG_PORT']})")
        for name in names:
            pid = self.pid_of(name)
            running += pid is not None
            print(f"  {name:16} {f'running (pid {pid})' if pid else 'stopped'}")
        return 0 if pg_up and running == len(names) else 3


def graphql(settings: dict[str, str], query: str, variables: dict | None = None) -> dict:
    """One request to the cluster's webserver (its code location is loaded already, so this is
    the quick way for scripts to launch work); the ``data`` of the answer."""
    import requests

    answer = requests.post(f"http://127.0.0.1:{settings['CARSDEPO_DAGSTER_PORT']}/graphql",
                           json={"query": query, "variables": variables or {}}, timeout=60)
    answer.raise_for_status()
    body = answer.json()
    if body.get("errors"):
        raise ClusterError(f"GraphQL: {body['errors']}")
    return body["data"]


REPOSITORY = {"repositoryLocationName": "carsdepo", "repositoryName": "__repository__"}


def stop_sensors(settings: dict[str, str]) -> list[str]:
    """Stop every running sensor (for benchmarks and tests that launch all work themselves);
    the names stopped."""
    found = graphql(settings, """query($repo: RepositorySelector!) {
        sensorsOrError(repositorySelector: $repo) { ... on Sensors { results {
            name sensorState { id status } } } } }""", {"repo": REPOSITORY})
    stopped = []
    for sensor in found["sensorsOrError"]["results"]:
        if sensor["sensorState"]["status"] == "RUNNING":
            graphql(settings, "mutation($id: String) { stopSensor(id: $id) { __typename } }",
                    {"id": sensor["sensorState"]["id"]})
            stopped.append(sensor["name"])
    return stopped


def launch_backfill(settings: dict[str, str], job: str, partitions: list[str]) -> str:
    """A backfill of ``job`` over ``partitions`` (queued for the daemon); its id."""
    answer = graphql(settings, """mutation($params: LaunchBackfillParams!) {
        launchPartitionBackfill(backfillParams: $params) { __typename
            ... on LaunchBackfillSuccess { backfillId } ... on Error { message } } }""",
                     {"params": {"selector": {"partitionSetName": f"{job}_partition_set",
                                              "repositorySelector": REPOSITORY},
                                 "partitionNames": partitions}})
    result = answer["launchPartitionBackfill"]
    if "backfillId" not in result:
        raise ClusterError(f"backfill of {job} refused: {result}")
    return result["backfillId"]


def pg_command(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise ClusterError(f"{Path(argv[argv.index('--') + 1] if '--' in argv else argv[0]).name}"
                           f" failed: {done.stdout}{done.stderr}")


def create_databases(settings: dict[str, str]) -> None:
    import psycopg2

    connection = psycopg2.connect(host="127.0.0.1", port=int(settings["DAGSTER_PG_PORT"]),
                                  user=PG_USER, password=settings["DAGSTER_PG_PASSWORD"],
                                  dbname="postgres")
    connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with connection.cursor() as cursor:
            for name in DATABASES:
                cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def wait_gone(pid: int, timeout_s: float) -> bool:
    import psutil

    try:
        psutil.Process(pid).wait(timeout=timeout_s)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        return False
    return True


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=PROJECT_ROOT / ".carsdepo-cluster",
                        help="the cluster folder: env, logs, pid files (default: %(default)s)")
    parser.add_argument("--home", type=Path, default=None,
                        help="the shared state folder (CARSDEPO_HOME; default <dir>/home)")
    for key, default in DEFAULT_PORTS.items():
        parser.add_argument(f"--{key}-port", type=int, default=None,
                            help=f"first `up` only (default {default})")
    parser.add_argument("--concurrency", action="append", default=[], metavar="QUEUE=N",
                        help="first `up` only: steps a queue's worker runs at once (default "
                        + ", ".join(f"{queue}={n}" for queue, n in WORKERS.items()) + ")")
    args = parser.parse_args(argv)
    slots = {}
    for item in args.concurrency:
        queue, _, count = item.partition("=")
        if queue not in WORKERS or not count.isdigit() or int(count) < 1:
            parser.error(f"--concurrency {item!r}: expected QUEUE=N, QUEUE one of "
                         f"{', '.join(WORKERS)} and N at least 1")
        slots[queue] = int(count)
    cluster = Cluster(args.dir)
    try:
        if args.command == "up":
            cluster.up(args.home, {key: getattr(args, f"{key}_port") for key in DEFAULT_PORTS},
                       slots)
        elif args.command == "down":
            cluster.down()
        else:
            return cluster.status()
    except ClusterError as error:
        print(f"cluster {args.command}: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
