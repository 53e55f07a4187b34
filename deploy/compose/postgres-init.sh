#!/bin/sh
# One PostgreSQL server, one database and role per service. The role passwords come from the
# environment of the postgres container (docker-compose.yaml requires each one); none is written
# here. psql's :'name' quoting makes each a literal, whatever characters it holds.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v dagster_password="$DAGSTER_PG_PASSWORD" \
  -v mlflow_password="$MLFLOW_DB_PASSWORD" \
  -v labelstudio_password="$LABEL_STUDIO_DB_PASSWORD" <<'SQL'
CREATE ROLE dagster LOGIN PASSWORD :'dagster_password';
CREATE DATABASE dagster OWNER dagster;
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
CREATE ROLE labelstudio LOGIN PASSWORD :'labelstudio_password';
CREATE DATABASE labelstudio OWNER labelstudio;
SQL
