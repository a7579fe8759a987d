# Entry points for people and CI. Works on a fresh Debian with Python 3.11, Java 17, npm and make,
# as root or with sudo, non-interactively (CI=true, no stdin).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3.11
VENV := .venv
# Touched after a successful install: the venv is rebuilt only when a pyproject.toml is newer.
VENV_STAMP := $(VENV)/.installed-from-pyproject
PYTEST_ARGS ?=
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
# Debian package:command pairs the tests use (promtool ships in the prometheus package).
APT_TOOLS := faketime:faketime prometheus:promtool shellcheck:shellcheck

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1
export DEBIAN_FRONTEND := noninteractive

.PHONY: venv deps apt-tools dynamodb-local test demo lint bench bench-smoke bench-scale lambda-package docs lock

venv: $(VENV_STAMP)

# The runtime dependencies at the locked (tested, shipped) versions; dev tools within their ranges.
# Versions only: hashes in a constraints file would put pip in hash-checking mode, which refuses -e.
$(VENV_STAMP): pyproject.toml dev/pyproject.toml requirements.lock
	$(PYTHON) -m venv --clear $(VENV)
	grep -E '^[A-Za-z0-9]' requirements.lock | sed 's/[ ;].*//' > $(VENV)/lock-constraints.txt
	$(VENV)/bin/pip install --quiet -c $(VENV)/lock-constraints.txt -e '.[dev]' -e ./dev
	touch $@

dynamodb-local: venv
	$(VENV)/bin/python -m replicator_dev.local.dynamodb_local install

# apt-get update runs only when something is missing, so a ready machine needs no network here.
apt-tools:
	@missing=""; \
	for pair in $(APT_TOOLS); do \
	  command -v "$${pair##*:}" >/dev/null 2>&1 || missing="$$missing $${pair%%:*}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

deps: venv dynamodb-local apt-tools

test: deps lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# make demo REGIONS=3: an active-active mesh of three local regions instead of one-way replication.
REGIONS ?= 2
demo: deps
	$(VENV)/bin/replicator demo --regions $(REGIONS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# bench: lag, saturated throughput and CPU/RSS per record, replicator vs the Lambda-handler baseline,
# on two DynamoDB Local processes (a few minutes; JSON in bench/results/). bench-smoke: about a minute.
bench: deps
	$(VENV)/bin/python bench/run.py

bench-smoke: deps
	$(VENV)/bin/python bench/run.py --smoke

# lock: re-resolve requirements.lock (every runtime dependency, exact versions and hashes, for any
# platform) from pyproject.toml's ranges; the Dockerfile and lambda-package install from it.
lock: venv
	$(VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
	  --upgrade --quiet --output-file requirements.lock

# bench-scale: 1,000 shards rolling over (accelerated), 3 leased workers on DynamoDB Local, ~10 minutes:
# RSS, idle cost, lease-table size, rebalance time, lag (JSON in bench/results/scale-*.json).
# SCALE_ARGS='--reader {"max_idle_poll_interval_s": 4}' tries another idle-polling setting.
SCALE_ARGS ?=
bench-scale: deps
	$(VENV)/bin/python bench/scale.py $(SCALE_ARGS)

# lambda-package: dist/lambda.zip for deploy/lambda/template.yaml (replicator + manylinux wheels of its
# runtime dependencies, pinned by requirements.lock; deterministic). LAMBDA_ARCH=arm64 for Graviton;
# LAMBDA_PYTHON=3.12 for the python3.12 runtime (pycs need that interpreter: LAMBDA_PYTHON_BIN, or
# LAMBDA_ARGS=--no-compile); LAMBDA_ARGS=--prune-botocore-data for the smaller zip.
LAMBDA_ARCH ?= x86_64
LAMBDA_PYTHON ?= 3.11
LAMBDA_PYTHON_BIN ?= $(VENV)/bin/python
LAMBDA_ARGS ?=
LAMBDA_ZIP ?= dist/lambda.zip
lambda-package: venv
	$(LAMBDA_PYTHON_BIN) scripts/build_lambda_zip.py --output $(LAMBDA_ZIP) --arch $(LAMBDA_ARCH) \
	  --python-version $(LAMBDA_PYTHON) $(LAMBDA_ARGS)

# docs/configuration.md is rendered from the config model; a unit test fails when it is stale.
docs: venv
	$(VENV)/bin/python -m replicator_dev.config_reference --write
