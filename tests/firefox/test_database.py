"""The results table: SQLite for real, BigQuery up to the load job it builds."""

from __future__ import annotations

import io
import json
import sqlite3
from typing import Any

import pytest
from click.testing import CliRunner

from prio_processor.firefox import database
from prio_processor.firefox.commands import entry_point


def rows(date: str, values: list[int], batch_id: str = "content.blocking_blocked") -> list[dict]:
    return [
        {
            "submission_date": date,
            "batch_id": batch_id,
            "origin": f"o{i}",
            "hash": f"h{i}",
            "index": i,
            "aggregate": v,
            "error": 1,
            "total": 9,
            "id": "rec",
            "timestamp": "2019-06-26T10:00:00",
        }
        for i, v in enumerate(values)
    ]


def test_declared_schema_and_replacing_a_date(tmp_path):
    db = str(tmp_path / "results.sqlite")
    assert database.replace_date(db, "2019-06-26", rows("2019-06-26", [1, 2, 3])) == 3
    database.replace_date(db, "2019-06-27", rows("2019-06-27", [4]))
    database.replace_date(db, "2019-06-26", rows("2019-06-26", [5, 6]))
    with sqlite3.connect(db) as conn:
        got = conn.execute(
            'SELECT submission_date, "index", aggregate FROM content_blocking ORDER BY 1, 2'
        ).fetchall()
        columns = [(c[1], c[2], c[3]) for c in conn.execute("PRAGMA table_info(content_blocking)")]
    assert got == [("2019-06-26", 0, 5), ("2019-06-26", 1, 6), ("2019-06-27", 0, 4)]
    assert columns == [(c.name, c.sqlite, int(c.required)) for c in database.SCHEMA]


def test_a_bad_row_leaves_the_date_as_it_was(tmp_path):
    db = str(tmp_path / "results.sqlite")
    database.replace_date(db, "2019-06-26", rows("2019-06-26", [1, 2]))
    broken = rows("2019-06-26", [7, 8])
    broken[1]["aggregate"] = None  # NOT NULL
    with pytest.raises(database.DatabaseError):
        database.replace_date(db, "2019-06-26", broken)
    assert [r["aggregate"] for r in database.rows_of_date(db, "2019-06-26")] == [1, 2]
    with pytest.raises(database.DatabaseError, match="submission_date"):
        database.replace_date(db, "2019-06-27", rows("2019-06-26", [1]))
    with pytest.raises(database.DatabaseError, match="table name"):
        database.replace_date(db, "2019-06-26", rows("2019-06-26", [1]), table="x; DROP TABLE y")


def test_insert_command_sqlite(tmp_path):
    indexed = tmp_path / "indexed"
    indexed.mkdir()
    (indexed / "part-00000.json").write_text(
        "".join(json.dumps(r) + "\n" for r in rows("2019-06-26", [3, 4]))
    )
    db = tmp_path / "r.sqlite"
    args = ["insert", "--input", str(indexed), "--date", "2019-06-26", "--database", str(db)]
    for _ in range(2):
        result = CliRunner().invoke(entry_point, args)
        assert result.exit_code == 0, result.output
    assert [r["aggregate"] for r in database.rows_of_date(str(db), "2019-06-26")] == [3, 4]
    wrong_date = CliRunner().invoke(entry_point, args[:4] + ["2019-06-27", *args[5:]])
    assert wrong_date.exit_code == 2 and "submission_date 2019-06-27" in wrong_date.output


def _indexed(tmp_path, records: list[dict]) -> str:
    indexed = tmp_path / "indexed"
    indexed.mkdir(exist_ok=True)
    (indexed / "part-00000.json").write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(indexed)


@pytest.mark.parametrize(("value", "shown"), [(2**63, str(2**63)), (-1, "-1"), (2**70, str(2**70))])
@pytest.mark.parametrize("column", ["aggregate", "error", "total"])
def test_insert_refuses_a_count_outside_int64_naming_the_batch(tmp_path, column, value, shown):
    records = rows("2019-06-26", [3, 4])
    records[1][column] = value
    db = tmp_path / "r.sqlite"
    args = ["insert", "--input", _indexed(tmp_path, records), "--date", "2019-06-26", "--database", str(db)]
    result = CliRunner().invoke(entry_point, args)
    assert result.exit_code == 2 and result.exception is not None and isinstance(result.exception, SystemExit)
    lines = result.output.splitlines()
    assert len(lines) == 1 and "content.blocking_blocked" in lines[0] and column in lines[0]
    assert shown in lines[0] and "0..2^63-1" in lines[0]
    assert not db.exists() or database.rows_of_date(str(db), "2019-06-26") == []


def test_insert_takes_the_largest_count(tmp_path):
    db = tmp_path / "r.sqlite"
    records = rows("2019-06-26", [database.MAX_COUNT, 0])
    args = ["insert", "--input", _indexed(tmp_path, records), "--date", "2019-06-26", "--database", str(db)]
    assert CliRunner().invoke(entry_point, args).exit_code == 0
    assert [r["aggregate"] for r in database.rows_of_date(str(db), "2019-06-26")] == [database.MAX_COUNT, 0]


def _no_google_credentials(monkeypatch, tmp_path) -> None:
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no gcloud configuration either


def test_insert_into_bigquery_without_credentials_is_one_line(tmp_path, monkeypatch):
    _no_google_credentials(monkeypatch, tmp_path)
    indexed = _indexed(tmp_path, rows("2019-06-26", [3]))
    missing = str(tmp_path / "missing-key.json")
    for env in ({}, {"GOOGLE_APPLICATION_CREDENTIALS": missing}):
        args = ["insert", "--input", indexed, "--date", "2019-06-26"]
        result = CliRunner().invoke(entry_point, args, env={"DATASET": "telemetry", **env})
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
        lines = result.output.splitlines()
        assert len(lines) == 1 and "BigQuery: no usable credentials" in lines[0]
        assert "Traceback" not in result.output


def test_insert_checks_the_dataset_before_building_a_client(tmp_path, monkeypatch):
    _no_google_credentials(monkeypatch, tmp_path)
    indexed = _indexed(tmp_path, rows("2019-06-26", [3]))
    result = CliRunner().invoke(
        entry_point, ["insert", "--input", indexed, "--date", "2019-06-26", "--dataset", "tele metry"]
    )
    assert result.exit_code == 2 and result.output.splitlines() == [
        "Error: dataset 'tele metry' must be [project.]dataset"
    ]


class RecordingClient:
    """Stands in for google.cloud.bigquery.Client, which needs an account: records the load job."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, Any, Any]] = []

    def load_table_from_file(self, file, destination, job_config):
        self.calls.append((file.read(), destination, job_config))
        return self

    def result(self):
        return "done"


def test_bigquery_load_job_replaces_one_partition_with_the_declared_schema():
    from google.cloud import bigquery

    client = RecordingClient()
    data = b'{"submission_date": "2019-06-26"}\n'
    assert (
        database.load_bigquery(client, io.BytesIO(data), "telemetry", "content_blocking", "2019-06-26")
        == "done"
    )
    sent, destination, config = client.calls[0]
    assert sent == data
    assert destination == "telemetry.content_blocking$20190626"
    assert config.source_format == bigquery.SourceFormat.NEWLINE_DELIMITED_JSON
    assert config.write_disposition == bigquery.WriteDisposition.WRITE_TRUNCATE
    assert config.autodetect is False
    assert config.time_partitioning.field == "submission_date"
    assert [(f.name, f.field_type, f.mode) for f in config.schema] == [
        (c.name, c.bigquery, "REQUIRED" if c.required else "NULLABLE") for c in database.SCHEMA
    ]
    assert config.schema_update_options == [bigquery.SchemaUpdateOption.ALLOW_FIELD_ADDITION]
    destination, config = database.bigquery_load_job("p.telemetry", "content_blocking", "2019-06-26", True)
    assert destination == "p.telemetry.content_blocking_rejects$20190626"
    assert [f.name for f in config.schema] == list(database.REJECTS_COLUMNS)
    with pytest.raises(database.DatabaseError):
        database.bigquery_load_job("telemetry", "content_blocking", "26/06/2019")


STAGING_REJECTS: list[dict[str, Any]] = [
    {"id": None, "reason": "bad_json", "detail": "line 3 of sink/part-0.ndjson is not JSON"},
    {"id": "ping-2", "reason": "unknown_encoding", "detail": "encoding 'x-0' is unknown", "entry": 1},
]


def test_insert_loads_the_server_id_and_the_rejects_of_staging_and_index(tmp_path):
    staged = tmp_path / "staging-rejects"
    staged.mkdir()
    (staged / "rejects-staging.ndjson").write_text("".join(json.dumps(r) + "\n" for r in STAGING_REJECTS))
    index_rejects = tmp_path / "index.ndjson"
    index_rejects.write_text(json.dumps({"batch_id": "x-0", "reason": "unknown_batch", "detail": "d"}) + "\n")
    db = tmp_path / "r.sqlite"
    indexed = _indexed(tmp_path, rows("2019-06-26", [3, 4]))
    args = ["insert", "--input", indexed, "--date", "2019-06-26", "--database", str(db)]
    given = ["--server-id", "b", "--staging-rejects", str(staged), "--index-rejects", str(index_rejects)]
    result = CliRunner().invoke(entry_point, args + given)
    assert result.exit_code == 0, result.output
    assert {r["server_id"] for r in database.rows_of_date(str(db), "2019-06-26")} == {"B"}
    listed = database.query(str(db), "SELECT * FROM content_blocking_rejects ORDER BY stage DESC, reason")
    assert [tuple(r) for r in listed] == [
        ("2019-06-26", "staging", "bad_json", STAGING_REJECTS[0]["detail"], None, None, None),
        ("2019-06-26", "staging", "unknown_encoding", STAGING_REJECTS[1]["detail"], "ping-2", 1, None),
        ("2019-06-26", "index", "unknown_batch", "d", None, None, "x-0"),
    ]
    # Loading the date again replaces its rejects too: none given, none left.
    assert CliRunner().invoke(entry_point, args).exit_code == 0
    assert database.query(str(db), "SELECT COUNT(*) FROM content_blocking_rejects")[0][0] == 0
    missing = CliRunner().invoke(entry_point, args + ["--staging-rejects", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "rejects-staging.ndjson does not exist" in missing.output
    bad_server = CliRunner().invoke(entry_point, args + ["--server-id", "C"])
    assert bad_server.exit_code == 2


def test_a_table_made_before_server_id_gets_the_column(tmp_path):
    db = str(tmp_path / "old.sqlite")
    old = [c for c in database.SCHEMA if c.name != "server_id"]
    old_columns = ", ".join(f'"{c.name}" {c.sqlite} NOT NULL' for c in old)
    with sqlite3.connect(db) as conn:
        conn.execute(f"CREATE TABLE content_blocking ({old_columns})")
        conn.execute(
            "INSERT INTO content_blocking VALUES ('2019-06-25', 'm', 'o', 'h', 0, 1, 0, 2, 'r', 't')"
        )
    database.replace_date(db, "2019-06-26", [{**r, "server_id": "A"} for r in rows("2019-06-26", [5])])
    got = database.query(db, "SELECT submission_date, server_id FROM content_blocking ORDER BY 1")
    assert [tuple(r) for r in got] == [("2019-06-25", None), ("2019-06-26", "A")]


def test_insert_into_bigquery_sends_both_tables_of_the_date(tmp_path, monkeypatch):
    from prio_processor.firefox import subcommands

    client = RecordingClient()
    monkeypatch.setattr(subcommands, "_bigquery_client", lambda: client)
    staged = tmp_path / "staging.ndjson"
    staged.write_text(json.dumps(STAGING_REJECTS[1]) + "\n")
    indexed = _indexed(tmp_path, rows("2019-06-26", [3, 4]))
    args = ["insert", "--input", indexed, "--date", "2019-06-26", "--dataset", "p.telemetry"]
    result = CliRunner().invoke(entry_point, [*args, "--server-id", "A", "--staging-rejects", str(staged)])
    assert result.exit_code == 0, result.output
    (results, to_results, _), (rejects, to_rejects, _) = client.calls
    assert to_results == "p.telemetry.content_blocking$20190626"
    assert to_rejects == "p.telemetry.content_blocking_rejects$20190626"
    sent = [json.loads(line) for line in results.decode().splitlines()]
    assert [(r["aggregate"], r["server_id"]) for r in sent] == [(3, "A"), (4, "A")]
    assert [json.loads(line) for line in rejects.decode().splitlines()] == [
        {
            "submission_date": "2019-06-26",
            "stage": "staging",
            "reason": "unknown_encoding",
            "detail": STAGING_REJECTS[1]["detail"],
            "id": "ping-2",
            "entry": 1,
            "batch_id": None,
        }
    ]
    staged.write_text("{not json\n")
    broken = CliRunner().invoke(entry_point, [*args, "--staging-rejects", str(staged)])
    assert broken.exit_code == 2 and len(broken.output.splitlines()) == 1
    assert "--staging-rejects: line 1 of" in broken.output and len(client.calls) == 2
