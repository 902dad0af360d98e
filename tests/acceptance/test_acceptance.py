"""Operators' scripts written for the original prio-processor, run against this project's `prio`.

cli_integration.sh follows the original's command line integration flow and
batched_*.sh its batched-processing example; both must publish the right sums.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests_support import prio_output, script_env

HERE = Path(__file__).resolve().parent


def _prio(*args: str) -> dict:
    return json.loads(prio_output(*args))


def _published(path: Path) -> dict:
    lines = path.read_text().splitlines()
    assert len(lines) == 1, lines
    return json.loads(lines[0])


@pytest.mark.slow
def test_cli_integration_flow(tmp_path):
    result = subprocess.run(
        [str(HERE / "cli_integration.sh"), str(tmp_path)],
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    for server in ("server_a", "server_b"):
        record = _published(tmp_path / "working" / server / "processed" / "data.ndjson")
        assert record["payload"] == [5, 4, 3, 2, 1]
        assert (record["error"], record["total"]) == (0, 5)
    # Every folder holds exactly the files the original's scripts expect, nothing beside them.
    for folder in (tmp_path / "working").rglob("*"):
        if folder.is_file():
            assert folder.name == "data.ndjson", folder


@pytest.mark.slow
def test_batched_processing_flow(tmp_path):
    keys = {s: _prio("keygen") for s in "AB"}
    seed = _prio("shared-seed")["shared_seed"]
    store = tmp_path / "store"
    common = {"N_DATA": "3", "BATCH_ID": "test", "STORE": str(store)}
    client = tmp_path / "client"
    client.mkdir()
    result = subprocess.run(
        [str(HERE / "batched_client.sh")],
        env=script_env(
            **common,
            PUBLIC_KEY_HEX_INTERNAL=keys["A"]["public_key"],
            PUBLIC_KEY_HEX_EXTERNAL=keys["B"]["public_key"],
            BUCKET_SERVER_A="server-a",
            BUCKET_SERVER_B="server-b",
            WORKDIR=str(client),
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    servers = {}
    for s, own, other in (("A", "server-a", "server-b"), ("B", "server-b", "server-a")):
        peer = "B" if s == "A" else "A"
        workdir = tmp_path / f"work-{s}"
        workdir.mkdir()
        servers[s] = subprocess.Popen(
            [str(HERE / "batched_server.sh")],
            env=script_env(
                **common,
                SERVER_ID=s,
                SHARED_SECRET=seed,
                PRIVATE_KEY_HEX=keys[s]["private_key"],
                PUBLIC_KEY_HEX_INTERNAL=keys[s]["public_key"],
                PUBLIC_KEY_HEX_EXTERNAL=keys[peer]["public_key"],
                BUCKET_INTERNAL=own,
                BUCKET_EXTERNAL=other,
                WORKDIR=str(workdir),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    try:
        outputs = {s: proc.communicate(timeout=300) for s, proc in servers.items()}
    finally:
        for proc in servers.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    for s, proc in servers.items():
        assert proc.returncode == 0, "".join(outputs[s])[-3000:]
    expected = {"part-0.ndjson": [3, 2, 1], "part-1.ndjson": [4, 2, 4], "part-2.ndjson": [7, 3, 1]}
    for bucket in ("server-a", "server-b"):
        processed = store / bucket / "processed"
        assert sorted(p.name for p in processed.iterdir()) == ["_SUCCESS", *expected]
        for name, payload in expected.items():
            assert _published(processed / name)["payload"] == payload
