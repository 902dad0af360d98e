# prio-processor: the `prio` command line and the bin/ scripts of one server.
FROM python:3.11-slim-bookworm AS base
RUN useradd --create-home --home-dir /app --uid 10001 app
WORKDIR /app
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt
COPY setup.py README.md ./
COPY prio_processor ./prio_processor
COPY bin ./bin
COPY config ./config
RUN pip install --no-cache-dir --no-deps -e .
USER app
CMD ["bin/process"]

# Development: tests, the GCS API server and the interop oracle's toolchain.
FROM base AS dev
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends make gcc libc6-dev libnss3-dev libmsgpack-dev \
    && rm -rf /var/lib/apt/lists/*
COPY requirements-dev.txt pytest.ini Makefile ./
RUN pip install --no-cache-dir -r requirements-dev.txt
COPY scripts ./scripts
COPY tests ./tests
COPY benchmarks ./benchmarks
RUN scripts/install-oracle python
USER app
CMD ["bin/integrate", "--gcs-emulator"]
