"""`prio summary`: what one server's run did, batch by batch (bin/process ends with it)."""

from __future__ import annotations

import sys

import click

from .. import dataconfig, summary
from ..storage import location
from .base import storage_errors as _storage_errors
from .integration import data_config_option
from .main import entry_point

#: The exit status of a run in which a batch FAILED.
FAILED_STATUS = 3


@entry_point.command("summary")
@data_config_option
@click.option("--raw", required=True, help="The client shares' folder (raw/shares): which batches had data.")
@click.option("--rejects", required=True, help="The run's rejects folder (rejects/<stage>/batch_id=<id>/).")
@click.option("--published", required=True, help="The run's published folder (processed/publish).")
@click.option(
    "--stamp",
    default="",
    help='verify1\'s counts, "<batch_id>=<n> ...": the totals of batches not published.',
)
def summary_command(data_config: str, raw: str, rejects: str, published: str, stamp: str) -> None:
    """Print one line per batch: valid clients, errors by reason, total and the published path.

    A batch that had data and published no valid client (or nothing at all) is
    FAILED, and then the exit status is 3; a batch without data is skipped.
    """
    with _storage_errors():
        summaries = summary.summarize(
            dataconfig.load(location(data_config)),
            location(raw),
            location(rejects),
            location(published),
            summary.parse_totals(stamp),
        )
    for batch in summaries:
        for line in batch.lines():
            click.echo(line)
    click.echo(summary.closing_line(summaries))
    if any(batch.failed for batch in summaries):
        sys.exit(FAILED_STATUS)
