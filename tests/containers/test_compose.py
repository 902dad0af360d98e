"""`make compose-integrate`: both servers in their own containers against a GCS API server
(or, with STORAGE=mixed, server B's buckets on an S3 API server container).

While scripts/compose-integrate runs, every container of its compose project is inspected as
it runs; neither that, the run's output, the images' history nor their layers may hold a
private key or the shared secret.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ("prio-processor:latest", "prio-processor:dev")
# A loaded 2-core machine: Spark sessions take long to start.
DEADLINE_S = 2400


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True, timeout=600).stdout


def _secrets(keys: Path) -> list[bytes]:
    """The values to look for: both private keys (either case), the shared secret and the S3 keys."""
    # The S3 users' secret keys, written by the S3 API server of STORAGE=mixed (else empty).
    s3_keys = (path.read_text().strip().encode() for path in sorted(keys.glob("s3/*.secret")))
    values = [s3_key for s3_key in s3_keys if s3_key]
    for name in ("server-a.key", "server-b.key"):
        key = (keys / name).read_text().strip()
        assert len(key) == 64
        values += [key.upper().encode(), key.lower().encode()]
    seed = (keys / "shared-secret").read_text().strip()
    assert len(seed) == 24
    return [*values, seed.encode()]


def _found(data: bytes, secrets: list[bytes]) -> list[bytes]:
    return [s for s in secrets if s in data]


def _run_watched(engine: str, storage: str, keys: Path) -> tuple[str, dict[str, str]]:
    """Run scripts/compose-integrate; its output, and `docker inspect` of each container seen running."""
    project = f"prio-test-{engine}-{storage}-{os.getpid()}"
    env = {**os.environ, "COMPOSE_PROJECT_NAME": project}
    command = [str(ROOT / "scripts/compose-integrate"), "--engine", engine, "--storage", storage,
               "--keys", str(keys)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    stdout = proc.stdout
    assert stdout is not None
    chunks: list[bytes] = []
    fd = stdout.fileno()
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(fd, 65536), b"")))
    reader.start()
    inspected: dict[str, str] = {}
    label = f"label=com.docker.compose.project={project}"
    deadline = time.monotonic() + DEADLINE_S
    try:
        while proc.poll() is None:
            assert time.monotonic() < deadline, "compose-integrate did not finish in time"
            for container in _docker("ps", "-q", "--no-trunc", "--filter", label).split():
                try:
                    state = json.loads(_docker("inspect", container))[0]
                except subprocess.CalledProcessError:
                    continue  # gone between the listing and the inspection
                service = state["Config"]["Labels"]["com.docker.compose.service"]
                if state["State"]["Running"]:
                    inspected[f"{service} {container[:12]}"] = json.dumps(state)
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(60)
        reader.join(60)
    output = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, output[-8000:]
    # Everything it started is gone.
    assert _docker("ps", "-aq", "--filter", label) == ""
    assert _docker("network", "ls", "-q", "--filter", label) == ""
    assert _docker("volume", "ls", "-q", "--filter", label) == ""
    return output, inspected


def _check(engine: str, tmp_path: Path, storage: str = "gcs") -> tuple[list[bytes], set[str]]:
    """Run compose-integrate, check its result and that no secret leaked; the secrets, the services."""
    keys = tmp_path / "keys"
    output, inspected = _run_watched(engine, storage, keys)
    assert "both servers published the expected counts" in output, output[-8000:]
    # The check's count lines: the kept batches of config/test-small.json (test-2 has no data).
    counted = [line.split(":")[0] for line in output.splitlines() if line.startswith("batch ")]
    assert counted == ["batch test-0", "batch test-1"], output[-8000:]
    # Each server's summary names where it published.
    bucket_b = "s3://b-private/" if storage == "mixed" else "gs://b-private/"
    for server, bucket in (("A", "gs://a-private/"), ("B", bucket_b)):
        summary = f"process {server}: summary: batch test-0: 99 valid"
        lines = [line for line in output.splitlines() if summary in line]
        assert len(lines) == 1 and f"published {bucket}" in lines[0], (server, lines)
    services = {name.split()[0] for name in inspected}
    assert {"storage", "server-a", "server-b"} <= services, services
    # Keys on the host: uid 10001's, readable by it alone.
    for name in ("server-a.key", "server-b.key", "shared-secret"):
        stat = (keys / name).stat()
        assert (stat.st_uid, stat.st_mode & 0o777) == (10001, 0o400), name
    secrets = _secrets(keys)
    assert not _found(output.encode(), secrets), "a secret in compose-integrate's output"
    for name, state in inspected.items():
        assert not _found(state.encode(), secrets), f"a secret in docker inspect of {name}"
    return secrets, services


def test_compose_integrate_cli_and_no_secret_in_containers_history_or_layers(tmp_path):
    secrets, _ = _check("cli", tmp_path)
    for image in IMAGES:
        history = _docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image)
        assert "useradd --uid 10001" in history  # the whole history, not an empty answer
        assert not _found(history.encode(), secrets), f"a secret in the history of {image}"
    # Every layer of both images, streamed (docker save) and searched across chunk edges.
    save = subprocess.Popen(["docker", "save", *IMAGES], stdout=subprocess.PIPE)
    assert save.stdout is not None
    tail, total, found = b"", 0, []
    while chunk := save.stdout.read(16 << 20):
        window = tail + chunk
        found += _found(window, secrets)
        tail, total = window[-100:], total + len(chunk)
    assert save.wait(600) == 0
    assert total > 500 << 20, total
    assert not found, "a secret in the images' layers"


def test_compose_integrate_spark(tmp_path):
    _check("spark", tmp_path)


def test_compose_integrate_mixed_with_server_b_on_an_s3_server(tmp_path):
    secrets, services = _check("cli", tmp_path, storage="mixed")
    assert "s3" in services, services
    # B's organisation's two users: their secret keys were among the values searched for.
    keys = sorted(path.name for path in (tmp_path / "keys" / "s3").glob("*.secret"))
    assert keys == ["admin.secret", "partner.secret"], keys
    assert len(secrets) == 2 + 5, len(secrets)
