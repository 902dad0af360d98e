"""Shared fixtures: the test vectors made by the real libprio, read in place."""

from __future__ import annotations

import os

import pytest

from vectors import VECTORS


def pytest_report_header(config):
    return f"test vectors: {VECTORS}"


@pytest.fixture(scope="session")
def libprio():
    """The real libprio C library (PyPI prio==0.2), the interop oracle.

    Outside CI it may be missing (the tests then skip and say how to install it);
    in CI a missing oracle fails the run.
    """
    try:
        from prio import libprio as oracle
    except ImportError:
        message = "libprio oracle (PyPI prio==0.2) is not installed: run `make oracle`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    oracle.Prio_init()
    return oracle


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_emulator():
    """A GCS API server (gcp-storage-emulator) on 127.0.0.1 for the whole session.

    Yields its URL; tests set STORAGE_EMULATOR_HOST to it and use the real
    google-cloud-storage client.
    """
    import shutil
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    executable = shutil.which("gcp-storage-emulator") or str(Path(sys.executable).parent / "gcp-storage-emulator")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [executable, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("the GCS API server did not start")
            time.sleep(0.05)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def gcs(gcs_emulator, monkeypatch):
    """STORAGE_EMULATOR_HOST set for this test, and a fresh bucket name maker."""
    import uuid

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
