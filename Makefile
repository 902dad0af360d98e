# Developer entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Tests that take seconds each (scripts, big batches), a local Spark or a browser.
FAST := not slow and not spark and not browser and not container

.PHONY: setup oracle lint test test-fast demo demo-gcs bench lock build clean
.PHONY: base-image wheelhouse images compose-integrate test-containers

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
	$(LOCK) -o requirements-spark.txt requirements-spark.in
	$(LOCK) --allow-unsafe -o requirements-build.txt requirements-build.in

# Images (Dockerfile): the base from Debian's mirror when the engine has none, the
# packages from the wheelhouse (WHEELHOUSE= builds from the package index instead).
# The classic builder: no BuildKit needed.
WHEELHOUSE ?= wheelhouse
ENGINE ?= cli
BUILD := DOCKER_BUILDKIT=0 docker build --build-arg WHEELHOUSE=$(WHEELHOUSE)

base-image:
	scripts/base-image

# Every locked package (sources too, and the tools that build them), checked by hash.
wheelhouse: setup
	$(BIN)/pip download -q --no-deps --require-hashes -d wheelhouse -r requirements-build.txt \
		-r requirements.txt -r requirements-spark.txt -r requirements-dev.txt

images: base-image $(if $(WHEELHOUSE),wheelhouse)
	$(BUILD) --target runtime -t prio-processor:latest .
	$(BUILD) --target dev -t prio-processor:dev .

build: images

# Both servers in their own containers against a GCS API server (docker-compose.yml).
compose-integrate: images
	scripts/compose-integrate --engine $(ENGINE)

# The container tests, one at a time: images built from the Dockerfile, compose runs of
# both engines and the secrets check (not yet part of `make test`: see the README's
# "Container image"). Without a Docker engine they cannot run: said so, and a failure in CI.
test-containers: setup
	@if ! docker info >/dev/null 2>&1 || ! command -v docker-compose >/dev/null; then \
		echo "test-containers: no Docker engine or docker-compose here: the container tests did not run"; \
		if [ -n "$$CI" ]; then exit 1; fi; \
	else \
		$(MAKE) images && $(BIN)/pytest -m container -n0 tests/containers; \
	fi

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache
