# eic-guard: `make demo` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SAM_VENV := .venv-sam
SAM := $(SAM_VENV)/bin/sam
# checkov pins boto3 and packaging versions the project's own environment cannot share: a virtualenv of its own.
CHECKOV_VENV := .venv-checkov
CHECKOV_REPORT := .checkov-report.json
# sam build needs a python3.13 on PATH (the Lambda runtime); these machines carry one under pyenv.
PY313_DIR := $(firstword $(shell ls -d $$(pyenv root 2>/dev/null)/versions/3.13*/bin 2>/dev/null | sort -V | tail -1) $(shell command -v python3.13 >/dev/null 2>&1 && python3.13 -V >/dev/null 2>&1 && dirname $$(command -v python3.13)))
BUILD_DIR ?= .aws-sam/build
PYTEST_ARGS ?=

.PHONY: help setup demo test lint format build validate bench bench-org docs lock lock-checkov clean

help:
	@echo "make demo | test | lint | build | validate | bench | bench-org | docs | clean"

$(BIN)/.installed: requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	touch $@

$(SAM_VENV)/.installed: requirements-sam.txt
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-sam.txt
	touch $@

setup: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/eic-guard demo

test: $(BIN)/.installed
	@scripts/ensure-chromium.sh
	$(BIN)/pytest -n 2 $(PYTEST_ARGS)

# cfn-lint with its informational rules too; checkov's findings must each be explained in checkov-suppressions.yaml.
lint: $(BIN)/.installed $(CHECKOV_VENV)/.installed
	$(BIN)/ruff check layers functions tests benchmarks scripts
	$(BIN)/ruff format --check layers functions tests benchmarks scripts
	$(BIN)/cfn-lint --include-checks I -- template.yaml member/template.yaml
	$(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download --framework cloudformation -o json \
	  -f template.yaml -f member/template.yaml > $(CHECKOV_REPORT) || true
	$(BIN)/python scripts/checkov_findings.py $(CHECKOV_REPORT) checkov-suppressions.yaml

format: $(BIN)/.installed
	$(BIN)/ruff check --fix layers functions tests benchmarks scripts
	$(BIN)/ruff format layers functions tests benchmarks scripts

validate: $(SAM_VENV)/.installed
	SAM_CLI_TELEMETRY=0 $(SAM) validate --lint --region us-east-1

build: $(SAM_VENV)/.installed
	@test -n "$(PY313_DIR)" || { echo "sam build needs python3.13 on PATH"; exit 2; }
	PATH="$(PY313_DIR):$$PATH" SAM_CLI_TELEMETRY=0 $(SAM) build --build-dir $(BUILD_DIR)

bench: $(BIN)/.installed
	$(BIN)/python -m benchmarks.run

# The organization fan-out (issue 9): targets/s by workers and latency, the deployed worker, the 500 x 17 estimate;
# then the streamed Aggregate over synthetic results at 10,000, 100,000 and 1,000,000 instances, compared with the
# in-memory path up to 100,000 (issue 20: benchmarks/org_scale.py; ~8 min, the 1,000,000 results seeded once in /tmp).
bench-org: $(BIN)/.installed
	$(BIN)/python -m benchmarks.org
	$(BIN)/python -m benchmarks.org_scale --compare
	$(BIN)/python -m benchmarks.sfn_cost --before 03ffa87  # issue 20's base: one child execution per target
	$(BIN)/python -m benchmarks.org --render  # ORG_RESULTS.md again, with the two runs above

# The README's generated tables (settings, exit codes): from the settings model and cli/exit_codes.py.
docs: $(BIN)/.installed
	$(BIN)/python -m eic_guard.cli.reference README.md

lock:
	$(PYTHON) -m venv /tmp/eic-guard-lock && /tmp/eic-guard-lock/bin/pip install -q -r requirements-dev.in \
	  && { echo "# Pinned development/test environment (pip freeze of requirements-dev.in). Regenerate: make lock"; \
	       /tmp/eic-guard-lock/bin/pip freeze; } > requirements-dev.txt

lock-checkov:
	$(PYTHON) -m venv /tmp/eic-guard-lock-checkov && /tmp/eic-guard-lock-checkov/bin/pip install -q checkov==3.3.30 \
	  && { echo "# checkov (make lint) in its own virtualenv: it pins boto3==1.35.49 and packaging<24, which the project's"; \
	       echo "# requirements-dev.txt cannot share. pip freeze of checkov==3.3.30; regenerate: make lock-checkov"; \
	       /tmp/eic-guard-lock-checkov/bin/pip freeze; } > requirements-checkov.txt

clean:
	rm -rf $(VENV) $(SAM_VENV) $(CHECKOV_VENV) $(CHECKOV_REPORT) .aws-sam .pytest_cache .ruff_cache
