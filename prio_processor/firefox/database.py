"""Indexed rows into a database: an embedded SQLite file by default, BigQuery when asked.

Both use one declared schema. Loading a date replaces that date's rows and nothing
else: in SQLite in one transaction, in BigQuery by truncating the date's partition of
a table partitioned by `submission_date`.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from typing import IO, Any

DEFAULT_TABLE = "content_blocking"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


@dataclass(frozen=True)
class Column:
    name: str
    sqlite: str
    bigquery: str


#: The columns of the results table, in order.
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
)
COLUMNS = tuple(c.name for c in SCHEMA)


class DatabaseError(Exception):
    """A database that cannot be used, or rows that do not fit the schema."""


def _table_name(table: str) -> str:
    if not _NAME.match(table):
        raise DatabaseError(f"table name {table!r} must be letters, digits and underscores")
    return table


def _quoted(name: str) -> str:
    return f'"{name}"'


def create_table_sql(table: str = DEFAULT_TABLE) -> str:
    columns = ", ".join(f"{_quoted(c.name)} {c.sqlite} NOT NULL" for c in SCHEMA)
    key = 'PRIMARY KEY (submission_date, batch_id, "index")'
    return f"CREATE TABLE IF NOT EXISTS {_quoted(_table_name(table))} ({columns}, {key})"


def _row_values(row: dict[str, Any]) -> tuple:
    try:
        return tuple(row[name] for name in COLUMNS)
    except KeyError as exc:
        raise DatabaseError(f"an indexed row has no {exc.args[0]!r} column") from None


def connect(path: str) -> sqlite3.Connection:
    try:
        return sqlite3.connect(path)
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot open database {path}: {exc}") from None


def replace_date(path: str, date: str, rows: Iterable[dict[str, Any]], table: str = DEFAULT_TABLE) -> int:
    """Replace the rows of `date` in the SQLite table with `rows`; returns how many were loaded."""
    values = [_row_values(r) for r in rows]
    if any(v[0] != date for v in values):
        raise DatabaseError(f"every row must have submission_date {date}")
    name = _quoted(_table_name(table))
    placeholders = ", ".join("?" for _ in COLUMNS)
    try:
        # One transaction: readers see the old rows of the date or the new ones.
        with closing(connect(path)) as db, db:
            db.execute(create_table_sql(table))
            db.execute(f"DELETE FROM {name} WHERE submission_date = ?", (date,))
            db.executemany(f"INSERT INTO {name} VALUES ({placeholders})", values)
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


def rows_of_date(path: str, date: str, table: str = DEFAULT_TABLE) -> list[dict[str, Any]]:
    name = _quoted(_table_name(table))
    return [dict(r) for r in query(path, f"SELECT * FROM {name} WHERE submission_date = ?", (date,))]


# BigQuery


def bigquery_schema() -> list:
    from google.cloud import bigquery

    return [bigquery.SchemaField(c.name, c.bigquery, mode="REQUIRED") for c in SCHEMA]


def bigquery_load_job(dataset: str, table: str, date: str) -> tuple[str, Any]:
    """(destination, LoadJobConfig) that replaces one date of a day-partitioned table."""
    from google.cloud import bigquery

    if not re.match(r"^\d{4}-\d{2}-\d{2}$", date):
        raise DatabaseError(f"submission date {date!r} is not YYYY-MM-DD")
    if not re.match(r"^([A-Za-z0-9-]+\.)?[A-Za-z0-9_]+$", dataset):
        raise DatabaseError(f"dataset {dataset!r} must be [project.]dataset")
    config = bigquery.LoadJobConfig(
        schema=bigquery_schema(),
        source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        time_partitioning=bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY, field="submission_date"
        ),
        autodetect=False,
    )
    # The partition decorator limits WRITE_TRUNCATE to that date.
    destination = f"{dataset}.{_table_name(table)}${date.replace('-', '')}"
    return destination, config


def load_bigquery(client: Any, rows_file: IO[bytes], dataset: str, table: str, date: str) -> Any:
    """Start the load job for a newline-delimited JSON file of rows and wait for it."""
    destination, config = bigquery_load_job(dataset, table, date)
    job = client.load_table_from_file(rows_file, destination, job_config=config)
    return job.result()
