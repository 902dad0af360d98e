"""bin/ingest, bin/insert and bin/integrate-firefox for real: local folders and a GCS API server."""

from __future__ import annotations

import base64
import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests_support import VENV_BIN, prio_output, script_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "bin"
PING = json.loads((Path(__file__).parent / "data" / "fx-69.0a1.json").read_text())
DATE = "2019-06-26"
SCRIPTS = ("ingest", "insert", "integrate-firefox")


def _keys() -> tuple[str, str]:
    return json.loads(prio_output("keygen"))["public_key"], json.loads(prio_output("keygen"))["public_key"]


def test_shellcheck_clean():
    scripts = [BIN / n for n in (*SCRIPTS, "integrate")]
    result = subprocess.run(
        [str(VENV_BIN / "shellcheck"), "-x", *map(str, scripts)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_needs_no_variables(script):
    result = subprocess.run([str(BIN / script), "--help"], env=script_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Usage: bin/" + script in result.stdout


def test_integrate_documents_and_checks_its_source():
    usage = subprocess.run(
        [str(BIN / "integrate"), "--help"], env=script_env(), capture_output=True, text=True
    )
    assert "bin/integrate --source firefox" in usage.stdout
    handed = subprocess.run(
        [str(BIN / "integrate"), "--source", "firefox", "--n-rows", "3"],
        env=script_env(),
        capture_output=True,
        text=True,
    )
    assert handed.returncode == 2 and "integrate-firefox: unknown argument: --n-rows" in handed.stderr
    bad = subprocess.run(
        [str(BIN / "integrate"), "--source=spark"], env=script_env(), capture_output=True, text=True
    )
    assert bad.returncode == 2 and "--source must be firefox or synthetic" in bad.stderr


def test_missing_and_bad_variables_are_named_at_once(tmp_path):
    for script, needed in (
        ("ingest", ("PING_INPUT", "DATA_CONFIG", "BUCKET_EXTERNAL_PRIVATE")),
        ("insert", ("BUCKET_INTERNAL_PRIVATE", "PUBLIC_KEY_HEX_EXTERNAL")),
    ):
        result = subprocess.run(
            [str(BIN / script)],
            env=script_env(APP_NAME="../x", SUBMISSION_DATE="yesterday"),
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2
        lines = result.stderr.splitlines()
        assert "missing required variable" in lines[0] and all(name in lines[0] for name in needed)
        assert any("APP_NAME must be" in line for line in lines)
        assert any("SUBMISSION_DATE must be a date" in line for line in lines)


def _sink(root: Path, n_pings: int) -> None:
    folder = root / DATE / "00" / "telemetry" / "prio" / "4"
    folder.mkdir(parents=True)
    lines = []
    for k in range(n_pings):
        ping = dict(PING, id=f"ping-{k}")
        lines.append(json.dumps({"payload": base64.b64encode(json.dumps(ping).encode()).decode()}))
    (folder / "part-0.ndjson").write_text("\n".join(lines) + "\n")


def test_ingest_hands_shares_to_gcs_buckets(gcs, gcs_emulator, tmp_path):
    from prio_processor.storage import location

    _sink(tmp_path / "sink", 2)
    sink_file = tmp_path / "sink" / DATE / "00" / "telemetry" / "prio" / "4" / "part-0.ndjson"
    with sink_file.open("a") as f:
        f.write("{not json\n")
    bucket_a, bucket_b = gcs(), gcs()
    key_a, key_b = _keys()
    env = script_env(
        APP_NAME="origin-telemetry",
        SUBMISSION_DATE=DATE,
        DATA_CONFIG=str(ROOT / "config" / "content.json"),
        PUBLIC_KEY_HEX_INTERNAL=key_a.lower(),
        PUBLIC_KEY_HEX_EXTERNAL=key_b,
        BUCKET_INTERNAL_PRIVATE=f"gs://{bucket_a}",
        BUCKET_EXTERNAL_PRIVATE=f"gs://{bucket_b}",
        PING_INPUT=str(tmp_path / "sink"),
        STORAGE_EMULATOR_HOST=gcs_emulator,
        REJECTS=f"gs://{bucket_a}/listed",
    )
    result = subprocess.run([str(BIN / "ingest")], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "12 entries written in 2 batches" in result.stderr
    assert "staging: 1 errors out of 3 total" in result.stderr
    listed = location(f"gs://{bucket_a}/listed/rejects-staging.ndjson").read_bytes().decode().splitlines()
    assert [json.loads(line)["reason"] for line in listed] == ["bad_json"]
    for bucket, partner_key in ((bucket_a, key_b), (bucket_b, key_a)):
        raw = location(f"gs://{bucket}/data/v1/{partner_key}/origin-telemetry/{DATE}/raw/shares")
        names = sorted(name for name, _ in raw.walk())
        assert names == ["_SUCCESS"] + [
            f"batch_id=content.blocking_blocked_TESTONLY-{p}/part-00000.json" for p in (0, 1)
        ]
        records = raw.join("batch_id=content.blocking_blocked_TESTONLY-0", "part-00000.json").read_bytes()
        assert sorted(json.loads(line)["id"] for line in records.decode().splitlines()) == list(range(1, 7))


def test_ingest_stages_from_bigquery_with_the_credentials_of_the_environment(tmp_path):
    """PING_SOURCE=bigquery reaches staging with the table and GOOGLE_APPLICATION_CREDENTIALS (the
    reading itself is tested against local servers in test_bigquery.py)."""
    key_a, key_b = _keys()
    base = {
        "APP_NAME": "origin-telemetry",
        "SUBMISSION_DATE": DATE,
        "DATA_CONFIG": str(ROOT / "config" / "content.json"),
        "PUBLIC_KEY_HEX_INTERNAL": key_a,
        "PUBLIC_KEY_HEX_EXTERNAL": key_b,
        "BUCKET_INTERNAL_PRIVATE": str(tmp_path / "a"),
        "BUCKET_EXTERNAL_PRIVATE": str(tmp_path / "b"),
        "PING_SOURCE": "bigquery",
    }
    missing_key = tmp_path / "no-such-key.json"
    for extra, message in (
        ({"PING_INPUT": "payload_bytes_decoded"}, "is not a BigQuery table as PROJECT.DATASET.TABLE"),
        (
            {"PING_INPUT": "p.payload_bytes_decoded.t", "GOOGLE_APPLICATION_CREDENTIALS": str(missing_key)},
            f"--credentials {missing_key}: cannot read it",
        ),
    ):
        env = script_env(**base, **extra)
        result = subprocess.run([str(BIN / "ingest")], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _two_metrics(tmp_path: Path) -> Path:
    """Two metrics of config/content.json (2046 + 441 origins each): the whole flow in CI time."""
    batches = json.loads((ROOT / "config" / "content.json").read_text())
    kept = [b for b in batches if b["batch_id"].rsplit("-", 1)[0] in METRICS]
    path = tmp_path / "two-metrics.json"
    path.write_text(json.dumps(kept))
    return path


METRICS = ("content.blocking_blocked", "content.blocking_opener_exempt_TESTONLY")


def test_integrate_source_firefox_end_to_end(tmp_path):
    """Without --report, the report goes to a folder of its own that outlives the run's temporary one."""
    result = subprocess.run(
        [
            str(BIN / "integrate"),
            "--source",
            "firefox",
            "--data-config",
            str(_two_metrics(tmp_path)),
            "--n-pings",
            "4",
            "--server-b-delay",
            "0.5",
        ],
        env=script_env(SUBMISSION_DATE=DATE, TMPDIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    (report,) = tmp_path.glob("integrate-report-*")
    assert not list(tmp_path.glob("integrate-firefox-*"))  # the temporary folder is gone
    # Both servers' results match every planted count, and the servers' rejects of the one
    # corrupted share (in content.blocking_blocked-0) are in the table.
    assert result.stdout.splitlines() == [
        "all 4974 origin counts of 2 metrics match",
        "all 4974 origin counts of 2 metrics match",
        str(report / f"{DATE}.html"),
    ]
    # staging: five bad lines or entries and one duplicate, counted
    assert "1 duplicate ping ids dropped" in result.stderr
    assert "staging: 5 errors out of 8 total" in result.stderr
    assert "rejected bad_base64: 1, bad_json: 1, bad_ping: 1, missing_share: 1, unknown_encoding: 1" in (
        result.stderr
    )
    page = (report / f"{DATE}.html").read_text()
    assert page.count('<img class="chart trend"') == len(METRICS)


def _published(private: Path, date: str, batches: dict[str, int]) -> None:
    published = private / "data" / "v1" / KEY_B / "app" / date / "processed" / "publish"
    for batch_id, n in batches.items():
        folder = published / f"batch_id={batch_id}"
        folder.mkdir(parents=True)
        record = {"id": batch_id, "timestamp": f"{date}T01:00:00", "payload": [1] * n, "error": 0, "total": 3}
        (folder / "publish.ndjson").write_text(json.dumps(record) + "\n")


KEY_B = "AB" * 32


def test_insert_replaces_its_date_and_lists_rejects_in_the_private_bucket(tmp_path):
    private = tmp_path / "a-private"
    _published(
        private,
        DATE,
        {"content.blocking_blocked-0": 2046, "content.blocking_blocked-1": 441, "unlisted-0": 3},
    )
    db = tmp_path / "results.sqlite"
    env = script_env(
        APP_NAME="app",
        SUBMISSION_DATE=DATE,
        DATA_CONFIG=str(ROOT / "config" / "content.json"),
        BUCKET_INTERNAL_PRIVATE=str(private),
        PUBLIC_KEY_HEX_EXTERNAL=KEY_B.lower(),
        DATABASE=str(db),
    )
    for _ in range(2):
        result = subprocess.run([str(BIN / "insert")], env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert "index: 1 errors out of 3 total" in result.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*), SUM(aggregate) FROM content_blocking").fetchone() == (
            2487,
            2487,
        )
    listed = private / "data" / "v1" / KEY_B / "app" / DATE / "rejects" / "index" / "rejects-index.ndjson"
    assert [json.loads(line)["batch_id"] for line in listed.read_text().splitlines()] == ["unlisted-0"]
    assert not any(
        "rejects" in p.name for p in (private / "data" / "v1" / KEY_B / "app" / DATE).rglob("processed/*")
    )


def test_a_stopped_run_stops_its_servers_and_leaves_nothing_behind(tmp_path):
    proc = subprocess.Popen(
        [
            str(BIN / "integrate-firefox"),
            "--data-config",
            str(_two_metrics(tmp_path)),
            "--n-pings",
            "3",
            "--server-b-delay",
            "60",
        ],
        env=script_env(TMPDIR=str(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stderr is not None
    try:
        server_a = None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "server A started (pid " in line:
                server_a = int(line.split("(pid ", 1)[1].split(")", 1)[0])
                break
        assert server_a is not None, "".join(lines)
        assert list(tmp_path.glob("integrate-firefox-*"))
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        assert proc.returncode == 143
        with pytest.raises(ProcessLookupError):
            os.killpg(server_a, 0)
        assert not list(tmp_path.glob("integrate-firefox-*"))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
