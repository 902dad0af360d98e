"""bin/ingest, bin/insert and bin/integrate-firefox for real: local folders and a GCS API server."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "bin"
VENV_BIN = Path(sys.executable).parent
PING = json.loads((Path(__file__).parent / "data" / "fx-69.0a1.json").read_text())
DATE = "2019-06-26"
VARIABLES = {
    "APP_NAME",
    "SUBMISSION_DATE",
    "BUCKET_PREFIX",
    "DATA_CONFIG",
    "PUBLIC_KEY_HEX_INTERNAL",
    "PUBLIC_KEY_HEX_EXTERNAL",
    "BUCKET_INTERNAL_PRIVATE",
    "BUCKET_EXTERNAL_PRIVATE",
    "PING_INPUT",
    "PING_SOURCE",
    "STAGING_OUTPUT",
    "DATABASE",
    "DATASET",
    "TABLE",
    "ORIGIN_CONFIG",
    "STORAGE_EMULATOR_HOST",
}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def _keys() -> tuple[str, str]:
    out = [
        json.loads(
            subprocess.run(
                [str(VENV_BIN / "prio"), "keygen"], check=True, capture_output=True, text=True
            ).stdout
        )["public_key"]
        for _ in range(2)
    ]
    return out[0], out[1]


def test_shellcheck_clean():
    scripts = [BIN / n for n in ("ingest", "insert", "integrate-firefox")]
    result = subprocess.run(
        [str(VENV_BIN / "shellcheck"), "-x", *map(str, scripts)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_missing_variables_are_named(tmp_path):
    for script, needed in (("ingest", "PING_INPUT"), ("insert", "BUCKET_INTERNAL_PRIVATE")):
        result = subprocess.run([str(BIN / script)], env=_env(APP_NAME="x"), capture_output=True, text=True)
        assert result.returncode == 2
        assert needed in result.stderr and "missing required variable" in result.stderr


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
    bucket_a, bucket_b = gcs(), gcs()
    key_a, key_b = _keys()
    env = _env(
        APP_NAME="origin-telemetry",
        SUBMISSION_DATE=DATE,
        DATA_CONFIG=str(ROOT / "config" / "content.json"),
        PUBLIC_KEY_HEX_INTERNAL=key_a.lower(),
        PUBLIC_KEY_HEX_EXTERNAL=key_b,
        BUCKET_INTERNAL_PRIVATE=f"gs://{bucket_a}",
        BUCKET_EXTERNAL_PRIVATE=f"gs://{bucket_b}",
        PING_INPUT=str(tmp_path / "sink"),
        STORAGE_EMULATOR_HOST=gcs_emulator,
    )
    result = subprocess.run([str(BIN / "ingest")], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "12 entries written in 2 batches" in result.stdout
    for bucket, partner_key in ((bucket_a, key_b), (bucket_b, key_a)):
        raw = location(f"gs://{bucket}/data/v1/{partner_key}/origin-telemetry/{DATE}/raw/shares")
        names = sorted(name for name, _ in raw.walk())
        assert names == ["_SUCCESS"] + [
            f"batch_id=content.blocking_blocked_TESTONLY-{p}/part-00000.ndjson" for p in (0, 1)
        ]
        records = raw.join("batch_id=content.blocking_blocked_TESTONLY-0", "part-00000.ndjson").read_bytes()
        assert sorted(json.loads(line)["id"] for line in records.decode().splitlines()) == [
            str(i) for i in range(1, 7)
        ]


def test_integrate_firefox_end_to_end(tmp_path):
    report = tmp_path / "report"
    result = subprocess.run(
        [str(BIN / "integrate-firefox"), "--n-pings", "4", "--report", str(report)],
        env=_env(SUBMISSION_DATE=DATE),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count("all 19896 origin counts of 8 metrics match") == 2
    # staging: five bad lines or entries and one duplicate, listed and counted
    assert "1 duplicate ping ids dropped" in result.stdout
    assert "5 errors out of" in result.stdout
    assert "bad_base64: 1, bad_json: 1, bad_ping: 1, missing_share: 1, unknown_encoding: 1" in result.stdout
    page = (report / f"{DATE}.html").read_text()
    assert page.count('<img class="chart"') == 8


def test_insert_replaces_its_date(tmp_path):
    published = tmp_path / "a-private" / "data" / "v1" / "KEYB" / "app" / DATE / "processed" / "publish"
    for part, n in ((0, 2046), (1, 441)):
        folder = published / f"batch_id=content.blocking_blocked-{part}"
        folder.mkdir(parents=True)
        record = {
            "id": f"r{part}",
            "timestamp": f"{DATE}T01:00:00",
            "payload": [1] * n,
            "error": 0,
            "total": 3,
        }
        (folder / "publish.ndjson").write_text(json.dumps(record) + "\n")
    db = tmp_path / "results.sqlite"
    env = _env(
        APP_NAME="app",
        SUBMISSION_DATE=DATE,
        DATA_CONFIG=str(ROOT / "config" / "content.json"),
        BUCKET_INTERNAL_PRIVATE=str(tmp_path / "a-private"),
        PUBLIC_KEY_HEX_EXTERNAL="keyb",
        DATABASE=str(db),
    )
    for _ in range(2):
        result = subprocess.run([str(BIN / "insert")], env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*), SUM(aggregate) FROM content_blocking").fetchone() == (
            2487,
            2487,
        )
