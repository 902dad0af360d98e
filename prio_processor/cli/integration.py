"""`prio batches` and `prio integration`: helpers for bin/process, bin/generate, bin/integrate."""

from __future__ import annotations

import sys

import click

from .. import dataconfig
from ..engine.config import PrgKeying
from ..storage import location, ops
from . import options
from .base import storage_errors as _storage_errors
from .main import entry_point

data_config_option = click.option(
    "--data-config",
    envvar="DATA_CONFIG",
    required=True,
    help='A JSON file (local, gs:// or s3://) listing the batches as [{"batch_id": ..., "n_data": ...}]; '
    "ids are 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit.",
)
n_rows_option = click.option(
    "--n-rows",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Number of rows to generate per batch.",
)
n_drop_option = click.option(
    "--n-drop-batch",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Number of batch ids to drop (those that sort last).",
)


@entry_point.command()
@data_config_option
@click.option(
    "--input",
    "inputs",
    metavar="FOLDER",
    multiple=True,
    help="Also say whether FOLDER/batch_id=<id> holds data, for each FOLDER (repeatable).",
)
def batches(data_config: str, inputs: tuple[str, ...]) -> None:
    """Print "<batch_id> <n_data>" for every batch of DATA_CONFIG, after checking all of it.

    With --input, each line goes on with "ready" when every FOLDER/batch_id=<id>
    holds data, or "missing <path>" naming the first that does not: one call
    answers for every batch of a stage.
    """
    with _storage_errors():
        lines = []
        for batch in dataconfig.load(location(data_config)):
            line = f"{batch.batch_id} {batch.n_data}"
            if inputs:
                missing = ops.first_missing(
                    [location(folder).join(f"batch_id={batch.batch_id}") for folder in inputs]
                )
                line += " ready" if missing is None else f" missing {missing}"
            lines.append(line)
    for line in lines:
        click.echo(line)


@entry_point.group("integration")
def integration_group() -> None:
    """Deterministic test data for both servers, and the check of what they published."""


@integration_group.command()
@data_config_option
@options.public_key
@options.output_2
@n_rows_option
@click.option(
    "--n-partitions",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Number of part files per batch.",
)
@n_drop_option
@options.prg_keying
def generate(
    data_config: str,
    public_key_hex_internal: str,
    public_key_hex_external: str,
    output_a: str,
    output_b: str,
    n_rows: int,
    n_partitions: int,
    n_drop_batch: int,
    prg_keying: str,
) -> None:
    """Generate test shares from a data config (internal key = server A's, external = B's).

    Each kept batch gets n_rows - 1 clients with payload[i] = 1 if i % 3 == 0 or
    i % 5 == 0 and one client encoded with n_data + 1; an unknown batch "bad-id"
    gets n_rows clients. Writes batch_id=<id>/part-*.ndjson and _SUCCESS.
    """
    key_a = options.public_key_from_hex(public_key_hex_internal, "--public-key-hex-internal")
    key_b = options.public_key_from_hex(public_key_hex_external, "--public-key-hex-external")
    with _storage_errors():
        from .. import integration  # the engine, only where test data is made

        written = integration.generate(
            dataconfig.load(location(data_config)),
            key_a,
            key_b,
            location(output_a),
            location(output_b),
            n_rows,
            n_partitions,
            n_drop_batch,
            PrgKeying(prg_keying),
        )
    for batch_id, rows in written.items():
        click.echo(f"generated {rows} rows for batch {batch_id}")


@integration_group.command()
@data_config_option
@click.option("--published-A", "published_a", required=True, help="Server A's processed/publish folder.")
@click.option("--published-B", "published_b", required=True, help="Server B's processed/publish folder.")
@n_rows_option
@n_drop_option
def check(data_config: str, published_a: str, published_b: str, n_rows: int, n_drop_batch: int) -> None:
    """Check that both servers published the expected counts for every generated batch."""
    with _storage_errors():
        batches_ = dataconfig.load(location(data_config))
        from .. import integration

        problems = integration.check(
            batches_, location(published_a), location(published_b), n_rows, n_drop_batch
        )
        for batch in integration.kept_batches(batches_, n_drop_batch):
            if not problems:
                counts = integration.published_payload(
                    location(published_a).join(f"batch_id={batch.batch_id}")
                )
                click.echo(f"batch {batch.batch_id}: {counts}")
    for problem in problems:
        click.echo(f"MISMATCH {problem}", err=True)
    if problems:
        sys.exit(1)
    click.echo("both servers published the expected counts")
