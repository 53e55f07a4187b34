"""deploy/ requires every secret: no default password in the compose file or in SQL, the
database roles get their passwords from the environment at init, and Label Studio sign-up is
closed."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import yaml

from carsdepo_assets.state import PROJECT_ROOT
from carsdepo_assets_tests.operations.conftest import postgres_binary

COMPOSE = PROJECT_ROOT / "deploy" / "compose"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|ACCESS_KEY")


def test_the_compose_file_gives_no_secret_a_default() -> None:
    text = (COMPOSE / "docker-compose.yaml").read_text()
    defaults = re.findall(r"\$\{(\w+):?-", text)
    assert [name for name in defaults if SECRET_NAME.search(name)] == []
    required = set(re.findall(r"\$\{(\w+):\?", text))
    assert {"POSTGRES_PASSWORD", "DAGSTER_PG_PASSWORD", "MLFLOW_DB_PASSWORD",
            "LABEL_STUDIO_DB_PASSWORD", "LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_API_KEY",
            "MINIO_ROOT_PASSWORD"} <= required


def test_label_studio_in_compose_allows_no_open_sign_up() -> None:
    services = yaml.safe_load((COMPOSE / "docker-compose.yaml").read_text())["services"]
    assert services["label-studio"]["environment"][
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK"] == "true"


def test_no_sql_file_in_deploy_holds_a_password() -> None:
    for path in (PROJECT_ROOT / "deploy").rglob("*"):
        if path.is_file():
            assert not re.search(r"PASSWORD\s+'", path.read_text(errors="replace")), path


@pytest.mark.postgres
def test_the_init_script_creates_the_roles_with_the_passwords_of_the_environment(
    postgres_server,
) -> None:
    import psycopg2

    if postgres_binary("psql") is None:
        pytest.skip("psql not found: install Debian's postgresql-client")
    passwords = {"DAGSTER_PG_PASSWORD": "it's a 'quoted' one", "MLFLOW_DB_PASSWORD": "m; DROP",
                 "LABEL_STUDIO_DB_PASSWORD": "ls-secret"}
    env = {**os.environ, **passwords, "POSTGRES_USER": postgres_server.user,
           "PGHOST": postgres_server.host, "PGPORT": str(postgres_server.port),
           "PGPASSWORD": postgres_server.password,
           "PATH": f"{os.path.dirname(postgres_binary('psql'))}:{os.environ['PATH']}"}
    done = subprocess.run(["sh", str(COMPOSE / "postgres-init.sh")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for role, variable in (("dagster", "DAGSTER_PG_PASSWORD"), ("mlflow", "MLFLOW_DB_PASSWORD"),
                           ("labelstudio", "LABEL_STUDIO_DB_PASSWORD")):
        connection = psycopg2.connect(host=postgres_server.host, port=postgres_server.port,
                                      user=role, password=passwords[variable], dbname=role)
        connection.close()
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(host=postgres_server.host, port=postgres_server.port, user="dagster",
                         password="dagster", dbname="dagster")
