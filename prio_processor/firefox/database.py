"""Indexed rows into a database: an embedded SQLite file by default, BigQuery when asked.

Two tables, each with one declared schema for both backends: the results
(`TABLE`, one row per origin and metric) and the rejects (`TABLE_rejects`: what
staging and index could not use, by reason). Loading a date replaces that date's
rows of both tables and nothing else: in SQLite in one transaction, in BigQuery by
truncating the date's partition of tables partitioned by `submission_date`.
"""

from __future__ import annotations

import datetime
import re
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from typing import IO, Any

DEFAULT_TABLE = "content_blocking"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_DATASET = re.compile(r"^([A-Za-z0-9-]+\.)?[A-Za-z0-9_]+$")
#: Counts are stored as signed 64-bit integers (SQLite INTEGER, BigQuery INT64).
MAX_COUNT = 2**63 - 1
SERVER_IDS = ("A", "B")


@dataclass(frozen=True)
class Column:
    name: str
    sqlite: str
    bigquery: str
    required: bool = True


#: The columns of the results table, in order. `server_id` (A or B) says whose
#: published totals the rows are; empty in rows loaded without it.
SCHEMA = (
    Column("submission_date", "TEXT", "DATE"),
    Column("batch_id", "TEXT", "STRING"),
    Column("origin", "TEXT", "STRING"),
    Column("hash", "TEXT", "STRING"),
    Column("index", "INTEGER", "INTEGER"),
    Column("aggregate", "INTEGER", "INTEGER"),
    Column("error", "INTEGER", "INTEGER"),
    Column("total", "INTEGER", "INTEGER"),
    Column("id", "TEXT", "STRING"),
    Column("timestamp", "TEXT", "TIMESTAMP"),
    Column("server_id", "TEXT", "STRING", required=False),
)
COLUMNS = tuple(c.name for c in SCHEMA)
_COUNTS = ("index", "aggregate", "error", "total")

#: The columns of the rejects table: one row per record a stage listed as rejected.
#: `id` and `entry` are the ping's id and the entry's position (staging), `batch_id`
#: the batch (index).
REJECTS_SCHEMA = (
    Column("submission_date", "TEXT", "DATE"),
    Column("stage", "TEXT", "STRING"),
    Column("reason", "TEXT", "STRING"),
    Column("detail", "TEXT", "STRING"),
    Column("id", "TEXT", "STRING", required=False),
    Column("entry", "INTEGER", "INTEGER", required=False),
    Column("batch_id", "TEXT", "STRING", required=False),
)
REJECTS_COLUMNS = tuple(c.name for c in REJECTS_SCHEMA)
REJECT_STAGES = ("staging", "index")


class DatabaseError(Exception):
    """A database that cannot be used, or rows that do not fit the schema."""


def _table_name(table: str) -> str:
    if not _NAME.match(table):
        raise DatabaseError(f"table name {table!r} must be letters, digits and underscores")
    return table


def rejects_table(table: str = DEFAULT_TABLE) -> str:
    """The name of the rejects table that goes with a results table."""
    return f"{_table_name(table)}_rejects"


def _quoted(name: str) -> str:
    return f'"{name}"'


def is_date(text: Any) -> bool:
    """Whether `text` is a calendar date written as YYYY-MM-DD."""
    if not (isinstance(text, str) and len(text) == 10):
        return False
    try:
        return datetime.date.fromisoformat(text).isoformat() == text
    except ValueError:
        return False


def _create_sql(name: str, schema: tuple[Column, ...], key: str | None) -> str:
    columns = ", ".join(
        f"{_quoted(c.name)} {c.sqlite}{' NOT NULL' if c.required else ''}" for c in schema
    )
    return f"CREATE TABLE IF NOT EXISTS {_quoted(name)} ({columns}{f', {key}' if key else ''})"


def create_table_sql(table: str = DEFAULT_TABLE) -> str:
    return _create_sql(_table_name(table), SCHEMA, 'PRIMARY KEY (submission_date, batch_id, "index")')


def create_rejects_table_sql(table: str = DEFAULT_TABLE) -> str:
    return _create_sql(rejects_table(table), REJECTS_SCHEMA, None)


def check_row(row: dict[str, Any]) -> tuple:
    """The values of an indexed row in column order; DatabaseError naming its batch if it does not fit."""
    try:
        values = tuple(row[c.name] if c.required else row.get(c.name) for c in SCHEMA)
    except KeyError as exc:
        raise DatabaseError(f"an indexed row has no {exc.args[0]!r} column") from None
    where = f"batch {row.get('batch_id')!r} (record {row.get('id')!r})"
    for column, value in zip(SCHEMA, values):
        if value is None and not column.required:
            continue
        if column.sqlite == "TEXT" and not isinstance(value, str):
            raise DatabaseError(f"{where}: {column.name} {value!r} is not text")
    for name in _COUNTS:
        value = row[name]
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_COUNT:
            at = f" at index {row['index']}" if name != "index" else ""
            raise DatabaseError(f"{where}: {name} {value!r}{at} is not a count in 0..2^63-1")
    if row.get("server_id") not in (None, *SERVER_IDS):
        raise DatabaseError(f"{where}: server_id {row['server_id']!r} is not A or B")
    return values


def check_reject(record: dict[str, Any], stage: str, date: str) -> tuple:
    """A rejects table row for one listed reject of `stage`; DatabaseError if it is not one."""
    if stage not in REJECT_STAGES:
        raise DatabaseError(f"rejects of stage {stage!r}: only {', '.join(REJECT_STAGES)} are loaded")
    if not (isinstance(record, dict) and isinstance(record.get("reason"), str)):
        raise DatabaseError(f"a {stage} reject {str(record)[:80]!r} has no reason")
    ping_id, entry, batch_id = record.get("id"), record.get("entry"), record.get("batch_id")
    if entry is not None and (not isinstance(entry, int) or isinstance(entry, bool) or entry < 0):
        raise DatabaseError(f"a {stage} reject has entry {entry!r}, not a position")
    detail = record.get("detail")
    return (
        date,
        stage,
        record["reason"],
        "" if detail is None else str(detail),
        None if ping_id is None else str(ping_id),
        entry,
        None if batch_id is None else str(batch_id),
    )


def connect(path: str) -> sqlite3.Connection:
    try:
        return sqlite3.connect(path)
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot open database {path}: {exc}") from None


def _add_server_id(db: sqlite3.Connection, name: str) -> None:
    """Tables made before `server_id` existed get it (empty in their rows)."""
    columns = {r[1] for r in db.execute(f"PRAGMA table_info({_quoted(name)})")}
    if "server_id" not in columns:
        db.execute(f"ALTER TABLE {_quoted(name)} ADD COLUMN server_id TEXT")


def replace_date(
    path: str,
    date: str,
    rows: Iterable[dict[str, Any]],
    table: str = DEFAULT_TABLE,
    rejects: Iterable[tuple] = (),
) -> int:
    """Replace the rows of `date` in the SQLite tables; returns how many results were loaded.

    `rejects` are rows made by `check_reject`; the date's earlier rejects go either way.
    """
    values = [check_row(r) for r in rows]
    if any(v[0] != date for v in values):
        raise DatabaseError(f"every row must have submission_date {date}")
    reject_values = list(rejects)
    if any(v[0] != date for v in reject_values):
        raise DatabaseError(f"every reject must have submission_date {date}")
    name, rejects_name = _table_name(table), rejects_table(table)
    try:
        # One transaction: readers see the old rows of the date or the new ones.
        with closing(connect(path)) as db, db:
            db.execute(create_table_sql(table))
            _add_server_id(db, name)
            db.execute(create_rejects_table_sql(table))
            loads = ((name, COLUMNS, values), (rejects_name, REJECTS_COLUMNS, reject_values))
            for target, columns, data in loads:
                db.execute(f"DELETE FROM {_quoted(target)} WHERE submission_date = ?", (date,))
                listed = ", ".join(_quoted(c) for c in columns)
                places = ", ".join("?" for _ in columns)
                db.executemany(f"INSERT INTO {_quoted(target)} ({listed}) VALUES ({places})", data)
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot load {path}: {exc}") from None
    return len(values)


def query(path: str, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
    try:
        with closing(connect(path)) as db:
            db.row_factory = sqlite3.Row
            return db.execute(sql, params).fetchall()
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot read {path}: {exc}") from None


def has_table(path: str, name: str) -> bool:
    return bool(query(path, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)))


def rows_of_date(path: str, date: str, table: str = DEFAULT_TABLE) -> list[dict[str, Any]]:
    name = _quoted(_table_name(table))
    return [dict(r) for r in query(path, f"SELECT * FROM {name} WHERE submission_date = ?", (date,))]


# BigQuery


def _bigquery_fields(schema: tuple[Column, ...]) -> list:
    from google.cloud import bigquery

    modes = {True: "REQUIRED", False: "NULLABLE"}
    return [bigquery.SchemaField(c.name, c.bigquery, mode=modes[c.required]) for c in schema]


def bigquery_schema() -> list:
    return _bigquery_fields(SCHEMA)


def bigquery_rejects_schema() -> list:
    return _bigquery_fields(REJECTS_SCHEMA)


def check_bigquery_target(dataset: str, table: str, date: str) -> None:
    """DatabaseError unless dataset, table and date can name a partition (checked before any client)."""
    if not is_date(date):
        raise DatabaseError(f"submission date {date!r} is not YYYY-MM-DD")
    if not _DATASET.match(dataset):
        raise DatabaseError(f"dataset {dataset!r} must be [project.]dataset")
    _table_name(table)


def bigquery_load_job(dataset: str, table: str, date: str, rejects: bool = False) -> tuple[str, Any]:
    """(destination, LoadJobConfig) that replaces one date of a day-partitioned table.

    `rejects` picks the rejects table `TABLE_rejects` instead of the results table.
    """
    from google.cloud import bigquery

    check_bigquery_target(dataset, table, date)
    config = bigquery.LoadJobConfig(
        schema=bigquery_rejects_schema() if rejects else bigquery_schema(),
        source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        # A table made before server_id existed gets the column.
        schema_update_options=[bigquery.SchemaUpdateOption.ALLOW_FIELD_ADDITION],
        time_partitioning=bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY, field="submission_date"
        ),
        autodetect=False,
    )
    # The partition decorator limits WRITE_TRUNCATE to that date.
    name = rejects_table(table) if rejects else _table_name(table)
    destination = f"{dataset}.{name}${date.replace('-', '')}"
    return destination, config


def load_bigquery(
    client: Any, rows_file: IO[bytes], dataset: str, table: str, date: str, rejects: bool = False
) -> Any:
    """Start the load job for a newline-delimited JSON file of rows and wait for it."""
    destination, config = bigquery_load_job(dataset, table, date, rejects)
    job = client.load_table_from_file(rows_file, destination, job_config=config)
    return job.result()
