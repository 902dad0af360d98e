"""Streams of JSON records: newline-delimited JSON, or Parquet when a name ends in .parquet."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import orjson

from .locations import LocalLocation, Location, PendingWrites, StorageError

PARQUET_SUFFIX = ".parquet"
_BATCH_ROWS = 4096
#: Longest line read when the reader does not say (twice the largest client packet at libprio's
#: largest n_data, in base64). Longer lines are rejected without being held in memory.
DEFAULT_MAX_LINE = 32 * 1024 * 1024
_SKIP_CHUNK = 1 << 20


@dataclass(frozen=True)
class BadRecord:
    """A line that is not a JSON object; counted and reported, never dropped silently."""

    source: str
    line: int
    problem: str = "is not a JSON object"

    def describe(self) -> str:
        return f"line {self.line} of {self.source} {self.problem}"


def _is_parquet(loc: Location) -> bool:
    return loc.name.endswith(PARQUET_SUFFIX)


def read_records(loc: Location, max_line: int = DEFAULT_MAX_LINE) -> Iterator[dict[str, Any] | BadRecord]:
    """Records of one file, in order, holding neither the file nor a line over `max_line` bytes in memory."""
    source = loc.uri
    for item in read_raw(loc, max_line):
        yield parse_line(item[1], source, item[0]) if isinstance(item, tuple) else item


#: A JSON line not parsed yet, with its line number; Parquet rows and unreadable lines come as records.
RawLine = tuple[int, bytes]
#: Where a JSON line is in its file: (line number, offset, length).
LineSpan = tuple[int, int, int]


def read_raw(
    loc: Location, max_line: int = DEFAULT_MAX_LINE
) -> Generator[RawLine | dict[str, Any] | BadRecord, None, None]:
    """Like `read_records`, but JSON lines come unparsed, as (line number, bytes): parsing
    a share's line is much of a stage's work, so it is done where the rest of it is."""
    if _is_parquet(loc):
        yield from _read_parquet(loc)
        return
    with loc.open_read() as f:
        for number, line in _lines(f, loc, max_line):
            yield line if isinstance(line, BadRecord) else (number, line)


def read_spans(loc: LocalLocation, max_line: int = DEFAULT_MAX_LINE) -> Iterator[LineSpan | BadRecord]:
    """Where each JSON line of a local file is, for processes that read the lines themselves;
    the same lines, numbers and BadRecords as `read_raw`."""
    with loc.open_read() as f:
        for number, line in _lines(f, loc, max_line):
            yield line if isinstance(line, BadRecord) else (number, f.tell() - len(line), len(line))


def read_span_lines(path: str, spans: list[LineSpan]) -> list[RawLine]:
    """The lines at `spans` (in file order) of a local file, read at once."""
    if not spans:
        return []
    start = spans[0][1]
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(spans[-1][1] + spans[-1][2] - start)
    return [(number, data[offset - start : offset - start + length]) for number, offset, length in spans]


def _lines(f: IO[bytes], loc: Location, max_line: int) -> Iterator[tuple[int, bytes | BadRecord]]:
    """(line number, line) of the non-blank lines; a BadRecord for a line over `max_line` bytes."""
    number = 0
    while True:
        line = f.readline(max_line + 1)
        if not line:
            return
        number += 1
        if len(line) > max_line and not line.endswith(b"\n"):
            _skip_rest_of_line(f)
            yield number, BadRecord(loc.uri, number, f"is longer than {max_line} bytes")
            continue
        if line.isspace():  # blank (strip() would copy a long line first)
            continue
        yield number, line


def _skip_rest_of_line(f: IO[bytes]) -> None:
    while True:
        chunk = f.readline(_SKIP_CHUNK)
        if not chunk or chunk.endswith(b"\n"):
            return


def parse_line(line: bytes, source: str, number: int) -> dict[str, Any] | BadRecord:
    """One JSON line as a record, exactly as `json.loads` reads it, or a BadRecord.

    orjson reads the usual lines several times faster; lines it refuses or may read
    differently (NaN, lone surrogates, a byte-order mark, integers beyond 64 bits,
    which it turns into floats) are read again with `json`.
    """
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        record = _FALLBACK
    if record is _FALLBACK or _needs_json(record):
        try:
            record = json.loads(line)
        except RecursionError:  # nesting deeper than the parser's stack
            return BadRecord(source, number, "nests too deeply")
        except ValueError:  # includes invalid UTF-8
            return BadRecord(source, number)
    return record if isinstance(record, dict) else BadRecord(source, number)


_FALLBACK = object()


def _needs_json(record: Any) -> bool:
    try:
        return _has_float(record)
    except RecursionError:  # json decides what nests too deeply
        return True


def _has_float(value: Any) -> bool:
    # Exact types (parsers make no subclasses), and no call for the strings and integers
    # that fill nearly every record: this runs once per line of every input.
    kind = type(value)
    if kind is float:
        return True
    items = value.values() if kind is dict else value if kind is list else ()
    for item in items:
        kind = type(item)
        if kind is float or ((kind is dict or kind is list) and _has_float(item)):
            return True
    return False


def _read_parquet(loc: Location) -> Iterator[dict[str, Any] | BadRecord]:
    import pyarrow.parquet as pq

    with loc.open_read() as f:
        try:
            parquet = pq.ParquetFile(f)
            for batch in parquet.iter_batches(batch_size=_BATCH_ROWS):
                yield from batch.to_pylist()
        except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) on corrupt files
            raise StorageError(f"cannot read {loc.uri} as Parquet: {exc}") from None


def read_all(
    locations: Iterable[Location], max_line: int = DEFAULT_MAX_LINE
) -> Iterator[dict[str, Any] | BadRecord]:
    for loc in locations:
        yield from read_records(loc, max_line)


def dumps(record: dict[str, Any]) -> str:
    """One record as the original tool wrote it (json.dumps default separators)."""
    return _ENCODER.encode(record)


def _json_value(value: Any) -> Any:
    """Values Parquet inputs may carry that JSON lacks (dates, timestamps, bytes) as text."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"cannot write a value of type {type(value).__name__} as JSON")


# json.dumps(record, default=...) builds an encoder per call (a third of the cost of a
# verification packet's line); this one writes the same text.
_ENCODER = json.JSONEncoder(default=_json_value)


@contextlib.contextmanager
def _write_errors(loc: Location) -> Iterator[None]:
    """A full disk or a failing device is one clear StorageError, not a traceback."""
    try:
        yield
    except OSError as exc:
        raise StorageError(f"cannot write {loc.uri}: {exc.strerror or exc}") from None


class RecordWriter:
    """Writes records to one file that appears only once complete."""

    def __init__(self, loc: Location, pending: PendingWrites | None = None) -> None:
        """With `pending`, the file takes its name only when `pending` is committed."""
        self.loc = loc
        self._pending_writes = pending
        self.count = 0
        self._stack = contextlib.ExitStack()
        self._file: IO[bytes] | None = None
        self._parquet: Any = None
        self._pending: list[dict[str, Any]] = []

    def __enter__(self) -> RecordWriter:
        self._file = self._stack.enter_context(self.loc.open_write(self._pending_writes))
        return self

    def write(self, record: dict[str, Any]) -> None:
        self.count += 1
        if _is_parquet(self.loc):
            self._pending.append(record)
            if len(self._pending) >= _BATCH_ROWS:
                with _write_errors(self.loc):
                    self._flush_parquet()
            return
        if self._file is None:
            raise ValueError("RecordWriter.write outside its with block")
        try:  # not _write_errors: this runs once per record
            self._file.write((dumps(record) + "\n").encode("utf-8"))
        except OSError as exc:
            raise StorageError(f"cannot write {self.loc.uri}: {exc.strerror or exc}") from None

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

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        with _write_errors(self.loc):
            self._finish(exc_type, exc, tb)

    def _finish(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
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
