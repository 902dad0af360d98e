"""Bucket operations for the server scripts: sync, completion markers, waiting, deleting."""

from __future__ import annotations

import time
from collections.abc import Callable

from .locations import LocalLocation, Location, StorageError, is_hidden

SUCCESS_MARKER = "_SUCCESS"


def is_shareable(name: str) -> bool:
    """Whether sync copies the file at relative `name`: not a marker, side file or unfinished write.

    A writer killed mid-write leaves a hidden `.<name>.*.tmp` beside its target
    (private, and incomplete); markers and `_`-files are never data.
    """
    return not any(is_hidden(part) for part in name.split("/")) and not name.endswith(".tmp")


def list_files(root: Location) -> list[str]:
    """Relative names of every file below `root` (empty if it does not exist)."""
    return [name for name, _ in root.walk()]


def copy_file(source: Location, target: Location) -> None:
    with source.open_read() as src, target.open_write() as dst:
        while chunk := src.read(8 * 1024 * 1024):
            dst.write(chunk)


def sync(source: Location, target: Location, mark_success: bool = True, stamp: str = "") -> int:
    """Make `target` hold exactly the shareable files of `source`, then mark it complete.

    The old marker goes first, so a reader never takes a half-synced folder
    for a complete one; the new one holds `stamp`, which names the inputs the
    files were made from. Returns the number of files copied.
    """
    if not source.is_dir():
        raise StorageError(f"{source} is not a folder: nothing to sync")
    files = dict(source.walk())
    marker = target.join(SUCCESS_MARKER)
    if marker.is_file():
        marker.delete()
    wanted = {name for name in files if is_shareable(name)}
    for name, old in target.walk():
        if name not in wanted:
            old.delete()
    for name in sorted(wanted):
        copy_file(files[name], target.join(name))
    target.prune()
    if mark_success:
        marker.write_bytes(stamp.encode())
    return len(wanted)


def mark_success(folder: Location) -> None:
    folder.join(SUCCESS_MARKER).write_bytes(b"")


def delete_all(root: Location) -> int:
    """Delete every file below `root`; returns how many there were."""
    files = root.walk()
    for _, file in files:
        file.delete()
    root.clear_stale_temporaries()  # in buckets, the uploads killed writers left unfinished
    root.prune()
    if root.is_file():
        root.delete()
        return len(files) + 1
    return len(files)


def first_missing(folders: list[Location]) -> Location | None:
    """The first of `folders` that holds no data file, or None when all of them do."""
    return next((folder for folder in folders if not folder.has_data()), None)


def _marker_ready(marker: Location, stamp: str | None, report: Callable[[str], None]) -> bool:
    """Whether `marker` exists and, when a stamp is expected, is for those inputs.

    An empty marker (the original's servers write empty ones) is accepted.
    """
    if stamp is None:
        return marker.is_file()
    if not marker.is_file():
        return False
    found = marker.read_bytes().decode("utf-8", "replace").strip()
    if found in ("", stamp):
        return True
    report(f"{marker} is for other inputs ({found}, here {stamp}): waiting for the partner's current run")
    return False


def wait_for(
    target: Location,
    retry_limit: int,
    retry_delay: float,
    backoff: float,
    sleep: Callable[[float], None] = time.sleep,
    report: Callable[[str], None] = lambda _: None,
    stamp: str | None = None,
    poll: float | None = None,
) -> bool:
    """Wait until `target` exists (holding `stamp`, if given), sleeping retry_delay * backoff**k.

    Gives up (returns False) after retry_limit + 1 sleeps, as the original did. With `poll`,
    each sleep is cut into slices of at most that many seconds, looking again after each: the
    marker is taken as soon as it appears, with the same patience in all.
    """
    delay = retry_delay
    for attempt in range(retry_limit + 1):
        if _marker_ready(target, stamp, report):
            return True
        report(
            f"waiting {delay:g}s for {target} "
            f"(wait {attempt + 1} of {retry_limit + 1}: the first, then up to {retry_limit} "
            f"{'retry' if retry_limit == 1 else 'retries'})"
        )
        if poll is None or poll >= delay:
            sleep(delay)
        else:
            deadline = time.monotonic() + delay
            while (left := deadline - time.monotonic()) > 0:
                sleep(min(poll, left))
                if left > poll and _marker_ready(target, stamp, lambda _: None):
                    return True
        delay *= backoff
    return _marker_ready(target, stamp, report)


def bucket_problem(bucket: Location) -> str | None:
    """Why `bucket` (a gs:// bucket or a local folder) cannot be read, or None when it can."""
    try:
        found = bucket.is_dir() or bucket.is_file()
        if found or not isinstance(bucket, LocalLocation):
            # A cloud bucket answers a listing (empty or not) only if it exists and may be read.
            bucket.folders()
            return None
    except StorageError as exc:
        return str(exc)
    return f"{bucket} does not exist"


def data_prefixes(
    bucket: Location, tail: tuple[str, ...], max_depth: int = 4, max_listings: int = 100
) -> list[str]:
    """The prefixes P (up to `max_depth` folders deep) under which `bucket`/P/`tail` holds files.

    Breadth first, one listing per folder, at most `max_listings` listings, never below a
    folder named `tail[0]` (the partner key, where the data itself lies): a quick look for where
    the data went when the configured prefix holds none, not a scan of the bucket.
    """
    found: list[str] = []
    level = [""]
    listings = 0
    for _ in range(max_depth + 1):
        below: list[str] = []
        for prefix in level:
            if listings >= max_listings:
                return found
            folder = bucket.join(*prefix.split("/")) if prefix else bucket
            names = folder.folders()
            listings += 1
            if prefix and tail[0] in names and folder.join(*tail).is_dir():
                found.append(prefix)
            below.extend(
                f"{prefix}/{name}" if prefix else name
                for name in names
                if not is_hidden(name) and name != tail[0]
            )
        level = below
    return found
