"""`prio bucket`: storage operations for the server scripts (local folders, gs:// or s3://)."""

from __future__ import annotations

import sys

import click

from ..storage import location, ops
from ..storage.locations import LocalLocation
from .base import storage_errors as _storage_errors
from .main import entry_point


@entry_point.group()
def bucket() -> None:
    """Storage operations on local folders, gs:// and s3:// buckets, for the bin/ scripts."""


@bucket.command("ls")
@click.argument("path")
def ls(path: str) -> None:
    """List every file below PATH, one relative name per line."""
    with _storage_errors():
        for name in ops.list_files(location(path)):
            click.echo(name)


@bucket.command()
@click.argument("paths", metavar="PATH...", nargs=-1, required=True)
def exists(paths: tuple[str, ...]) -> None:
    """Exit 0 if every PATH is a data file or a folder holding data files (not only markers), else 1."""
    with _storage_errors():
        missing = ops.first_missing([location(path) for path in paths])
    sys.exit(0 if missing is None else 1)


@bucket.command()
@click.argument("path")
@click.option(
    "--retry-limit",
    envvar="RETRY_LIMIT",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Give up after this many waits plus one.",
)
@click.option(
    "--retry-delay",
    envvar="RETRY_DELAY",
    type=click.FloatRange(min=0),
    default=2,
    show_default=True,
    help="Seconds of the first wait.",
)
@click.option(
    "--retry-backoff-exponent",
    envvar="RETRY_BACKOFF_EXPONENT",
    type=click.FloatRange(min=1),
    default=2,
    show_default=True,
    help="Each wait is this many times longer than the one before.",
)
@click.option(
    "--stamp",
    default=None,
    help="Wait for a marker holding this stamp (or an empty one): a marker with another stamp "
    "is from other inputs.",
)
def wait(
    path: str, retry_limit: int, retry_delay: float, retry_backoff_exponent: float, stamp: str | None
) -> None:
    """Wait until the file PATH (a _SUCCESS marker, say) exists; exit 1 when retries run out."""
    with _storage_errors():
        marker = location(path)
        found = ops.wait_for(
            marker,
            retry_limit,
            retry_delay,
            retry_backoff_exponent,
            report=lambda line: click.echo(line, err=True),
            stamp=stamp,
            # A local marker is a cheap look: take it as soon as it appears. In a bucket every
            # look is a request: once a second at most.
            poll=0.05 if isinstance(marker, LocalLocation) else 1.0,
        )
    if not found:
        click.echo(f"Reached the maximum number of retries waiting for {path}.", err=True)
        sys.exit(1)


@bucket.command()
@click.argument("source")
@click.argument("target")
@click.option("--no-marker", is_flag=True, help="Do not write TARGET/_SUCCESS after the copy.")
@click.option("--stamp", default="", help="Write this into TARGET/_SUCCESS: what the files were made from.")
def sync(source: str, target: str, no_marker: bool, stamp: str) -> None:
    """Make TARGET hold exactly the files of SOURCE (deleting others), then write TARGET/_SUCCESS.

    Hidden files, `_` files and unfinished `*.tmp` writes are not copied.
    """
    with _storage_errors():
        count = ops.sync(location(source), location(target), mark_success=not no_marker, stamp=stamp)
    click.echo(f"synced {count} files to {target}")


@bucket.command()
@click.argument("path")
def touch(path: str) -> None:
    """Write PATH/_SUCCESS, marking the folder complete."""
    with _storage_errors():
        ops.mark_success(location(path))


@bucket.command()
@click.argument("paths", metavar="PATH...", nargs=-1, required=True)
def rm(paths: tuple[str, ...]) -> None:
    """Delete everything below each PATH."""
    with _storage_errors():
        for path in paths:
            count = ops.delete_all(location(path))
            click.echo(f"deleted {count} files from {path}" if count else f"nothing to delete in {path}")


@bucket.command()
@click.argument("paths", metavar="PATH...", nargs=-1, required=True)
def create(paths: tuple[str, ...]) -> None:
    """Create the bucket of each gs:// or s3:// PATH (or the local folder) if it does not exist."""
    with _storage_errors():
        for path in paths:
            location(path).create_bucket()
