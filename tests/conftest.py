"""Shared fixtures: the libprio oracle, a GCS API server and two S3 API servers (per xdist worker)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests_support import S3Server
from vectors import VECTORS


def pytest_report_header(config: pytest.Config) -> str:
    return f"test vectors: {VECTORS}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks as slow, besides tests marked by hand, the kinds that take seconds each:
    the script tests (whole servers against buckets) and commands run in a subprocess."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        runs_subprocess = callspec is not None and callspec.params.get("runner") == "subprocess"
        if runs_subprocess or item.path.parent.name == "bin":
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def libprio() -> ModuleType:
    """The real libprio C library (PyPI prio==0.2), the interop oracle.

    `make test` builds it; a missing oracle fails the tests that need it rather than
    skipping them, so that a run without it cannot pass for a complete one.
    """
    try:
        from prio import libprio as oracle
    except ImportError:
        pytest.fail("libprio oracle (PyPI prio==0.2) is not installed: run `make oracle`")
    oracle.Prio_init()
    return oracle


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ROOT = Path(__file__).resolve().parents[1]
#: The GCS API server with object preconditions enforced (see the script), as bin/integrate starts it.
GCS_API_SERVER = [sys.executable, str(ROOT / "scripts" / "gcs_api_server.py")]
#: gcp-storage-emulator as it is: it ignores ifGenerationMatch.
PLAIN_EMULATOR = [
    shutil.which("gcp-storage-emulator") or str(Path(sys.executable).parent / "gcp-storage-emulator"),
    "start",
]


def _start_gcs_server(command: list[str]) -> tuple[subprocess.Popen[bytes], str] | None:
    """A started GCS API server and its URL, or None if it exited (its port was taken)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/", timeout=1).read()
            return proc, url
        except OSError:
            if proc.poll() is not None:
                return None
            if time.monotonic() > deadline:
                _stop(proc)
                pytest.fail("the GCS API server did not answer within 30 s")
            time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _gcs_server(command: list[str]) -> Iterator[str]:
    # Another process may take the free port between our check and the server's bind.
    started = None
    for _attempt in range(3):
        started = _start_gcs_server(command)
        if started is not None:
            break
    if started is None:
        pytest.fail("the GCS API server did not start (it exited three times)")
    proc, url = started
    yield url
    _stop(proc)


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """A GCS API server (gcp-storage-emulator behind scripts/gcs_api_server.py, which enforces
    ifGenerationMatch) on 127.0.0.1 for the whole session.

    Yields its URL; tests set STORAGE_EMULATOR_HOST to it and use the real
    google-cloud-storage client. Under pytest-xdist each worker has its own.
    """
    yield from _gcs_server(GCS_API_SERVER)


@pytest.fixture(scope="session")
def plain_gcs_emulator() -> Iterator[str]:
    """gcp-storage-emulator as it is, ignoring preconditions: a store that cannot hold a lock."""
    yield from _gcs_server(PLAIN_EMULATOR)


@pytest.fixture
def gcs(gcs_emulator: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], str]]:
    """STORAGE_EMULATOR_HOST set for this test, and a fresh bucket name maker."""
    from google.cloud import storage

    from prio_processor.storage import locations

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    locations._gcs_client.cache_clear()
    client = storage.Client()

    def bucket() -> str:
        name = f"test-{uuid.uuid4().hex[:12]}"
        client.create_bucket(name)
        return name

    yield bucket
    locations._gcs_client.cache_clear()


@pytest.fixture(scope="session")
def s3_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, S3Server]]:
    """Two organisations' S3 API servers on 127.0.0.1, "a" and "b", for the whole session
    (each xdist worker has its own), started side by side."""
    servers = {org: S3Server(org, tmp_path_factory.mktemp(f"s3-{org}")) for org in "ab"}
    try:
        for server in servers.values():
            server.wait_ready()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture
def s3(s3_servers: dict[str, S3Server], monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """PRIO_S3_CONFIG for this test: `s3(**{bucket: (org, user)})` sets it and gives a fresh key
    prefix for the test's objects (the servers live for the session)."""
    from prio_processor.storage import s3 as s3_storage

    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)

    def configure(**buckets: tuple[str, str]) -> str:
        config = {name.replace("_", "-"): s3_servers[org].entry(user)
                  for name, (org, user) in buckets.items()}
        monkeypatch.setenv("PRIO_S3_CONFIG", json.dumps(config))
        s3_storage.reset()
        return f"t-{uuid.uuid4().hex[:12]}"

    yield configure
    s3_storage.reset()
