# Developer entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Tests that take seconds each (scripts, big batches), a local Spark or a browser.
FAST := not slow and not spark and not browser

.PHONY: setup oracle lint test test-fast demo demo-gcs bench lock build clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@echo "Installing the locked requirements into $(VENV) (minutes on a cold pip cache), each named as it comes:"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --progress-bar off -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

# The real libprio (PyPI prio==0.2, built from source) for the interop tests;
# does nothing when it is already installed.
oracle: setup
	@scripts/install-oracle $(BIN)/python

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

# Everything: lint, types and the whole suite on two workers.
test: lint oracle
	$(BIN)/pytest

# The edit loop: the suite without slow, Spark and browser tests.
test-fast: oracle
	$(BIN)/pytest -m "$(FAST)"

# The main job end to end: generate clients, run servers A and B, check the counts.
demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" bin/integrate

demo-gcs: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" bin/integrate --gcs-emulator

bench: setup oracle
	$(BIN)/python benchmarks/engine.py
	$(BIN)/python benchmarks/chain.py

LOCK := $(BIN)/pip-compile -q --generate-hashes --strip-extras --no-emit-index-url --no-emit-find-links --allow-unsafe

lock: setup
	$(LOCK) -o requirements.txt requirements.in
	$(LOCK) -o requirements-dev.txt requirements-dev.in

build:
	docker compose build

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache
