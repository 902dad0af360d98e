"""Progress of a long stage on stderr at a steady pace, for logs and pipes (not only terminals).

A line every PROGRESS_INTERVAL seconds (10 by default), from a timer thread, so that a
stage that stalls says so too: records done (of how many, when known) and the rate.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import click

from ..storage import Location, StorageError
from ..storage.locations import LocalLocation, is_part_name

DEFAULT_INTERVAL = 10.0


def interval() -> float:
    """Seconds between progress lines (PROGRESS_INTERVAL; 0 turns them off)."""
    value = os.environ.get("PROGRESS_INTERVAL", "")
    try:
        seconds = float(value) if value else DEFAULT_INTERVAL
    except ValueError:
        seconds = DEFAULT_INTERVAL
    return max(seconds, 0.0)


def local_line_count(source: Location | None) -> int | None:
    """Lines in the JSON-lines part files of a local input (one record each), or None when unknown:
    a bucket (counting would read it twice) or Parquet. Counting reads 1 GB in about a second."""
    if not isinstance(source, LocalLocation):
        return None
    files = [source] if source.is_file() else source.parts() if source.is_dir() else []
    lines = 0
    for part in files:
        if not is_part_name(part.name) or part.name.endswith(".parquet"):
            return None
        with part.open_read() as stream:
            last = b"\n"
            while chunk := stream.read(8 * 1024 * 1024):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
            lines += last != b"\n"
    return lines


def rate(count: float, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s" if seconds > 0 else "-"


class Steady:
    """Calls `write(describe(elapsed seconds))` every `every` seconds until stopped."""

    def __init__(
        self,
        describe: Callable[[float], str | None],
        every: float,
        write: Callable[[str], None] = lambda line: click.echo(line, err=True),
    ) -> None:
        self._describe = describe
        self._every = every
        self._write = write
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = time.monotonic()
        self.lines = 0

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                line = self._describe(time.monotonic() - self.started)
            except Exception:  # a progress line is never worth a traceback: the next one may do
                continue
            if line:
                self._write(line)
                self.lines += 1

    def __enter__(self) -> Steady:
        if self._every > 0:
            self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class RecordCounter:
    """The records a stage has read, for `Steady`: `N of M records, R/s, Ts`. The total is
    looked up once, at the first line: a stage shorter than the interval never pays for it."""

    def __init__(self, what: str, total: Callable[[], int | None]) -> None:
        self.what = what
        self._total = total
        self._known: list[int | None] = []
        self.done = 0

    def add(self, count: int) -> None:
        self.done += count

    def describe(self, elapsed: float) -> str:
        if not self._known:
            try:
                self._known.append(self._total())
            except (StorageError, OSError):  # the stage itself says what is wrong with its input
                self._known.append(None)
        total = self._known[0]
        of = f" of {total:,}" if total is not None else ""
        return f"{self.what}: {self.done:,}{of} records, {rate(self.done, elapsed)}, {elapsed:.0f}s"
