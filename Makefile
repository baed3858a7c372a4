# One set of gates for people and CI. `make demo` then `make test` work on a fresh machine:
# both create the venv and make sure a redis-server binary exists first.
# The container and Prometheus checks need more than a fresh machine has (a container engine,
# Debian's prometheus): they have their own targets, which CI runs (.ci/run).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The image's tag (compose and Kubernetes use this one) and, if set, the base of both stages.
IMAGE ?= runsteps:0.3.0
BASE ?=
export IMAGE BASE

.PHONY: install lock redis chromium schema-js demo test test-fast check lint types bench \
	image image-test ops-test testcontainers-test phoenix-test

# Every dependency from the hash-checked lock, then the project itself (editable, no deps).
$(VENV)/.installed: pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes -r requirements-dev.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

install: $(VENV)/.installed

# Re-resolve both locks from pyproject.toml (UPGRADE=1: newest allowed releases too). The
# image's lock holds the `otel` extra: one image runs `worker` and `export-otel`.
lock: install
	$(VENV)/bin/uv pip compile pyproject.toml --extra otel --universal --python-version 3.11 \
		--generate-hashes --quiet $(if $(UPGRADE),--upgrade) -o requirements.lock
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
		--generate-hashes --quiet $(if $(UPGRADE),--upgrade) -o requirements-dev.lock

redis:
	@bash .ci/ensure-redis

chromium:
	@bash .ci/ensure-chromium

# ajv for the schema conformance test (tests/integration/test_schema_conformance.py): Node.js
# validates the exported JSON Schemas too, with the exact packages of tests/schema_js's lock.
SCHEMA_JS := tests/schema_js/node_modules/.package-lock.json
$(SCHEMA_JS): tests/schema_js/package.json tests/schema_js/package-lock.json
	@bash .ci/ensure-node
	cd tests/schema_js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

schema-js: $(SCHEMA_JS)

demo: install redis
	$(VENV)/bin/runsteps demo

test: install redis chromium schema-js
	$(PY) -m pytest

# The edit-test loop: unit and contract tests, no servers (seconds).
test-fast: install
	$(PY) -m pytest -q tests/unit tests/contract

lint: install
	$(VENV)/bin/ruff check service contracts tests bench deploy
	$(VENV)/bin/ruff format --check service contracts tests bench deploy

types: install
	$(VENV)/bin/mypy

check: lint types test

bench: install redis
	$(PY) -m bench

# The worker image (docker or podman, whichever answers) and its SBOM, build/sbom.cdx.json.
image: install
	@bash .ci/image

# Build, then run the image for real: smoke test, compose stack, Kubernetes manifests.
image-test: image redis
	$(PY) -m pytest -m container tests/container

# Alert rules under promtool, and a real Prometheus scraping a worker (Debian's prometheus).
ops-test: install redis
	$(PY) -m pytest -m prometheus tests/ops

# The integration suite against a testcontainers Redis served by a podman socket.
testcontainers-test: install schema-js
	@bash .ci/testcontainers-test

# A real Phoenix (arize-phoenix, pinned) in a venv of its own: its dependencies are not ours.
PHOENIX_VENV := .venv-phoenix
PHOENIX_VERSION ?= 20.26.1
$(PHOENIX_VENV)/.installed:
	$(PYTHON) -m venv $(PHOENIX_VENV)
	$(PHOENIX_VENV)/bin/python -m pip install -q --upgrade pip
	$(PHOENIX_VENV)/bin/python -m pip install -q "arize-phoenix==$(PHOENIX_VERSION)"
	touch $@

# Recorded streams through a worker and `export-otel` into a real Phoenix, read back through
# its API; the trace's screenshot (headless Chromium) lands in docs/phoenix-trace.png.
phoenix-test: install redis chromium $(PHOENIX_VENV)/.installed
	RUNSTEPS_PHOENIX_PYTHON=$(PHOENIX_VENV)/bin/python $(PY) -m pytest -m phoenix tests/phoenix
