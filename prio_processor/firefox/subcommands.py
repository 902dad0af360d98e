"""The commands of `prio-processor` (imported by the group in `commands` only when one runs).

As `prio`'s stages do, `staging` and `index` print only their count line
`N errors out of M total` on stdout and everything else on stderr; their
rejects go where --rejects (REJECTS) says, never into an output folder.
Configuration errors exit with status 2 and one line on stderr.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import IO, Any

import click

from .. import dataconfig
from ..cli import options
from ..cli.base import ConfigError
from ..engine.prg import PrgKeying
from ..pipeline import runner
from ..pipeline.errors import InputError
from ..storage import LocalLocation, Location, RecordWriter, StorageError, location, read_all
from ..storage.ops import mark_success
from . import database, indexing, origins, pings, report, staging


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Unusable inputs, outputs, origin lists and databases: one line, exit status 2."""
    try:
        yield
    except (StorageError, InputError, origins.OriginError, database.DatabaseError) as exc:
        raise ConfigError(str(exc)) from None


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


class DateType(click.ParamType):
    """A calendar date as YYYY-MM-DD, kept as that text (it names folders and partitions)."""

    name = "YYYY-MM-DD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        option = param.opts[0] if param is not None and param.opts else "--date"
        text = str(value)
        try:
            if len(text) == 10 and datetime.date.fromisoformat(text).isoformat() == text:
                return text
        except ValueError:
            pass
        raise ConfigError(f"{option} {text!r} is not a date as YYYY-MM-DD")


DATE = DateType()


def _date_option(required: bool = True, help_: str = "The submission date.") -> Any:
    return click.option(
        "--date", envvar="SUBMISSION_DATE", type=DATE, required=required, show_envvar=True, help=help_
    )


def _batches(path: str) -> list[dataconfig.Batch]:
    return dataconfig.load(location(path))


def _origins(path: str | None) -> list[origins.Origin]:
    return origins.bundled() if path is None else origins.load(location(path).read_bytes())


def _rejects_option(what: str) -> Any:
    return click.option(
        "--rejects",
        envvar="REJECTS",
        default=None,
        show_envvar=True,
        help=f"Where to list {what} as JSON lines (local, gs:// or s3://): a file if the name ends in "
        ".ndjson or .json, else a folder that gets rejects-<command>.ndjson. Without it they are only "
        "counted. Never inside --output.",
    )


def _absolute(loc: Location) -> str:
    return os.path.abspath(loc.uri) if isinstance(loc, LocalLocation) else loc.uri.rstrip("/")


@contextlib.contextmanager
def _listed_rejects(path: str | None, stage: str, output: Location) -> Iterator[staging.RejectSink]:
    """The sink of a command's rejects: the file --rejects names (as `prio` resolves it), or none."""
    rejects = None if path is None else location(path)
    if rejects is not None:
        target = runner.rejects_file(rejects, stage, None)
        if (_absolute(target) + "/").startswith(_absolute(output) + "/"):
            raise ConfigError(f"--rejects must not be inside --output: {target} is in {output}")
    with _errors(), runner.rejects_sink(rejects, stage, None, (output,)) as sink:
        yield sink


config_option = click.option(
    "--config",
    "config_path",
    envvar="DATA_CONFIG",
    required=True,
    show_envvar=True,
    help="The data config: a JSON list of {batch_id, n_data} (local, gs:// or s3://).",
)
database_option = click.option(
    "--database",
    "database_path",
    envvar="DATABASE",
    default="prio-processor.sqlite",
    show_default=True,
    show_envvar=True,
    help="The SQLite file of indexed results.",
)
table_option = click.option(
    "--table",
    envvar="TABLE",
    default=database.DEFAULT_TABLE,
    show_default=True,
    show_envvar=True,
    help="The results table.",
)


@click.command("staging")
@_date_option()
@click.option(
    "--input",
    "input_",
    envvar="PING_INPUT",
    required=True,
    show_envvar=True,
    help="Where the pings are (local, gs:// or s3://).",
)
@click.option(
    "--output",
    envvar="STAGING_OUTPUT",
    required=True,
    show_envvar=True,
    help="Where the staged shares go (local, gs:// or s3://).",
)
@click.option(
    "--source",
    envvar="PING_SOURCE",
    type=click.Choice(staging.SOURCES),
    default="gcs",
    show_default=True,
    show_envvar=True,
    help="gcs: the ingestion sink, <date>/<hour>/<namespace>/<doctype>/<version>/ of messages whose "
    "payload is the base64 ping; json: ping JSON lines in any file below <date>/.",
)
@click.option(
    "--config",
    "config_path",
    envvar="DATA_CONFIG",
    default=None,
    show_envvar=True,
    help="A data config; entries of encodings it does not list are rejected as unknown_encoding.",
)
@_rejects_option("rejected lines, pings and entries as {id (the ping's), reason, detail, entry}")
def staging_command(
    date: str, input_: str, output: str, source: str, config_path: str | None, rejects: str | None
) -> None:
    """Explode the prio pings of one date into shares per server and batch id.

    Writes OUT/submission_date=D/server_id={a,b}/batch_id=<encoding>/part-*.ndjson
    of {id, payload} and _SUCCESS markers; re-running a date replaces that date
    only. Prints "N errors out of M total" (M lines read) on stdout; the counts
    of pings, duplicates, entries per batch and errors by reason on stderr.
    """
    out = location(output)
    with _errors():
        known = {b.batch_id for b in _batches(config_path)} if config_path else None
        with _listed_rejects(rejects, "staging", out) as sink:
            summary = staging.stage(location(input_), out, date, source, known, sink)
    for line in summary.details():
        _echo_err(f"staging {date}: {line}")
    click.echo(summary.count_line())


@click.command("fetch-origins")
@click.option(
    "--url",
    default=None,
    help="Read TelemetryOriginData.inc from this http(s) or file URL, or local path, instead of "
    f"the bundled list (Firefox's is {origins.TELEMETRY_ORIGIN_DATA_URL}).",
)
@click.option("--output", type=click.File("w"), default="-", help="Where to write the JSON list.")
def fetch_origins(url: str | None, output: IO[str]) -> None:
    """Print the origin list [{name, hash, index}] with the final __UNKNOWN__ entry."""
    with _errors():
        data = origins.bundled() if url is None else origins.read_inc(url)
    output.write(json.dumps(data, indent=2) + "\n")


@click.command("index")
@click.option(
    "--input",
    "input_",
    required=True,
    help="A processed/publish folder of batch_id=<id> folders (local, gs:// or s3://).",
)
@click.option("--output", required=True, help="The folder for the indexed rows (replaced).")
@config_option
@click.option(
    "--origins",
    "origins_path",
    envvar="ORIGIN_CONFIG",
    default=None,
    show_envvar=True,
    help="The origin list as JSON (default: the bundled list).",
)
@_date_option(required=False, help_="The submission date (default: the YYYY-MM-DD folder in --input).")
@_rejects_option("batches that cannot be indexed as {batch_id, reason, detail}")
def index_command(
    input_: str,
    output: str,
    config_path: str,
    origins_path: str | None,
    date: str | None,
    rejects: str | None,
) -> None:
    """Map published totals to origins: one row per origin and batch.

    A batch id missing from the config, or a vector longer than the origin list,
    is an error naming the batch; the other batches are still indexed. Writes
    OUT/part-00000.json and OUT/_SUCCESS. Prints "N errors out of M total" (M
    batches) on stdout, the errors and the row count on stderr.
    """
    published = location(input_)
    date = date or indexing.date_from_path(published)
    if date is None:
        raise ConfigError("--date is needed: --input has no YYYY-MM-DD folder")
    out = location(output)
    with _errors():
        if not published.is_dir():
            raise StorageError(f"--input {published} does not exist")
        batches, origin_list = _batches(config_path), _origins(origins_path)
        result = indexing.index(published, batches, origin_list, date)
        with _listed_rejects(rejects, "index", out) as sink:
            for error in result.errors:
                sink(error.record())
        if out.is_dir():
            out.delete()
        with RecordWriter(out.join("part-00000.json")) as writer:
            for row in result.rows:
                writer.write(row)
        mark_success(out)
    for error in result.errors:
        _echo_err(f"index {date}: {error.reason}: {error.detail}")
    indexed = len(result.batches) - len(result.errors)
    _echo_err(f"index {date}: {len(result.rows)} rows for {indexed} batches")
    click.echo(f"{len(result.errors)} errors out of {len(result.batches)} total")


def _indexed_rows(folder: str) -> list[dict[str, Any]]:
    loc = location(folder)
    if not loc.is_dir():
        raise StorageError(f"--input {loc} does not exist")
    rows = []
    for record in read_all(loc.parts()):
        if not isinstance(record, dict):
            raise StorageError(f"{record.describe()}: not an indexed row")
        rows.append(record)
    return rows


@click.command("insert")
@click.option("--input", "input_", required=True, help="The folder written by `prio-processor index`.")
@_date_option()
@database_option
@table_option
@click.option(
    "--dataset",
    envvar="DATASET",
    default=None,
    show_envvar=True,
    help="Load into this BigQuery [project.]dataset instead of the SQLite file.",
)
def insert_command(input_: str, date: str, database_path: str, table: str, dataset: str | None) -> None:
    """Replace one date's rows in the results table with the indexed rows.

    The default is the SQLite file --database; with --dataset the rows go to
    BigQuery, into the date's partition of a table partitioned by
    submission_date, with the declared schema.
    """
    with _errors():
        rows = _indexed_rows(input_)
        if dataset:
            _insert_bigquery(rows, dataset, table, date)
            click.echo(f"loaded {len(rows)} rows into BigQuery {dataset}.{table} for {date}")
            return
        count = database.replace_date(database_path, date, rows, table)
    click.echo(f"loaded {count} rows into {database_path} ({table}) for {date}")


def _insert_bigquery(rows: list[dict[str, Any]], dataset: str, table: str, date: str) -> None:
    from google.cloud import bigquery

    if any(r.get("submission_date") != date for r in rows):
        raise database.DatabaseError(f"every row must have submission_date {date}")
    with tempfile.TemporaryFile() as f:
        for row in rows:
            f.write((json.dumps({c: row.get(c) for c in database.COLUMNS}) + "\n").encode("utf-8"))
        f.seek(0)
        database.load_bigquery(bigquery.Client(), f, dataset, table, date)


@click.command("report")
@database_option
@table_option
@click.option("--output", required=True, help="The folder for the pages, one <date>.html per date.")
@click.option(
    "--date", "dates", type=DATE, multiple=True, help="Dates to report (default: every date in the table)."
)
@click.option(
    "--top",
    type=click.IntRange(1, 500),
    default=report.DEFAULT_TOP,
    show_default=True,
    help="Origins per chart.",
)
@click.option(
    "--min-batch-size",
    envvar="MIN_BATCH_SIZE",
    type=click.IntRange(min=0),
    default=None,
    show_envvar=True,
    help="The minimum batch size the servers publish with, to state on the page.",
)
def report_command(
    database_path: str,
    table: str,
    output: str,
    dates: tuple[str, ...],
    top: int,
    min_batch_size: int | None,
) -> None:
    """Write a self-contained HTML page per date: top origins per metric, totals, errors.

    Prints the path of each page written on stdout.
    """
    with _errors():
        if not os.path.isfile(database_path):
            raise database.DatabaseError(f"--database {database_path} does not exist")
        wanted = list(dates) or report.dates(database_path, table)
        out = location(output)
        for d in wanted:
            page = report.render(d, report.metrics(database_path, d, top, table), min_batch_size)
            target = out.join(f"{d}.html")
            target.write_bytes(page.encode("utf-8"))
            click.echo(str(target))


@click.command("generate-pings")
@config_option
@options.public_key
@click.option(
    "--output",
    required=True,
    help="The sink folder: <date>/<hour>/telemetry/prio/4/ and expected.json.",
)
@_date_option()
@click.option("--n-pings", type=click.IntRange(min=3), default=10, show_default=True, help="Valid pings.")
@options.prg_keying
def generate_pings(
    config_path: str,
    public_key_hex_internal: Any,
    public_key_hex_external: Any,
    output: str,
    date: str,
    n_pings: int,
    prg_keying: str,
) -> None:
    """Firefox-shaped prio pings with planted counts, some malformed and duplicate (for tests).

    The internal key is server A's, the external key server B's.
    """
    with _errors():
        batches = _batches(config_path)
        try:
            pings.metrics_of(batches)
        except ValueError as exc:
            raise ConfigError(f"--config {config_path}: {exc}") from None
        sink = location(output)
        keys = (public_key_hex_internal, public_key_hex_external)
        pings.generate(batches, *keys, sink, date, n_pings, PrgKeying(prg_keying))
    _echo_err(f"generated {n_pings} pings for {date}")


@click.command("check")
@database_option
@table_option
@click.option("--expected", required=True, help="The expected.json written by generate-pings.")
def check_command(database_path: str, table: str, expected: str) -> None:
    """Check the database against the counts planted by generate-pings (exit status 1 if they differ)."""
    with _errors():
        if not os.path.isfile(database_path):
            raise database.DatabaseError(f"--database {database_path} does not exist")
        try:
            want = json.loads(location(expected).read_bytes())
        except ValueError:
            raise ConfigError(f"--expected {expected} is not JSON") from None
        rows = database.rows_of_date(database_path, want["date"], table)
    problems = pings.check(want, rows)
    for problem in problems:
        _echo_err(problem)
    if problems:
        sys.exit(1)
    click.echo(
        f"all {sum(len(c) for c in want['counts'].values())} origin counts of {len(want['counts'])} "
        f"metrics match"
    )
