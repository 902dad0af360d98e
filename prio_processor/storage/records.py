"""Streams of JSON records: newline-delimited JSON, or Parquet when a name ends in .parquet."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from .locations import Location, StorageError

PARQUET_SUFFIX = ".parquet"
_BATCH_ROWS = 4096


@dataclass(frozen=True)
class BadRecord:
    """A line that is not a JSON object; counted and reported, never dropped silently."""

    source: str
    line: int


def _is_parquet(loc: Location) -> bool:
    return loc.name.endswith(PARQUET_SUFFIX)


def read_records(loc: Location) -> Iterator[dict[str, Any] | BadRecord]:
    """Records of one file, in order, without holding the file in memory."""
    if _is_parquet(loc):
        yield from _read_parquet(loc)
        return
    with loc.open_read() as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                yield BadRecord(loc.uri, number)
                continue
            yield record if isinstance(record, dict) else BadRecord(loc.uri, number)


def _read_parquet(loc: Location) -> Iterator[dict[str, Any] | BadRecord]:
    import pyarrow.parquet as pq

    with loc.open_read() as f:
        try:
            parquet = pq.ParquetFile(f)
            for batch in parquet.iter_batches(batch_size=_BATCH_ROWS):
                yield from batch.to_pylist()
        except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) on corrupt files
            raise StorageError(f"cannot read {loc.uri} as Parquet: {exc}") from None


def read_all(locations: Iterable[Location]) -> Iterator[dict[str, Any] | BadRecord]:
    for loc in locations:
        yield from read_records(loc)


def dumps(record: dict[str, Any]) -> str:
    """One record as the original tool wrote it (json.dumps default separators)."""
    return json.dumps(record)


class RecordWriter:
    """Writes records to one file that appears only once complete."""

    def __init__(self, loc: Location) -> None:
        self.loc = loc
        self.count = 0
        self._stack = contextlib.ExitStack()
        self._file = None
        self._parquet = None
        self._pending: list[dict[str, Any]] = []

    def __enter__(self) -> "RecordWriter":
        self._file = self._stack.enter_context(self.loc.open_write())
        return self

    def write(self, record: dict[str, Any]) -> None:
        self.count += 1
        if _is_parquet(self.loc):
            self._pending.append(record)
            if len(self._pending) >= _BATCH_ROWS:
                self._flush_parquet()
            return
        self._file.write((dumps(record) + "\n").encode("utf-8"))

    def _flush_parquet(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._pending:
            return
        table = pa.Table.from_pylist(self._pending)
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self._file, table.schema)
        self._parquet.write_table(table)
        self._pending = []

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and _is_parquet(self.loc):
                self._flush_parquet()
                if self._parquet is None:  # no rows: still a valid, empty file
                    import pyarrow as pa
                    import pyarrow.parquet as pq

                    pq.write_table(pa.table({"id": pa.array([], pa.string())}), self._file)
                else:
                    self._parquet.close()
        finally:
            self._stack.__exit__(exc_type, exc, tb)
