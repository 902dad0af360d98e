# Developer entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup oracle test demo demo-gcs bench lock build clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

# The real libprio (PyPI prio==0.2, built from source) for the interop tests.
oracle: setup
	scripts/install-oracle $(BIN)/python

test: setup
	$(BIN)/pytest

# The main job end to end: generate clients, run servers A and B, check the counts.
demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" bin/integrate

demo-gcs: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" bin/integrate --gcs-emulator

bench: setup oracle
	$(BIN)/python benchmarks/engine.py
	$(BIN)/python benchmarks/chain.py

lock: setup
	$(BIN)/pip-compile -q --strip-extras --no-emit-index-url --no-emit-find-links -o requirements.txt requirements.in
	$(BIN)/pip-compile -q --strip-extras --no-emit-index-url --no-emit-find-links -o requirements-dev.txt requirements-dev.in

build:
	docker compose build

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
