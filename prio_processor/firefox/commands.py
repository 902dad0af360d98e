"""`prio-processor`: Firefox prio pings in, results by origin out.

Configuration errors (missing input, bad config, unreadable database) exit with
status 2 and one line on stderr.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import tempfile
from typing import Iterator

import click

from ..cli.options import ConfigError, public_key_from_hex
from ..engine.prg import PrgKeying
from ..integration import Batch, load_data_config
from ..storage import RecordWriter, StorageError, location, read_all
from ..storage.ops import mark_success
from . import database, indexing, origins, pings, report, staging

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except (StorageError, origins.OriginError, database.DatabaseError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def _date(value: str | None) -> str | None:
    if value is not None and not _DATE.match(value):
        raise ConfigError(f"--date {value!r} is not YYYY-MM-DD")
    return value


def _batches(path: str) -> list[Batch]:
    return load_data_config(location(path))


def _origins(path: str | None) -> list[origins.Origin]:
    return origins.bundled() if path is None else origins.load(location(path).read_bytes())


date_option = click.option("--date", required=True, help="The submission date, YYYY-MM-DD.")
config_option = click.option(
    "--config",
    "config_path",
    envvar="DATA_CONFIG",
    required=True,
    help="The data config: a JSON list of {batch_id, n_data} (local or gs://).",
)
database_option = click.option(
    "--database",
    "database_path",
    envvar="DATABASE",
    default="prio-processor.sqlite",
    show_default=True,
    help="The SQLite file of indexed results.",
)
table_option = click.option(
    "--table", envvar="TABLE", default=database.DEFAULT_TABLE, show_default=True, help="The results table."
)


@click.group()
def entry_point() -> None:
    """Firefox origin telemetry: stage prio pings, index published totals by origin, load and report them."""


@entry_point.command("staging")
@date_option
@click.option("--input", "input_", required=True, help="Where the pings are (local or gs://).")
@click.option("--output", required=True, help="Where the staged shares go (local or gs://).")
@click.option(
    "--source",
    type=click.Choice(staging.SOURCES),
    default="gcs",
    show_default=True,
    help="gcs: the ingestion sink, <date>/<hour>/<namespace>/<doctype>/<version>/ of messages whose "
    "payload is the base64 ping; json: ping JSON lines in any file below <date>/.",
)
@click.option(
    "--config",
    "config_path",
    envvar="DATA_CONFIG",
    default=None,
    help="A data config; entries of other encodings are rejected as unknown_encoding.",
)
def staging_command(date: str, input_: str, output: str, source: str, config_path: str | None) -> None:
    """Explode the prio pings of one date into shares per server and batch id.

    Writes OUT/submission_date=D/server_id={a,b}/batch_id=<encoding>/part-*.ndjson of
    {id, payload}, _SUCCESS markers, and _rejects.staging.ndjson (no payloads).
    Re-running a date replaces that date only.
    """
    _date(date)
    with _errors():
        known = {b.batch_id for b in _batches(config_path)} if config_path else None
        summary = staging.stage(location(input_), location(output), date, source, known)
    for batch_id, count in sorted(summary.entries.items()):
        click.echo(f"batch {batch_id}: {count} entries")
    for line in summary.lines():
        click.echo(line)


@entry_point.command("fetch-origins")
@click.option(
    "--url",
    default=None,
    help="Read TelemetryOriginData.inc from this http(s) or file URL, or local path, instead of "
    f"the bundled list (Firefox's is {origins.TELEMETRY_ORIGIN_DATA_URL}).",
)
@click.option("--output", type=click.File("w"), default="-", help="Where to write the JSON list.")
def fetch_origins(url: str | None, output) -> None:
    """Print the origin list [{name, hash, index}] with the final __UNKNOWN__ entry."""
    with _errors():
        data = origins.bundled() if url is None else origins.read_inc(url)
    output.write(json.dumps(data, indent=2) + "\n")


@entry_point.command("index")
@click.option("--input", "input_", required=True, help="A processed/publish folder of batch_id=<id> folders.")
@click.option("--output", required=True, help="The folder for the indexed rows (replaced).")
@config_option
@click.option(
    "--origins",
    "origins_path",
    envvar="ORIGIN_CONFIG",
    default=None,
    help="The origin list as JSON (default: the bundled list).",
)
@click.option("--date", default=None, help="The submission date (default: the date folder in --input).")
def index_command(
    input_: str, output: str, config_path: str, origins_path: str | None, date: str | None
) -> None:
    """Map published totals to origins: one row per origin and batch.

    A batch id missing from the config, or a vector longer than the origin list,
    is an error naming the batch (listed in _rejects.index.ndjson); the other
    batches are still indexed.
    """
    published = location(input_)
    date = _date(date) or indexing.date_from_path(published)
    if date is None:
        raise ConfigError("--date is needed: --input has no YYYY-MM-DD folder")
    with _errors():
        if not published.is_dir():
            raise StorageError(f"--input {published} does not exist")
        result = indexing.index(published, _batches(config_path), _origins(origins_path), date)
        out = location(output)
        if out.is_dir():
            out.delete()
        with RecordWriter(out.join("part-00000.json")) as writer:
            for row in result.rows:
                writer.write(row)
        with RecordWriter(out.join("_rejects.index.ndjson")) as rejects:
            for error in result.errors:
                rejects.write(error.record())
        mark_success(out)
    for error in result.errors:
        click.echo(f"error: {error.detail}", err=True)
    click.echo(f"{len(result.rows)} rows for {len(result.batches) - len(result.errors)} batches")
    click.echo(f"{len(result.errors)} errors out of {len(result.batches)} total")


def _indexed_rows(folder: str) -> list[dict]:
    loc = location(folder)
    rows = []
    for record in read_all(loc.parts()):
        if not isinstance(record, dict):
            raise StorageError(f"line {record.line} of {record.source} is not a JSON object")
        rows.append(record)
    return rows


@entry_point.command("insert")
@click.option("--input", "input_", required=True, help="The folder written by `prio-processor index`.")
@date_option
@database_option
@table_option
@click.option(
    "--dataset",
    envvar="DATASET",
    default=None,
    help="Load into this BigQuery [project.]dataset instead of the SQLite file.",
)
def insert_command(input_: str, date: str, database_path: str, table: str, dataset: str | None) -> None:
    """Replace one date's rows in the results table with the indexed rows.

    The default is the SQLite file --database; with --dataset (DATASET) the rows
    go to BigQuery, into the date's partition of a table partitioned by
    submission_date, with the declared schema.
    """
    _date(date)
    with _errors():
        rows = _indexed_rows(input_)
        if dataset:
            _insert_bigquery(rows, dataset, table, date)
            click.echo(f"loaded {len(rows)} rows into BigQuery {dataset}.{table} for {date}")
            return
        count = database.replace_date(database_path, date, rows, table)
    click.echo(f"loaded {count} rows into {database_path} ({table}) for {date}")


def _insert_bigquery(rows: list[dict], dataset: str, table: str, date: str) -> None:
    from google.cloud import bigquery

    if any(r.get("submission_date") != date for r in rows):
        raise database.DatabaseError(f"every row must have submission_date {date}")
    with tempfile.TemporaryFile() as f:
        for row in rows:
            f.write((json.dumps({c: row[c] for c in database.COLUMNS}) + "\n").encode("utf-8"))
        f.seek(0)
        database.load_bigquery(bigquery.Client(), f, dataset, table, date)


@entry_point.command("report")
@database_option
@table_option
@click.option("--output", required=True, help="The folder for the pages, one <date>.html per date.")
@click.option("--date", "dates", multiple=True, help="Dates to report (default: every date in the table).")
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
    help="The minimum batch size the servers publish with, to state on the page.",
)
def report_command(
    database_path: str, table: str, output: str, dates: tuple[str, ...], top: int, min_batch_size: int | None
) -> None:
    """Write a self-contained HTML page per date: top origins per metric, totals, errors."""
    for d in dates:
        _date(d)
    with _errors():
        wanted = list(dates) or report.dates(database_path, table)
        out = location(output)
        for d in wanted:
            page = report.render(d, report.metrics(database_path, d, top, table), min_batch_size)
            target = out.join(f"{d}.html")
            target.write_bytes(page.encode("utf-8"))
            click.echo(f"wrote {target}")


@entry_point.command("generate-pings")
@config_option
@click.option(
    "--public-key-hex-internal",
    envvar="PUBLIC_KEY_HEX_INTERNAL",
    required=True,
    help="Server A's public key as hex.",
)
@click.option(
    "--public-key-hex-external",
    envvar="PUBLIC_KEY_HEX_EXTERNAL",
    required=True,
    help="Server B's public key as hex.",
)
@click.option(
    "--output", required=True, help="The sink folder: <date>/<hour>/telemetry/prio/4/ and expected.json."
)
@date_option
@click.option("--n-pings", type=click.IntRange(min=3), default=10, show_default=True, help="Valid pings.")
@click.option(
    "--prg-keying",
    type=click.Choice([k.value for k in PrgKeying]),
    default=PrgKeying.HASHED.value,
    envvar="PRG_KEYING",
    show_default=True,
    help="How the clients key their PRG.",
)
def generate_pings(
    config_path: str,
    public_key_hex_internal: str,
    public_key_hex_external: str,
    output: str,
    date: str,
    n_pings: int,
    prg_keying: str,
) -> None:
    """Firefox-shaped prio pings with planted counts, some malformed and duplicate (for tests)."""
    _date(date)
    key_a = public_key_from_hex(public_key_hex_internal, "--public-key-hex-internal")
    key_b = public_key_from_hex(public_key_hex_external, "--public-key-hex-external")
    with _errors():
        pings.generate(
            _batches(config_path), key_a, key_b, location(output), date, n_pings, PrgKeying(prg_keying)
        )
    click.echo(f"generated {n_pings} pings for {date}")


@entry_point.command("check")
@database_option
@table_option
@click.option("--expected", required=True, help="The expected.json written by generate-pings.")
def check_command(database_path: str, table: str, expected: str) -> None:
    """Check the database against the counts planted by generate-pings."""
    with _errors():
        want = json.loads(location(expected).read_bytes())
        rows = database.rows_of_date(database_path, want["date"], table)
    problems = pings.check(want, rows)
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        sys.exit(1)
    click.echo(
        f"all {sum(len(c) for c in want['counts'].values())} origin counts of {len(want['counts'])} "
        f"metrics match"
    )
