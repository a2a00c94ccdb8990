# make demo | make test | make bench | make lint: each creates or updates .venv from the repo's files.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint format venv clean

venv: $(STAMP)

# Reinstall only when the dependency files change; otherwise this is a no-op.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m visrec.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run.py

lint: $(STAMP)
	$(BIN)/ruff check visrec tests bench spark_jobs
	$(BIN)/ruff format --check visrec tests bench spark_jobs

format: $(STAMP)
	$(BIN)/ruff format visrec tests bench spark_jobs
	$(BIN)/ruff check --fix visrec tests bench spark_jobs

clean:
	rm -rf $(VENV) .visrec .pytest_cache
