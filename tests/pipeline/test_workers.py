"""Stages in worker processes write byte for byte what one process writes, for any worker count."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prio_processor.engine import keys
from prio_processor.engine.server import Schedule
from prio_processor.pipeline import runner
from prio_processor.pipeline.workers import WorkerError, WorkerPool

from tests_support import PEER, Pair, run_server_chain, tampered_shares, vector_server, write_parts
from vectors import Case, full_chain_cases

CASES = {c.name: c for c in full_chain_cases()}
WORKER_COUNTS = (1, 2, 3)


def _outputs_by_workers(servers: dict, raw: dict[str, Path], tmp: Path, schedule: Schedule) -> list[dict]:
    return [run_server_chain(servers, raw, tmp / f"out-{w}", schedule, w) for w in WORKER_COUNTS]


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 3 records, so that a few records make many chunks across every worker."""
    monkeypatch.setattr(runner, "_chunk_size", lambda server: 3)


@pytest.mark.parametrize(
    "name, schedule",
    [
        ("prg-hashed/d_bad_input", Schedule.SEQUENTIAL),
        ("prg-hashed/d_bad_input", Schedule.FIXED),
        ("prg-hashed/d_desync", Schedule.SEQUENTIAL),
        ("prg-raw/d_bad_input", Schedule.SEQUENTIAL),
        ("prg-hashed/e_fixed_point", Schedule.FIXED),
    ],
)
def test_vector_cases_are_identical_for_any_worker_count(tmp_path, small_chunks, name, schedule):
    case: Case = CASES[name]
    servers = {s: vector_server(case, s) for s in PEER}
    raw = {}
    for s in PEER:
        raw[s] = tmp_path / "raw" / s
        write_parts(case.raw_path(s).read_text().splitlines(), raw[s], 3)
    produced = _outputs_by_workers(servers, raw, tmp_path, schedule)
    if not name.endswith("e_fixed_point"):  # the other cases reject records: their lists are compared too
        assert any(key.startswith("rejects/") and data for key, data in produced[0].items())
    for other in produced[1:]:
        assert other == produced[0]
    if schedule is Schedule.SEQUENTIAL:  # one process reproduces the original; so do the others
        accepted = {
            s: {json.loads(line)["id"] for line in case.intermediate(s, "verify2").read_text().splitlines()}
            for s in PEER
        }
        for s in PEER:
            written = b"".join(data for key, data in produced[-1].items() if key.startswith(f"{s}/verify2/"))
            assert {json.loads(line)["id"] for line in written.splitlines()} == accepted[s]


@pytest.mark.parametrize("schedule", [Schedule.SEQUENTIAL, Schedule.FIXED])
def test_generated_batch_with_bad_records_is_identical_for_any_worker_count(tmp_path, small_chunks, schedule):
    pair = Pair(23)
    servers = {"A": pair.a, "B": pair.b}
    raw = {}
    for s, lines in tampered_shares(pair, 40, seed=7).items():
        raw[s] = tmp_path / "raw" / s
        write_parts(lines, raw[s], 4)
    produced = _outputs_by_workers(servers, raw, tmp_path, schedule)
    for other in produced[1:]:
        assert other == produced[0]
    aggregates = {s: json.loads(produced[0][f"{s}/aggregate/aggregate.ndjson"]) for s in PEER}
    rejects = produced[0]["rejects/A/rejects-verify1-A.ndjson"].decode()
    assert "duplicate_id" in rejects and "bad_json" in rejects and "bad_base64" in rejects
    assert aggregates["A"]["total"] == 44
    # Packets that fail at A only are lost to both; with sequential points they also desync A.
    assert aggregates["A"]["error"] > 4


def test_a_failing_worker_stops_the_stage(tmp_path):
    pair = Pair(7)

    class Broken(runner.stages.Verify1Steps):
        def compute(self, kept, selections):
            raise ZeroDivisionError("broken on purpose")

    steps = Broken(pair.a, Schedule.FIXED, runner.Tally("verify1"))
    lines = tampered_shares(pair, 25, seed=1)["A"]
    chunks = [runner.Chunk([(k + 1, line.encode()) for k, line in enumerate(lines)], "mem")]
    with pytest.raises(WorkerError, match="broken on purpose"), WorkerPool(steps, 2) as pool:
        pool.run(chunks, lambda chunk, result: None)


def test_a_worker_that_dies_stops_the_stage():
    pair = Pair(7)

    class Dying(runner.stages.Verify1Steps):
        def open_chunk(self, items, source):
            os._exit(3)

    steps = Dying(pair.a, Schedule.FIXED, runner.Tally("verify1"))
    chunks = [runner.Chunk([(1, b"{}")], "mem")]
    with pytest.raises(WorkerError, match="exited unexpectedly"), WorkerPool(steps, 2) as pool:
        pool.run(chunks, lambda chunk, result: None)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's new parent may never reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_workers_leave_when_their_parent_is_killed(tmp_path):
    pair = Pair(63)
    shares = tmp_path / "shares.ndjson"
    lines = tampered_shares(pair, 1500, seed=3)["A"]
    shares.write_text("".join(line + "\n" for line in lines))
    env = dict(
        os.environ,
        N_DATA="63",
        BATCH_ID=pair.config.batch_id.decode(),
        SERVER_ID="A",
        PRIVATE_KEY_HEX=keys.private_key_to_hex(pair.private_a),
        SHARED_SECRET=base64.b64encode(pair.seed).decode(),
        PUBLIC_KEY_HEX_INTERNAL=keys.public_key_to_hex(pair.config.public_key_a),
        PUBLIC_KEY_HEX_EXTERNAL=keys.public_key_to_hex(pair.config.public_key_b),
    )
    command = [sys.executable, "-m", "prio_processor", "verify1", "--input", str(shares)]
    proc = subprocess.Popen(
        [*command, "--output", str(tmp_path / "out"), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: list[int] = []
    while proc.poll() is None and len(workers) < 2:
        workers = _children(proc.pid)
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert len(workers) == 2, "verify1 ended before its workers could be seen"
    deadline = time.monotonic() + 60  # a bound for a stuck worker, not a speed requirement
    while any(_running(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_running(w) for w in workers)
