# carsdepo — the two commands are `make demo` and `make test`; everything else is a building block.
# Every target is idempotent and works from a fresh clone (Python 3.11 on the PATH is all it needs).

PYTHON ?= python3
VENV := .venv
LS_VENV := .venv-label-studio
BIN := $(VENV)/bin
CONSTRAINTS := constraints.txt
LS_CONSTRAINTS := label_studio/constraints.txt
LOCK_VENV := .venv-lock
export CARSDEPO_HOME ?= $(CURDIR)/.carsdepo
export DAGSTER_HOME := $(CARSDEPO_HOME)/dagster
DAGSTER_PORT ?= 3000
MLFLOW_PORT ?= 5000
SERVE_PORT ?= 5001
DOCS_PORT ?= 8000
APP_PORT ?= 8501
# make cluster-up: carsdepo on Celery workers on this host (deploy/celery/, docs/guides/cluster.md)
CLUSTER_DIR ?= $(CURDIR)/.carsdepo-cluster

.DEFAULT_GOAL := help
SYSTEM_PACKAGES := chromium chromium-driver postgresql redis-server
BENCH_ARGS ?=
# make train-real: its own state folder and Label Studio port, so real photos never mix with the
# demo's synthetic ones; TRAIN_REAL_ARGS passes e.g. --iterations 500 or --preset gpu
REAL_HOME ?= $(CURDIR)/.carsdepo-real
REAL_LABEL_STUDIO_URL ?= http://127.0.0.1:8081
TRAIN_REAL_ARGS ?=

.PHONY: help install install-label-studio demo test dev lint bench clean-state serve \
        labelstudio-start labelstudio-stop labelstudio-status mlflow-ui system-deps check \
        bench-report train-real lock docs screenshots app \
        cluster-up cluster-down cluster-status

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-22s %s\n", $$1, $$2}'

# Installs take the exact versions in the constraints files (resolved once, upgraded on purpose
# with `make lock`), so a fresh clone installs what the tests and the demo were measured with.
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	@echo "==> creating $(VENV) and installing carsdepo with the dev extra ($(CONSTRAINTS))"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel -c $(CONSTRAINTS)
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $@

$(LS_VENV)/.installed: label_studio/requirements.txt $(LS_CONSTRAINTS)
	@echo "==> creating $(LS_VENV) for the Label Studio server (it has dependency pins of its own)"
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install --quiet --upgrade pip
	$(LS_VENV)/bin/pip install --quiet -c $(LS_CONSTRAINTS) -r label_studio/requirements.txt
	touch $@

lock: ## Re-resolve the dependencies to the newest allowed releases; rewrite the constraints files
	rm -rf $(LOCK_VENV) $(LOCK_VENV)-ls
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip setuptools wheel
	$(LOCK_VENV)/bin/pip install --quiet -e '.[dev]'
	{ sed -n '/^#/p' $(CONSTRAINTS); $(LOCK_VENV)/bin/pip freeze --all --exclude-editable \
	    | grep -v -i '^pip==' | sort -f; } > $(CONSTRAINTS).new
	$(PYTHON) -m venv $(LOCK_VENV)-ls
	$(LOCK_VENV)-ls/bin/pip install --quiet --upgrade pip
	$(LOCK_VENV)-ls/bin/pip install --quiet -r label_studio/requirements.txt
	{ sed -n '/^#/p' $(LS_CONSTRAINTS); $(LOCK_VENV)-ls/bin/pip freeze --all --exclude-editable \
	    | grep -v -i '^pip==' | sort -f; } > $(LS_CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	mv $(LS_CONSTRAINTS).new $(LS_CONSTRAINTS)
	rm -rf $(LOCK_VENV) $(LOCK_VENV)-ls
	@echo "==> constraints rewritten: review \`git diff $(CONSTRAINTS) $(LS_CONSTRAINTS)\`, fix the" \
	    "date line, run make test and make demo, and commit them"

# The two environments have nothing in common, so they install side by side (about a minute
# sooner on a fresh clone than one after the other).
install: ## Create both virtual environments
	@$(MAKE) --no-print-directory -j2 $(VENV)/.installed $(LS_VENV)/.installed

install-label-studio: $(LS_VENV)/.installed

demo: install ## Set everything up and run the main job end to end on embedded defaults
	$(BIN)/carsdepo demo

train-real: install ## Train on the real lensor photos, evaluate on their test split, print the table row
	CARSDEPO_HOME=$(REAL_HOME) DAGSTER_HOME=$(REAL_HOME)/dagster \
	LABEL_STUDIO_URL=$(REAL_LABEL_STUDIO_URL) $(BIN)/carsdepo train-real $(TRAIN_REAL_ARGS)

system-deps: ## Debian packages the browser, PostgreSQL and cluster tests use (installed when missing)
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null \
	    | grep -q "ok installed" || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
	    echo "==> no apt-get here: install $$missing yourself (their tests skip without them)"; \
	    exit 0; fi; \
	sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	echo "==> installing $$missing (Debian packages)"; \
	{ $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq \
	    --no-install-recommends $$missing >/dev/null; } \
	|| echo "==> could not install $$missing: the browser/PostgreSQL tests will skip"

test: install system-deps ## Set everything up, validate the code location, run the tests and checks
	env -u DAGSTER_HOME $(BIN)/dagster definitions validate -w workspace.yaml
	$(BIN)/lint-imports
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet -d "$$(mktemp -d)"
	$(BIN)/pytest
	$(BIN)/carsdepo check

check: install ## Run every asset check against a freshly built demo state (temporary state)
	$(BIN)/carsdepo check

docs: install ## Serve the documentation site on 127.0.0.1:$(DOCS_PORT), built strictly, rebuilt on save
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict -a 127.0.0.1:$(DOCS_PORT)

# The browser tests save what each UI shows into test-artifacts/ on every run; this copies those
# screenshots over the docs' copies, so the pictures in the docs are the ones a test last saw.
screenshots: ## Refresh docs/images/ from the browser tests' screenshots in test-artifacts/
	@test -d test-artifacts || { echo "==> no test-artifacts/: run make test first"; exit 1; }
	@for png in test-artifacts/*.png; do case "$$png" in *app-test-*) ;; \
	    *) cp -v "$$png" docs/images/ ;; esac; done

dev: install ## Run the Dagster UI on 127.0.0.1:$(DAGSTER_PORT)
	$(BIN)/carsdepo init
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(DAGSTER_PORT)

labelstudio-start: install ## Start the local Label Studio server
	$(BIN)/carsdepo labelstudio start

labelstudio-stop: install ## Stop the local Label Studio server
	$(BIN)/carsdepo labelstudio stop

labelstudio-status: install ## Is the local Label Studio server running?
	$(BIN)/carsdepo labelstudio status

mlflow-ui: install ## Open MLflow's UI on 127.0.0.1:$(MLFLOW_PORT) over the local store
	$(BIN)/carsdepo mlflow-ui --port $(MLFLOW_PORT)

app: install ## Open the page for people who price cars on 127.0.0.1:$(APP_PORT)
	$(BIN)/carsdepo app --port $(APP_PORT)

serve: install ## Serve the champion model over REST (MLflow's scoring app within carsdepo's request limits) on 127.0.0.1:$(SERVE_PORT)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/carsdepo serve --port $(SERVE_PORT)

lint: install ## Ruff over the package, tests and benchmarks; the import contracts (layers)
	$(BIN)/ruff check carsdepo_assets carsdepo_assets_tests benchmarks docs/gen
	$(BIN)/lint-imports

bench: install ## Run the benchmarks (JSON lines in benchmarks/results/); BENCH_ARGS=--quick
	$(BIN)/python -m benchmarks.run_all $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.report

bench-report: ## The latest benchmark results as a markdown table (the docs site generates its page)
	$(BIN)/python -m benchmarks.report

cluster-up: install ## Start PostgreSQL, Redis, MLflow, Dagster and a Celery worker per queue in $(CLUSTER_DIR)
	$(BIN)/python deploy/celery/cluster.py up --dir $(CLUSTER_DIR)

cluster-down: ## Stop every process of the cluster in $(CLUSTER_DIR) (its PostgreSQL data goes with it)
	$(BIN)/python deploy/celery/cluster.py down --dir $(CLUSTER_DIR)

cluster-status: ## Which processes of the cluster in $(CLUSTER_DIR) are running
	$(BIN)/python deploy/celery/cluster.py status --dir $(CLUSTER_DIR)

clean-state: ## Delete all local state under $(CARSDEPO_HOME)
	rm -rf "$(CARSDEPO_HOME)"
