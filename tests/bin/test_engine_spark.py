"""ENGINE=spark: bin/process runs every stage with prio-spark, same buckets, markers and results."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from prio_processor import integration
from prio_processor.dataconfig import Batch

from tests_support import prio_output, run_watched, script_env

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "bin"
BATCHES = [{"batch_id": "test-0", "n_data": 10}, {"batch_id": "test-1", "n_data": 3}]
N_ROWS = 8

def _server_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A whole, valid configuration of server A on local folder buckets."""
    keys = [json.loads(prio_output("keygen")) for _ in "AB"]
    config = tmp_path / "data-config.json"
    config.write_text(json.dumps(BATCHES))
    settings = {
        "APP_NAME": "test-app", "DATA_CONFIG": str(config), "SERVER_ID": "A",
        "SHARED_SECRET": "FjlvCaTrZk+jYcKuzKSt3w==", "PRIVATE_KEY_HEX": keys[0]["private_key"],
        "PUBLIC_KEY_HEX_INTERNAL": keys[0]["public_key"], "PUBLIC_KEY_HEX_EXTERNAL": keys[1]["public_key"],
        "BUCKET_INTERNAL_PRIVATE": str(tmp_path / "a-private"),
        "BUCKET_INTERNAL_SHARED": str(tmp_path / "a-shared"),
        "BUCKET_EXTERNAL_SHARED": str(tmp_path / "b-shared"), "RETRY_LIMIT": "0",
    }
    return script_env(**{**settings, **extra})


def test_spark_with_the_sequential_schedule_is_refused_up_front(tmp_path):
    env = _server_env(tmp_path, ENGINE="spark", EVALUATION_POINT="sequential", SERVER_ID="C")
    result = subprocess.run([str(BIN / "process")], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    # Reported with the other problems, before any bucket is touched.
    assert "ENGINE=spark evaluates every packet at the first draw: EVALUATION_POINT must be fixed" in (
        result.stderr)
    assert "SERVER_ID must be A or B" in result.stderr
    assert "waiting" not in result.stderr
    assert not (tmp_path / "a-private").exists()
    assert env["PRIVATE_KEY_HEX"] not in result.stderr + result.stdout


def test_spark_submit_must_name_a_command(tmp_path):
    env = _server_env(tmp_path, ENGINE="spark", SPARK_SUBMIT=str(tmp_path / "no-spark-submit"))
    result = subprocess.run([str(BIN / "process")], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "SPARK_SUBMIT names no command that can be run" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--engine", "flink"], "engine must be one of: cli, spark (--engine)"),
    (["--engine", "spark", "--storage", "s3"], "--engine spark: local folder or GCS API server buckets only"),
])
def test_integrate_refuses_engines_it_cannot_run(args, message):
    result = subprocess.run([str(BIN / "integrate"), *args], env=script_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


@pytest.mark.spark
@pytest.mark.slow
def test_integrate_on_spark_publishes_the_expected_counts(tmp_path):
    """Both servers' every stage as prio-spark jobs (local mode) against local folder buckets."""
    config = tmp_path / "data-config.json"
    config.write_text(json.dumps(BATCHES))
    # No fixed deadline (900 s ran out under load): the run goes on as long as it logs, and every
    # stage logs a progress line every PROGRESS_INTERVAL seconds, from the JVM's start on.
    result = run_watched(
        [str(BIN / "integrate"), "--engine", "spark", "--data-config", str(config), "--n-rows", str(N_ROWS),
         "--n-drop-batch", "1", "--server-b-delay", "0", "--keep"],
        env=script_env(TMPDIR=str(tmp_path), SPARK_MASTER="local[1]", PROGRESS_INTERVAL="10"))
    (tmp_path / "integrate.log").write_text(result.stderr)  # kept by pytest for a failed run
    assert result.returncode == 0, result.stderr[-4000:]
    expected = integration.expected_counts(Batch("test-0", 10), N_ROWS)
    assert f"batch test-0: {expected}" in result.stdout
    assert "both servers published the expected counts" in result.stdout
    # Each server counted the n_data + 1 client: the line prio-spark prints, as prio, for bin/process.
    assert re.search(r"process A: batch test-0: verify1: 1 errors out of 8 total", result.stderr)
    assert "batch test-1: verify1: data for test-1 does not exist, skipping" in result.stderr
    # Spark says what it does at a steady pace, without the JVM's noise.
    assert re.search(r"process A: batch test-0: verify1: server A, batch test-0: verify1: "
                     r"(starting Spark|\d+ of \d+ tasks of the running Spark stages done|Spark is planning)",
                     result.stderr)
    assert "NativeCodeLoader" not in result.stderr
    # The summary finds prio-spark's published part file.
    assert re.search(r"integrate: server A: batch test-0: 7 valid, 1 errors of 8 total \(wrong_length: 1\), "
                     r"published .*/processed/publish/batch_id=test-0/part-[^/]*\.json\n", result.stderr)

    [work] = [Path(line.rsplit("kept ", 1)[1]) for line in result.stderr.splitlines() if ": kept " in line]
    try:
        [root_a] = (work / "buckets" / "a-private").glob("test-app/v1/*/test-app/*")
        verify1 = root_a / "intermediate/internal/verify1/batch_id=test-0"
        parts = sorted(p.name for p in verify1.iterdir())
        assert "_SUCCESS" in parts
        assert all(p == "_SUCCESS" or re.fullmatch(r"part-.*\.json", p) for p in parts), parts
        records = [json.loads(line) for p in verify1.glob("part-*") for line in p.read_text().splitlines()]
        assert len(records) == N_ROWS - 1
        assert {r["prio_settings"]["evaluation_point"] for r in records} == {"fixed"}
        # The rejects of a stage: one file in the private bucket, as prio writes it.
        rejects = root_a / "rejects/verify1/batch_id=test-0/rejects-verify1-A.ndjson"
        [rejected] = [json.loads(line) for line in rejects.read_text().splitlines()]
        assert set(rejected) == {"id", "reason", "detail"} and rejected["reason"] == "wrong_length"
        [published] = [json.loads(p.read_text()) for p in
                       (root_a / "processed/publish/batch_id=test-0").glob("part-*.json")]
        assert (published["payload"], published["error"], published["total"]) == (expected, 1, N_ROWS)
    finally:
        shutil.rmtree(work)
