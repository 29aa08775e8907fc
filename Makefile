# Orthanc AI node. `make demo` sets everything up and shows a result; `make test` runs the tests.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
AI_NODE := $(VENV)/bin/ai-node
STUDY ?= ct
# Debian 12 packages the node needs: Orthanc with its Python and DICOMweb plugins, DCMTK,
# the sample data (a head CT and a T1 brain MR), venv, iproute2 (`ss` names what holds a busy
# port), PostgreSQL (the job database for many workers; its tests start a throwaway cluster)
# with orthanc-postgresql (several Orthancs of a cluster share one index and storage),
# Chromium (the browser tests drive OHIF in it, headless, through Playwright), PixelMed with a
# JRE (the second SR validator), DejaVu fonts (text burned into secondary captures) and gcc
# (builds, once, the library Orthanc's HTTPS needs on Debian 12: node/orthanc/civetweb_tls.py).
APT_PACKAGES := orthanc orthanc-python orthanc-dicomweb dcmtk invesalius-examples mricron-data \
                python3-venv python3-dev postgresql orthanc-postgresql iproute2 chromium \
                pixelmed-apps default-jre-headless fonts-dejavu-core gcc
# Tools that may come from elsewhere than Debian (e.g. NodeSource's nodejs bundles npm and
# conflicts with Debian's npm package): installed from Debian only when the command is missing.
APT_COMMANDS := npm:npm
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system-packages venv demo cluster-demo run start stop users viewer test test-unit test-integration bench bench-pipelines lint clean

setup: system-packages venv

system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done; \
	  for pair in $(APT_COMMANDS); do command -v $${pair%%:*} >/dev/null || echo $${pair#*:}; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@# Debian's orthanc package starts its own service on 8042/4242; the node runs its own Orthanc.
	@if command -v systemctl >/dev/null && systemctl is-active --quiet orthanc 2>/dev/null; then \
	  echo "Stopping and disabling Debian's packaged Orthanc service (it holds ports 8042/4242;"; \
	  echo "the AI node runs its own Orthanc with its own configuration in ./var)."; \
	  $(SUDO) systemctl disable --now orthanc; \
	fi

venv: $(VENV)/.installed

# torch first, pinned: a plain `torch` requirement would pull a multi-GB CUDA build.
$(VENV)/.installed: requirements.txt requirements-dev.txt setup.cfg
	/usr/bin/python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

demo: setup
	$(AI_NODE) demo --study $(STUDY)

# A multi-host node on this machine (a throwaway PostgreSQL, two Orthancs, three workers, no
# shared files), a burst of CT studies, studies per minute and where each went: docs/scaling.md.
cluster-demo: setup
	$(PY) -m node.devtools.cluster_demo --studies $(or $(STUDIES),12)

run: setup
	$(AI_NODE) run

start: setup
	$(AI_NODE) start

stop:
	@if [ -x $(AI_NODE) ]; then $(AI_NODE) stop; else echo "The node is not installed."; fi

# The admin password is printed once, on the first start; it stays in var/credentials.json.
users: setup
	$(AI_NODE) users list

# OHIF on the running node's studies: fetched once with npm into .cache/ohif, DICOMweb proxied.
VIEWER_PORT ?= 3000
viewer: setup
	$(PY) -m node.devtools.viewer --port $(VIEWER_PORT)

test: setup
	$(PY) -m pytest -ra

test-unit: setup
	$(PY) -m pytest -ra tests/unit

test-integration: setup
	$(PY) -m pytest -ra tests/integration

# docs/benchmarks.md: a CT job end to end through a real node, then the result path at the size
# of a whole-body model (300 x 512^2 CT, 100 and 5 segments) against highdicom and the floor
bench: setup
	$(PY) bench/cluster.py --studies 8 --write docs/benchmarks.md
	$(PY) bench/e2e.py --runs 3 --write docs/benchmarks.md
	$(PY) bench/results.py --runs 3 --write docs/benchmarks.md

bench-pipelines: setup
	$(PY) bench/pipelines.py --runs 3 --write docs/benchmarks-pipelines.md

# ruff (style, imports), mypy (types) and import-linter (the rooms' layers, pyproject.toml)
lint: setup
	$(VENV)/bin/ruff check node pipelines plugins tests bench
	$(VENV)/bin/mypy node pipelines
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf $(VENV) .cache
