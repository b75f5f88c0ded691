# The two commands: `make run` and `make test`. Both set up .venv on a fresh machine (Python 3.11+).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/local.yaml

.PHONY: run test lint typecheck unit cfn-lint bench clean

$(BIN)/python:
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "rotator needs Python 3.11 or newer (set PY=python3.11)")'
	$(PY) -m venv $(VENV)

# the runtime only: what `make run` needs
$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	@touch $@

# everything the tests need: every extra, the linters, moto, the momento SDK
$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@ $(VENV)/.run-installed

run: $(VENV)/.run-installed
	$(BIN)/rotator run --config $(CONFIG)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check rotator tests bench

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

cfn-lint: $(VENV)/.dev-installed
	$(BIN)/cfn-lint deploy/aws-lambda/template.yaml

unit: $(VENV)/.dev-installed
	$(BIN)/pytest

test: lint typecheck cfn-lint unit

bench: $(VENV)/.dev-installed
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .rotator .mypy_cache .ruff_cache .pytest_cache .hypothesis
