-- One PostgreSQL server, one database and role per service. The passwords are the local
-- defaults of docker-compose.yaml; change them (and .env) for anything but a trial.
CREATE ROLE dagster LOGIN PASSWORD 'dagster';
CREATE DATABASE dagster OWNER dagster;
CREATE ROLE mlflow LOGIN PASSWORD 'mlflow';
CREATE DATABASE mlflow OWNER mlflow;
CREATE ROLE labelstudio LOGIN PASSWORD 'labelstudio';
CREATE DATABASE labelstudio OWNER labelstudio;
