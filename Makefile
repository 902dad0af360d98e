# Developer entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Tests that take seconds each (scripts, big batches), a local Spark or a browser.
FAST := not slow and not spark and not browser and not container

.PHONY: setup oracle lint test test-fast demo demo-gcs bench lock build clean
.PHONY: base-image wheelhouse images runtime-image dev-image compose-integrate deploy-integrate test-containers

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

# Everything: lint, types, the whole suite on two workers, then the container tests.
test: lint oracle
	$(BIN)/pytest
	$(MAKE) test-containers

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
STORAGE ?= gcs
BUILD := DOCKER_BUILDKIT=0 docker build --build-arg WHEELHOUSE=$(WHEELHOUSE)

base-image:
	scripts/base-image

# Every locked package (sources too, and the tools that build them), checked by hash;
# downloaded again only when a lock changes.
wheelhouse: wheelhouse/.complete

wheelhouse/.complete: requirements-build.txt requirements.txt requirements-spark.txt requirements-dev.txt | setup
	$(BIN)/pip download -q --no-deps --require-hashes -d wheelhouse $(addprefix -r ,$^)
	touch $@

images: runtime-image dev-image

runtime-image: base-image $(if $(WHEELHOUSE),wheelhouse)
	$(BUILD) --target runtime -t prio-processor:latest .

dev-image: base-image $(if $(WHEELHOUSE),wheelhouse)
	$(BUILD) --target dev -t prio-processor:dev .

build: images

# Both servers in their own containers against a GCS API server (docker-compose.yml);
# STORAGE=mixed puts server B's buckets on an S3 API server container.
compose-integrate: images
	scripts/compose-integrate --engine $(ENGINE) --storage $(STORAGE)

# A day across separate compose projects, one per role (deployment/), sharing only the
# storage host's network.
deploy-integrate: images
	scripts/deploy-integrate

# The container tests, one at a time, after building the base, the wheelhouse and both
# images (each timed): image contents, compose runs and the secrets check. Without a
# Docker engine they cannot run: said so, and a failure in CI.
test-containers: setup
	scripts/test-containers

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache
