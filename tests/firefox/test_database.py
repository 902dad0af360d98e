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
    assert columns == [(c.name, c.sqlite, 1) for c in database.SCHEMA]


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
        (c.name, c.bigquery, "REQUIRED") for c in database.SCHEMA
    ]
    with pytest.raises(database.DatabaseError):
        database.bigquery_load_job("telemetry", "content_blocking", "26/06/2019")
