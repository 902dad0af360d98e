# prio-processor: the `prio` command line and the bin/ scripts of one server.
FROM python:3.11-slim-bookworm AS base
RUN useradd --create-home --home-dir /app --uid 10001 app
WORKDIR /app
# Locked dependencies first (with hashes), so that code changes reuse this layer.
COPY requirements.txt ./
RUN pip install --no-cache-dir --require-hashes -r requirements.txt
COPY pyproject.toml README.md LICENSE ./
COPY prio_processor ./prio_processor
RUN pip install --no-cache-dir --no-deps . && rm -rf build prio_processor.egg-info
COPY bin ./bin
COPY config ./config
USER app
CMD ["bin/process"]

# Development: tests, the GCS API server and the interop oracle's toolchain.
FROM base AS dev
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends make gcc libc6-dev libnss3-dev libmsgpack-dev \
    && rm -rf /var/lib/apt/lists/*
COPY requirements-dev.txt Makefile ./
RUN pip install --no-cache-dir --require-hashes -r requirements-dev.txt -r requirements.txt
COPY scripts ./scripts
RUN scripts/install-oracle python
COPY tests ./tests
COPY benchmarks ./benchmarks
USER app
CMD ["bin/integrate", "--gcs-emulator"]
