# make demo | make test | make bench | make lint: each creates or updates .venv from the repo's files.
# make test runs make lint (ruff check + ruff format --check) before pytest.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

CLUSTER_STAMP := $(VENV)/.cluster-installed

.PHONY: demo test test-fast test-jax cluster-test bench lint format venv clean browser redis test-timings docs

# Every test tier prints its 25 slowest tests, and tests/timings.py records the tier's wall time
# (.visrec/test-timings.json; `make test-timings` writes them into docs/development.md), and so does
# `make demo`.
PYTEST := $(BIN)/python tests/timings.py run

venv: $(STAMP)

# Reinstall only when the dependency files change; otherwise this is a no-op.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python tests/timings.py run demo

# The report's and the Airflow UI's browser tests need Debian's chromium: installed here when this is a
# root Debian machine; elsewhere those tests skip and say why (apt's own error is printed).
browser:
	@tests/need-debian-package.sh chromium chromium optional

# Lint first: a formatting or lint error fails the tests (CI runs `make test`). Three pytest-xdist
# workers on two cores, each test module (and the image-model modules together) on one worker, so a
# module's fixtures are built once (tests/conftest.py says why three).
test: $(STAMP) browser lint
	$(PYTEST) test -- -q -n 3 --durations=25

# The edit-test loop: the unit tier only (no Spark, no training, no DAG run).
test-fast: $(STAMP)
	$(PYTEST) test-fast -- -q -m unit -n 2 --durations=25

# What differs under Keras's JAX backend (on the CPU here): the models' train steps, layers and
# save/load (the `backend` mark). Cross-backend save/load runs in `make test` (both directions).
test-jax: $(STAMP)
	KERAS_BACKEND=jax $(PYTEST) test-jax -- -q -m backend --durations=25

# Cluster mode needs Debian's redis-server (Celery's broker) and PostgreSQL's server binaries:
# installed here when this is a root Debian machine; apt's own error is printed when that fails.
redis:
	@tests/need-debian-package.sh redis-server redis-server
	@tests/need-debian-package.sh initdb postgresql

$(CLUSTER_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev,cluster]'
	@touch $(CLUSTER_STAMP)

# The nightly DAG through a real scheduler, Celery workers, Postgres, Redis, MLflow server, S3 and a
# Spark standalone cluster, all started and stopped by the tests (visrec cluster up|down).
cluster-test: $(CLUSTER_STAMP) redis browser
	$(PYTEST) cluster-test -- -q -m cluster tests/cluster -s --durations=25

# The bench compares against implicit (ALS, BPR): a bench-only dependency, installed here.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev,bench,cluster]'
	@touch $(BENCH_STAMP)

# `bench/run.py cluster` starts the process twin of docker/ (redis-server, PostgreSQL).
bench: $(BENCH_STAMP) redis
	$(BIN)/python bench/run.py

# The documentation site (MkDocs + Material + mkdocstrings) into site/, warnings as errors: a broken
# link, a missing page, an unknown setting or figure fails it. Its reference pages and figures are
# generated from the code and bench/figures.json at build time (docs/hooks.py).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(BIN)/ruff check visrec visrec_airflow tests bench spark_jobs dags docs
	$(BIN)/ruff format --check visrec visrec_airflow tests bench spark_jobs dags docs

format: $(STAMP)
	$(BIN)/ruff format visrec visrec_airflow tests bench spark_jobs dags docs
	$(BIN)/ruff check --fix visrec visrec_airflow tests bench spark_jobs dags docs

# docs/development.md's table of test-tier (and demo) timings, from the last measured run of each.
test-timings: $(STAMP)
	$(BIN)/python tests/timings.py docs

clean:
	rm -rf $(VENV) .visrec .pytest_cache
