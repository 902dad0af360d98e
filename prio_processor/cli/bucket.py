"""`prio bucket`: storage operations for the server scripts (local folders, gs:// or s3://)."""

from __future__ import annotations

import sys

import click

from ..storage import Location, StorageError, location, ops
from ..storage.locations import LocalLocation
from .base import ConfigError
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


@bucket.command()
@click.argument("path")
@click.option("--owner", required=True, help="Who holds the lock, as a second run is told ('process A').")
@click.option(
    "--ttl",
    envvar="LOCK_TTL",
    type=click.FloatRange(min=1),
    default=180,
    show_default=True,
    show_envvar=True,
    help="Seconds after which a lock that is not renewed counts as expired (its holder was killed).",
)
def lock(path: str, owner: str, ttl: float) -> None:
    """Take the lock object PATH and hold it while standard input stays open.

    First checks that the store enforces conditional writes (exit 2 naming it if not).
    The lock {owner, host, pid, started, expires} is created only if absent; when another
    run holds it, exits 2 with one line naming the holder. An expired lock is taken over
    (with a warning) only if nobody changed it meanwhile. Once held, prints `locked PATH`
    on stdout, renews it every 30 s (a third of --ttl if shorter) and deletes it when its
    standard input closes (the run that started it ended, however it ended) or on SIGTERM;
    exits 2 if another run took it. `pid` is the parent process's: the run holding it.
    """
    import os
    import select
    import signal

    from ..storage.lock import LockHeld, LockLost, RunLock

    where = location(path)
    held = RunLock(where, owner, ttl, pid=os.getppid())
    with _storage_errors(f"{owner}: "):
        held.check_store()
        try:
            warning = held.take()
        except LockHeld as exc:
            raise ConfigError(f"{owner}: another run is going on: {exc}") from None
    if warning:
        click.echo(f"{owner}: {warning}", err=True)

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    click.echo(f"locked {where.uri}")
    sys.stdout.flush()
    interval = min(30.0, ttl / 3)
    try:
        while True:
            readable, _, _ = select.select([sys.stdin], [], [], interval)
            if readable and not os.read(sys.stdin.fileno(), 4096):
                return  # the run ended: release
            if not readable:
                try:
                    held.renew()
                except LockLost as exc:
                    raise ConfigError(f"{owner}: {exc}") from None
                except StorageError as exc:  # try again at the next renewal, before it expires
                    click.echo(f"{owner}: could not renew the lock {where.uri}: {exc}", err=True)
    finally:
        try:
            held.release()
        except StorageError as exc:
            click.echo(f"{owner}: could not release the lock {where.uri}: {exc}", err=True)


@bucket.command()
@click.argument("buckets", metavar="BUCKET...", nargs=-1, required=True)
@click.option(
    "--data",
    "data",
    nargs=2,
    metavar="PREFIX TAIL",
    default=None,
    help="Also require files under FIRST-BUCKET/PREFIX/TAIL (TAIL: <partner key>/APP_NAME); if there are "
    "none, name the prefixes of the first bucket that do hold TAIL.",
)
def check(buckets: tuple[str, ...], data: tuple[str, str] | None) -> None:
    """Exit 2 at once, naming every problem, unless each BUCKET exists and can be read.

    For bin/process, before it waits for anything: a mistyped bucket or prefix
    never arrives, however long one waits.
    """
    problems = [
        f"bucket {path}: {problem}"
        for path in buckets
        if (problem := ops.bucket_problem(location(path))) is not None
    ]
    if data is not None and not problems:
        prefix, tail = (part.strip("/") for part in data)
        root = location(buckets[0])
        with _storage_errors():
            if not root.join(*prefix.split("/"), *tail.split("/")).is_dir():
                problems.append(_no_data(buckets[0], root, prefix, tail))
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        sys.exit(2)


def _no_data(bucket_path: str, root: Location, prefix: str, tail: str) -> str:
    message = f"nothing at all under {bucket_path.rstrip('/')}/{prefix}/{tail}/"
    others = [p for p in ops.data_prefixes(root, tuple(tail.split("/"))) if p != prefix]
    if others:
        hint = ", ".join(others)
        return f"{message}; this partner key and app have data under another prefix: {hint} (BUCKET_PREFIX?)"
    return f"{message}: check BUCKET_PREFIX, APP_NAME and PUBLIC_KEY_HEX_EXTERNAL"
