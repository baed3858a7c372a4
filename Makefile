# One set of gates for people and CI. `make demo` then `make test` work on a fresh machine:
# both create the venv and make sure a redis-server binary exists first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install redis chromium demo test check lint types bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

redis:
	@bash .ci/ensure-redis

chromium:
	@bash .ci/ensure-chromium

demo: install redis
	$(VENV)/bin/runsteps demo

test: install redis chromium
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check service contracts tests bench
	$(VENV)/bin/ruff format --check service contracts tests bench

types: install
	$(VENV)/bin/mypy

check: lint types test

bench: install redis
	$(PY) -m bench
