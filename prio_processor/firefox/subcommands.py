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
    help="Where the pings are: a folder (local, gs:// or s3://), or with --source bigquery the table "
    "PROJECT.DATASET.TABLE.",
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
    "payload is the base64 ping; json: ping JSON lines in any file below <date>/; bigquery: the rows "
    "of a payload_bytes_decoded table submitted on the date, whose payload is the gzip'd ping.",
)
@click.option(
    "--credentials",
    envvar="GOOGLE_APPLICATION_CREDENTIALS",
    default=None,
    show_envvar=True,
    help="With --source bigquery: a Google credentials file (a service account key or an "
    "authorized-user file); without it, "
    "the environment's default credentials.",
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
    date: str,
    input_: str,
    output: str,
    source: str,
    credentials: str | None,
    config_path: str | None,
    rejects: str | None,
) -> None:
    """Explode the prio pings of one date into shares per server and batch id.

    Writes OUT/submission_date=D/server_id={a,b}/batch_id=<encoding>/part-NNNNN.json
    of {id, payload} (ids 1..n per batch) and _SUCCESS markers. Every ping is read
    and checked first; the date's previous output is replaced only once the new
    one is complete, and nothing else is touched. Prints "N errors out of M total"
    (M lines or rows read) on stdout; the counts of pings, duplicates, entries per
    batch and errors by reason on stderr.
    """
    given = click.get_current_context().get_parameter_source("credentials")
    if source != "bigquery" and given is click.core.ParameterSource.COMMANDLINE:
        raise ConfigError(
            "--credentials is for --source bigquery; gs:// paths take GOOGLE_APPLICATION_CREDENTIALS"
        )
    out = location(output)
    with _errors():
        known = {b.batch_id for b in _batches(config_path)} if config_path else None
        if source == "bigquery":
            from . import bigquery_source

            table = bigquery_source.Table.parse(input_)
            clients = bigquery_source.connect(table, credentials)
            pings = bigquery_source.table_pings(clients, table, date)
        else:
            pings = staging.file_pings(location(input_), date, source)
        with _listed_rejects(rejects, "staging", out) as sink:
            summary = staging.stage(pings, out, date, known, sink)
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
@_date_option(
    required=False,
    help_="The submission date of the rows (default: the YYYY-MM-DD folder in --input's path; without "
    "either the rows have no submission_date, as the original's had none).",
)
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
    named = f"index {date}" if date else "index (no submission date)"
    for error in result.errors:
        _echo_err(f"{named}: {error.reason}: {error.detail}")
    indexed = len(result.batches) - len(result.errors)
    _echo_err(f"{named}: {len(result.rows)} rows for {indexed} batches")
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


def _listed_rejects_of(path: str, stage: str, date: str) -> list[tuple]:
    """The rejects a stage listed with --rejects PATH (the file, or the folder holding it), as table rows."""
    target = runner.rejects_file(location(path), stage, None)
    if not target.is_file():
        raise StorageError(f"--{stage}-rejects: {target} does not exist")
    rows = []
    for record in read_all([target]):
        if not isinstance(record, dict):
            raise StorageError(f"--{stage}-rejects: {record.describe()}")
        rows.append(database.check_reject(record, stage, date))
    return rows


def _server_id(value: str | None) -> str | None:
    return None if value is None else value.upper()


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
    help="Load into this BigQuery [project.]dataset instead of the SQLite file "
    "(credentials from GOOGLE_APPLICATION_CREDENTIALS).",
)
@click.option(
    "--server-id",
    envvar="SERVER_ID",
    type=click.Choice(database.SERVER_IDS, case_sensitive=False),
    default=None,
    show_envvar=True,
    help="Whose published totals these are, stored in the server_id column (the report names it).",
)
@click.option(
    "--staging-rejects",
    envvar="STAGING_REJECTS",
    default=None,
    show_envvar=True,
    help="What `prio-processor staging --rejects` listed for this date (that file, or the folder "
    "holding rejects-staging.ndjson): loaded into TABLE_rejects.",
)
@click.option(
    "--index-rejects",
    default=None,
    help="What `prio-processor index --rejects` listed for this date: loaded into TABLE_rejects.",
)
def insert_command(
    input_: str,
    date: str,
    database_path: str,
    table: str,
    dataset: str | None,
    server_id: str | None,
    staging_rejects: str | None,
    index_rejects: str | None,
) -> None:
    """Replace one date's rows in the results table and its rejects table with the given ones.

    The results table TABLE gets the indexed rows (each with --server-id), the
    rejects table TABLE_rejects what staging and index listed (only those given;
    the date's earlier rejects go). The default is the SQLite file --database;
    with --dataset the rows go to BigQuery, into the date's partition of tables
    partitioned by submission_date, with the declared schemas. A count outside
    0..2^63-1 refuses the date with one line naming its batch.
    """
    with _errors():
        if dataset:
            database.check_bigquery_target(dataset, table, date)
        rows = [{**r, "server_id": _server_id(server_id)} for r in _indexed_rows(input_)]
        checked = [database.check_row(r) for r in rows]
        rejects = []
        for stage, path in (("staging", staging_rejects), ("index", index_rejects)):
            if path is not None:
                rejects += _listed_rejects_of(path, stage, date)
        if dataset:
            _insert_bigquery(checked, rejects, dataset, table, date)
            click.echo(f"loaded {len(rows)} rows into BigQuery {dataset}.{table} for {date}")
        else:
            count = database.replace_date(database_path, date, rows, table, rejects)
            click.echo(f"loaded {count} rows into {database_path} ({table}) for {date}")
    if rejects:
        _echo_err(f"insert {date}: {len(rejects)} rejects into {database.rejects_table(table)}")


def _bigquery_client() -> Any:
    """A BigQuery client, or one line saying why there is none (no credentials, most often)."""
    import google.auth.exceptions
    from google.cloud import bigquery

    try:
        return bigquery.Client()
    except google.auth.exceptions.GoogleAuthError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise database.DatabaseError(
            f"BigQuery: no usable credentials (set GOOGLE_APPLICATION_CREDENTIALS to a service account "
            f"key file): {first}"
        ) from None


@contextlib.contextmanager
def _ndjson(records: list[dict[str, Any]]) -> Iterator[IO[bytes]]:
    with tempfile.TemporaryFile() as f:
        for record in records:
            f.write((json.dumps(record) + "\n").encode("utf-8"))
        f.seek(0)
        yield f


def _insert_bigquery(
    values: list[tuple], rejects: list[tuple], dataset: str, table: str, date: str
) -> None:
    if any(v[0] != date for v in values):
        raise database.DatabaseError(f"every row must have submission_date {date}")
    client = _bigquery_client()
    for columns, records, is_rejects in (
        (database.COLUMNS, values, False),
        (database.REJECTS_COLUMNS, rejects, True),
    ):
        with _ndjson([dict(zip(columns, v)) for v in records]) as f:
            database.load_bigquery(client, f, dataset, table, date, rejects=is_rejects)


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
    help="Origins in each metric's top chart.",
)
@click.option(
    "--min-batch-size",
    envvar="MIN_BATCH_SIZE",
    type=click.IntRange(min=0),
    default=None,
    show_envvar=True,
    help="The minimum batch size the servers publish with: stated on the page, and every batch with "
    "fewer valid clients is marked.",
)
def report_command(
    database_path: str,
    table: str,
    output: str,
    dates: tuple[str, ...],
    top: int,
    min_batch_size: int | None,
) -> None:
    """Write a self-contained HTML page per date, from the results and rejects tables.

    Each page opens with an overview (whose results, the dates in the database,
    the minimum batch size in force, every metric's totals, clients, errors and
    the rejects of the date) and shows, per metric, a trend chart over every date
    of the database, the top origins and every origin's count in a table that
    sorts and filters in the page. Pages are written only for submission dates
    that are YYYY-MM-DD: others are counted on stderr and skipped. Prints the
    path of each page written on stdout.
    """
    with _errors():
        if not os.path.isfile(database_path):
            raise database.DatabaseError(f"--database {database_path} does not exist")
        stored = report.all_dates(database_path, table)
        skipped = [d for d in stored if not database.is_date(d)]
        wanted = list(dates) or [d for d in stored if database.is_date(d)]
        out = location(output)
        for d in wanted:
            page = report.render(report.page(database_path, d, table, min_batch_size), top)
            target = out.join(f"{d}.html")
            target.write_bytes(page.encode("utf-8"))
            click.echo(str(target))
    if skipped:
        shown = ", ".join(repr(d) for d in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        _echo_err(
            f"report: {len(skipped)} of {len(stored)} submission_date values in {table} are not "
            f"YYYY-MM-DD, left out of every page: {shown}"
        )


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
