"""Bucket operations for the server scripts: sync, completion markers, waiting, deleting."""

from __future__ import annotations

import time
from typing import Callable

from .locations import Location, StorageError

SUCCESS_MARKER = "_SUCCESS"


def list_files(root: Location) -> list[str]:
    """Relative names of every file below `root` (empty if it does not exist)."""
    return [name for name, _ in root.walk()]


def copy_file(source: Location, target: Location) -> None:
    with source.open_read() as src, target.open_write() as dst:
        while chunk := src.read(8 * 1024 * 1024):
            dst.write(chunk)


def sync(source: Location, target: Location, mark_success: bool = True) -> int:
    """Make `target` hold exactly the files of `source`, then mark it complete.

    The old marker goes first, so a reader never takes a half-synced folder
    for a complete one. Returns the number of files copied.
    """
    if not source.is_dir():
        raise StorageError(f"{source} is not a folder: nothing to sync")
    files = dict(source.walk())
    marker = target.join(SUCCESS_MARKER)
    if marker.is_file():
        marker.delete()
    wanted = {name for name in files if name != SUCCESS_MARKER}
    for name, old in target.walk():
        if name not in wanted:
            old.delete()
    for name in sorted(wanted):
        copy_file(files[name], target.join(name))
    target.prune()
    if mark_success:
        marker.write_bytes(b"")
    return len(wanted)


def mark_success(folder: Location) -> None:
    folder.join(SUCCESS_MARKER).write_bytes(b"")


def delete_all(root: Location) -> int:
    """Delete every file below `root`; returns how many there were."""
    files = root.walk()
    for _, file in files:
        file.delete()
    root.prune()
    if root.is_file():
        root.delete()
        return len(files) + 1
    return len(files)


def wait_for(
    target: Location,
    retry_limit: int,
    retry_delay: float,
    backoff: float,
    sleep: Callable[[float], None] = time.sleep,
    report: Callable[[str], None] = lambda _: None,
) -> bool:
    """Wait until `target` exists, sleeping retry_delay * backoff**k between looks.

    Gives up (returns False) after retry_limit + 1 sleeps, as the original did.
    """
    delay = retry_delay
    for attempt in range(retry_limit + 1):
        if target.is_file():
            return True
        report(f"waiting {delay:g}s for {target} (attempt {attempt + 1} of {retry_limit + 1})")
        sleep(delay)
        delay *= backoff
    return target.is_file()
