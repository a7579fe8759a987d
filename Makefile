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

.PHONY: venv deps apt-tools dynamodb-local test demo lint bench bench-smoke bench-scale lambda-package

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml dev/pyproject.toml
	$(PYTHON) -m venv --clear $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[dev]' -e ./dev
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

demo: deps
	$(VENV)/bin/replicator demo

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

# bench-scale: 1,000 shards rolling over (accelerated), 3 leased workers on DynamoDB Local, ~10 minutes:
# RSS, idle cost, lease-table size, rebalance time, lag (JSON in bench/results/scale-*.json).
# SCALE_ARGS='--reader {"max_idle_poll_interval_s": 4}' tries another idle-polling setting.
SCALE_ARGS ?=
bench-scale: deps
	$(VENV)/bin/python bench/scale.py $(SCALE_ARGS)

# lambda-package: dist/lambda.zip for deploy/lambda/template.yaml (replicator + manylinux wheels of its
# runtime dependencies, pinned to the venv's tested versions; deterministic). LAMBDA_ARCH=arm64 for Graviton.
LAMBDA_ARCH ?= x86_64
lambda-package: venv
	$(VENV)/bin/python scripts/build_lambda_zip.py --output dist/lambda.zip --arch $(LAMBDA_ARCH)
