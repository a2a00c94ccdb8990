# make demo | make test | make bench | make lint: each creates or updates .venv from the repo's files.
# make test runs make lint (ruff check + ruff format --check) before pytest.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: demo test test-jax bench lint format venv clean browser

venv: $(STAMP)

# Reinstall only when the dependency files change; otherwise this is a no-op.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m visrec.app.demo

# The report's browser test needs Debian's chromium: installed here when this is a root Debian machine;
# elsewhere that one test skips and says why.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "chromium is not installed: the report's browser test will skip"

# Lint first: a formatting or lint error fails the tests (CI runs `make test`).
test: $(STAMP) browser lint
	$(BIN)/python -m pytest -q

# The models whose training has no backend-specific code, under Keras's JAX backend (on the CPU here).
test-jax: $(STAMP)
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q tests/test_backends.py tests/test_recommenders.py -k "backend or vbpr or VBPR or selection"

# The bench compares against implicit (ALS, BPR): a bench-only dependency, installed here.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python bench/run.py

lint: $(STAMP)
	$(BIN)/ruff check visrec tests bench spark_jobs dags
	$(BIN)/ruff format --check visrec tests bench spark_jobs dags

format: $(STAMP)
	$(BIN)/ruff format visrec tests bench spark_jobs dags
	$(BIN)/ruff check --fix visrec tests bench spark_jobs dags

clean:
	rm -rf $(VENV) .visrec .pytest_cache
