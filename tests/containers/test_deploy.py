"""`make deploy-integrate`: a day across the storage project and three role projects.

While scripts/deploy-integrate runs, every container of its projects is looked at: each role's
containers sit on the storage network alone, as partners that share nothing but buckets.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Longest the script may go without printing a line, and longest in all (a loaded machine).
QUIET_S = 300
BOUND_S = 1800


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True, timeout=120).stdout


def test_deploy_integrate_is_shellcheck_clean():
    # No Docker needed: part of the ordinary suite.
    shellcheck = Path(sys.executable).parent / "shellcheck"
    result = subprocess.run(
        [str(shellcheck), "-x", "scripts/deploy-integrate"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.container
def test_deploy_integrate_checks_every_origin_of_both_servers(tmp_path):
    prefix = f"prio-deploy-test-{os.getpid()}"
    report = tmp_path / "report.html"
    env = {**os.environ, "COMPOSE_PROJECT_NAME": prefix}
    proc = subprocess.Popen(
        [str(ROOT / "scripts/deploy-integrate"), "--report", str(report)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    chunks: list[bytes] = []
    fd = proc.stdout.fileno()
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(fd, 65536), b"")))
    reader.start()
    networks: dict[str, str] = {}  # container name -> its networks
    start = last = time.monotonic()
    seen = 0
    try:
        while proc.poll() is None:
            now = time.monotonic()
            if len(chunks) != seen:
                seen, last = len(chunks), now
            assert now - last < QUIET_S, b"".join(chunks).decode()[-5000:]
            assert now - start < BOUND_S, b"".join(chunks).decode()[-5000:]
            listing = _docker("ps", "--filter", f"name=^{prefix}-", "--format", "{{.Names}} {{.Networks}}")
            for line in listing.splitlines():
                name, _, attached = line.partition(" ")
                networks[name] = attached
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(120)
        reader.join(60)
    output = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, output[-8000:]

    # Both servers' results, loaded by the admin, match every origin's planted count.
    matched = re.findall(r"^all (\d+) origin counts of 8 metrics match$", output, re.M)
    assert len(matched) == 2 and int(matched[0]) > 19000, output[-8000:]
    assert "every origin's count is right" in output
    for server in "AB":
        assert re.search(rf"process {server}: summary: 16 batches: 16 published, 0 FAILED", output), output[
            -8000:
        ]
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>") and "content.blocking_blocked" in page

    # Four projects, each role's containers on the storage network only.
    projects = {name.split("_", 1)[0] for name in networks}
    roles = ("storage", "server-a", "server-b", "admin")
    assert projects == {f"{prefix}-{role}" for role in roles}, networks
    assert set(networks.values()) == {prefix}, networks
    assert any("server-a_process" in name for name in networks) and any(
        "server-b_process" in name for name in networks
    )

    # Everything it started is gone.
    assert _docker("ps", "-aq", "--filter", f"name=^{prefix}-") == ""
    assert _docker("volume", "ls", "-q", "--filter", f"name=^{prefix}-") == ""
    assert _docker("network", "ls", "-q", "--filter", f"name=^{prefix}$") == ""
