# prio-processor's image: `prio`, `prio-spark` (with a Java 17 runtime), `prio-processor`
# and the bin/ scripts of one server, as a non-root user (uid 10001).
#
#   docker build --target runtime -t prio-processor:latest .
#   docker build --target dev -t prio-processor:dev .
#
# Python packages come from the hashed locks (requirements*.txt), from the package index,
# or, with --build-arg WHEELHOUSE=wheelhouse, only from that folder of the build context
# (`make wheelhouse` fills it with `pip download`): for a build that cannot reach the index.
# BASE is Debian bookworm (`scripts/base-image` makes it from Debian's mirror when no
# registry is at hand); Python, venv, Java and CA certificates are installed unless it has
# them. No BuildKit features: the classic builder builds it too.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS system
# Few steps: the classic builder commits each one. Java's alternatives link its manual
# page: its folder must exist in a slim image.
RUN packages="python3 python3-venv openjdk-17-jre-headless ca-certificates"; \
    if ! dpkg -s $packages >/dev/null 2>&1; then \
        mkdir -p /usr/share/man/man1 \
        && apt-get update \
        && apt-get install -y --no-install-recommends $packages \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --gid 10001 app && useradd --uid 10001 --gid 10001 --create-home --home-dir /app app
ENV PATH=/opt/prio-processor/bin:$PATH LANG=C.UTF-8 PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1

# The locked dependencies in a venv (Debian's Python refuses system-wide pip). First the
# build tools, so that a source archive (PySpark) builds without fetching anything.
FROM system AS deps
WORKDIR /build
ARG WHEELHOUSE=
# Without a wheelhouse this copies a lock file that nothing reads (COPY needs a source).
COPY ${WHEELHOUSE:-requirements.txt} wheelhouse/
COPY requirements-build.txt requirements.txt requirements-spark.txt ./
RUN if [ -n "$WHEELHOUSE" ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/build/wheelhouse; fi \
    && python3 -m venv /opt/prio-processor \
    && pip install --require-hashes -r requirements-build.txt \
    && pip install --require-hashes --no-build-isolation -r requirements.txt -r requirements-spark.txt

# The project as a wheel: a code change rebuilds from here on only.
FROM deps AS wheel
COPY pyproject.toml README.md LICENSE ./
COPY prio_processor ./prio_processor
RUN pip wheel --no-deps --no-build-isolation --wheel-dir dist .

# Production: what a server's or the admin's daily job runs; no compilers, no test tools.
FROM system AS runtime
COPY --from=deps /opt/prio-processor /opt/prio-processor
COPY --from=wheel /build/dist /tmp/dist
RUN pip install --no-deps --no-index /tmp/dist/*.whl && rm -rf /tmp/dist
WORKDIR /app
COPY bin ./bin
COPY config ./config
# config/test-small.json links to the package's copy (.dockerignore leaves the link out).
COPY prio_processor/data/test-small.json ./config/
USER 10001:10001
CMD ["bin/process"]

# Development: the runtime plus the test tools and the GCS API server the tests (and
# `make compose-integrate`'s storage service, data in /srv/storage) use.
FROM deps AS dev
ARG WHEELHOUSE=
COPY requirements-dev.txt ./
RUN if [ -n "$WHEELHOUSE" ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/build/wheelhouse; fi \
    && pip install --require-hashes --no-build-isolation -r requirements-dev.txt
COPY --from=wheel /build/dist /tmp/dist
RUN pip install --no-deps --no-index /tmp/dist/*.whl && rm -rf /tmp/dist \
    && mkdir /srv/storage && chown 10001:10001 /srv/storage
WORKDIR /app
COPY bin ./bin
COPY config ./config
# config/test-small.json links to the package's copy (.dockerignore leaves the link out).
COPY prio_processor/data/test-small.json ./config/
COPY tests ./tests
COPY benchmarks ./benchmarks
COPY scripts ./scripts
ENV STORAGE_BASE=/srv/storage
USER 10001:10001
CMD ["bin/integrate", "--gcs-emulator"]
