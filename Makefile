# exports_pipeline — the commands the README promises. Everything installs itself on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export EXPORTS_HOME ?= $(CURDIR)/.exports
export DAGSTER_HOME ?= $(EXPORTS_HOME)/dagster
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)

.PHONY: install install-test demo test dev bench clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# The runtime environment as locked in uv.lock (--inexact: keep test extras a previous `make test` added).
install: $(UV)
	$(UV) sync --frozen --inexact --quiet

install-test: $(UV)
	$(UV) sync --frozen --quiet --extra test

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

# Seed the embedded ClickHouse (chDB), migrate the state DB, run the main job through Dagster.
demo: install $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/exports-pipeline demo

# The whole suite against real services (chDB, PostgreSQL, moto S3, HTTP/SMTP peers) it starts itself.
test: install-test
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

# The Dagster UI on 127.0.0.1:3000 over the same local state as `make demo`.
dev: install $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: install-test
	$(VENV)/bin/python -m bench.run_all

clean:
	rm -rf $(EXPORTS_HOME) .pytest_cache
