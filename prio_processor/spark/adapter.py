"""The one place where Spark partitions meet prio_processor.pipeline.

Every function here runs inside a Spark task (through mapInArrow): it turns
Arrow batches of input lines into the records the pipeline stages expect,
runs the same stage function that `prio` runs over the whole partition, and
returns Arrow batches of result rows. Result rows carry a `kind`:

- "record": an output record, as the JSON line `prio` writes for it (`line`);
- "listed": a rejected record or an unusable verification packet line
  {id, reason, detail}, as `prio` lists it in its rejects file;
- "tally": the number of input records the partition counted (`count`);
- "reason": how many records the partition rejected for `reason` (`count`);
- "skipped": how many unusable verification packet lines the partition listed (`count`);
- "partial": a partial aggregate (aggregate only, `payload`);
- "mismatch": verification packets made with other settings (`detail` names what differs);
- "stamped": the partition's verification packets carried settings stamps.

Nothing here holds more than one partition's small verification packets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import pyarrow as pa
from pyspark import TaskContext

from ..engine import keys, limbs
from ..engine.client import Client
from ..engine.config import Config
from ..engine.errors import PacketError
from ..engine.prg import PrgKeying
from ..engine.server import Schedule, Server, TotalShare
from ..pipeline import settings, stages
from ..pipeline.cache import CachedAggregateSteps, CachedVerify2Steps, CacheMiss, CachingVerify1Steps
from ..pipeline.errors import RecordError, RejectReason, SettingsMismatch
from ..pipeline.index import PacketIndex
from ..pipeline.settings import SettingsCheck
from ..pipeline.tally import Tally
from ..storage import BadRecord
from ..storage.records import dumps, parse_line
from .cache import Keyed, Seen

RESULT_SCHEMA = pa.schema([
    ("kind", pa.string()), ("line", pa.string()), ("id", pa.string()), ("reason", pa.string()),
    ("detail", pa.string()), ("count", pa.int64()), ("payload", pa.string()),
])
RESULT_DDL = ("kind string, line string, id string, reason string, detail string, count long, "
              "payload string")

# verify1's result rows and, with a cache, the cache's rows ("row", "sum": spark/cache.py).
VERIFY1_SCHEMA = pa.schema(list(RESULT_SCHEMA) + [
    ("key", pa.string()), ("file", pa.string()), ("block", pa.int64()), ("row", pa.int64()),
    ("seq", pa.int64()), ("body", pa.binary()), ("mac", pa.binary()),
])
VERIFY1_DDL = (RESULT_DDL + ", key string, file string, block long, row long, seq long, body binary, "
               "mac binary")

SHARES_SCHEMA = pa.schema([
    ("kind", pa.string()), ("id", pa.string()), ("a", pa.string()), ("b", pa.string()),
    ("reason", pa.string()), ("detail", pa.string()), ("count", pa.int64()),
])
SHARES_DDL = "kind string, id string, a string, b string, reason string, detail string, count long"

INDEX_SCHEMA = pa.schema([
    ("kind", pa.string()), ("key", pa.string()), ("payload", pa.string()), ("digest", pa.string()),
    ("reason", pa.string()), ("detail", pa.string()),
    ("file", pa.string()), ("block", pa.int64()), ("row", pa.int64()),
])
INDEX_DDL = ("kind string, key string, payload string, digest string, reason string, detail string, "
             "file string, block long, row long")

INTEGRATION_SCHEMA = pa.schema([("batch_id", pa.string()), ("id", pa.string()), ("a", pa.string()),
                                ("b", pa.string())])
INTEGRATION_DDL = "batch_id string, id string, a string, b string"

_OUT_ROWS = 4096
#: prio-spark evaluates every packet at the first draw of the server PRG.
SCHEDULE = Schedule.FIXED


@dataclass(frozen=True)
class ServerSpec:
    """What a task needs to rebuild this server; secrets are kept out of repr."""

    n_data: int
    batch_id: bytes
    server_id: str
    public_key_hex_internal: str
    public_key_hex_external: str
    prg_keying: str
    private_key_hex: str = field(repr=False)
    shared_secret: bytes = field(repr=False)

    def config(self) -> Config:
        """The batch configuration; the internal key is this server's, so B's swaps them."""
        pair = (self.public_key_hex_internal, self.public_key_hex_external)
        key_a, key_b = pair if self.server_id == "A" else pair[::-1]
        return Config(self.n_data, keys.public_key_from_hex(key_a), keys.public_key_from_hex(key_b),
                      self.batch_id)

    def server(self) -> Server:
        return Server(self.config(), self.server_id, keys.private_key_from_hex(self.private_key_hex),
                      self.shared_secret, PrgKeying(self.prg_keying))


def tally_from_counts(stage: str, total: int, reasons: dict[str, int], skipped: int = 0) -> Tally:
    """A Tally holding counts gathered from all partitions (for the aggregate record and summaries)."""
    tally = Tally(stage)
    tally.total = total
    tally.reasons.update(reasons)
    tally.skipped = skipped
    return tally


class _ListingTally(Tally):
    """A partition's Tally: its rejects become "listed" result rows."""

    def __init__(self, stage: str) -> None:
        self.rows: list[dict[str, Any]] = []
        super().__init__(stage, lambda entry: self.rows.append({"kind": "listed", **entry}))

    def result_rows(self) -> list[dict[str, Any]]:
        """The listed rejects and the counts (collected by the driver without a shuffle)."""
        counts = [{"kind": "reason", "reason": reason, "count": n} for reason, n in self.reasons.items()]
        return self.rows + counts + [{"kind": "tally", "count": self.total},
                                     {"kind": "skipped", "count": self.skipped}]


def _batches(rows: list[dict[str, Any]], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    for start in range(0, len(rows), _OUT_ROWS):
        yield pa.RecordBatch.from_pylist(rows[start:start + _OUT_ROWS], schema=schema)


def _parse(line: str | bytes) -> dict[str, Any] | BadRecord:
    """A line as `prio` parses it (Spark does not know its line number); shares come as bytes."""
    return parse_line(line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass"), "input", 0)


class _Lines:
    """Input lines of a partition as pipeline records.

    Blank lines are not records, as in `prio`. A line that is not a JSON object
    is counted and rejected here. A line whose id JSON readers disagree on is
    rejected too: Spark placed it by the id it read, so duplicates of it could
    not be found.
    """

    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def record(self, line: str | bytes | None, key: str | None, path: str | None) -> dict[str, Any] | None:
        found = self.check(line, key, path)
        return found if isinstance(found, dict) else None

    def check(self, line: str | bytes | None, key: str | None,
              path: str | None) -> dict[str, Any] | tuple[str | None, str] | None:
        """The record of a line; None for a blank line; (id, detail) of a line rejected (and
        counted) as bad_json."""
        if not line or line.isspace():  # blank (strip() would copy a long line first)
            return None
        record = _parse(line)
        if isinstance(record, BadRecord):
            return self._reject(None, f"a line of {path} is not a JSON object")
        record_id = stages.id_key(record.get("id"))
        if record_id is not None and record_id != key:
            return self._reject(record_id, "the record's id cannot be read unambiguously")
        return record

    def _reject(self, record_id: str | None, detail: str) -> tuple[str | None, str]:
        self.tally.total += 1
        self.tally.reject(record_id, RejectReason.BAD_JSON, detail)
        return record_id, detail


def _record_sink(out: list[dict[str, Any]]) -> Callable[[dict[str, Any]], None]:
    return lambda record: out.append({"kind": "record", "line": dumps(record)})


class _KeyHashes:
    """64-bit hashes of the ids Spark placed a partition's lines by, for the driver to find any
    id that occurs more than once (a collision only makes it take the exact, slower plan)."""

    def __init__(self) -> None:
        self._hashes: list[int] = []

    def add(self, keys: Iterable[str | None]) -> None:
        for key in keys:
            if key is not None:
                digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
                self._hashes.append(int.from_bytes(digest, "little"))

    def row(self) -> dict[str, Any]:
        packed = np.array(self._hashes, dtype=np.uint64).tobytes()
        return {"kind": "keys", "payload": stages.encode_base64(packed)}


def repeated(payloads: Iterable[str]) -> bool:
    """Whether the partitions' "keys" rows hold some hash more than once."""
    hashes = np.concatenate([np.frombuffer(base64.b64decode(p), dtype=np.uint64) for p in payloads] or
                            [np.zeros(0, dtype=np.uint64)])
    return len(np.unique(hashes)) != len(hashes)


def verify1_partition(spec: ServerSpec, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Columns value, key, file (in input order per id) -> verify1 result rows."""
    tally = _ListingTally("verify1")
    lines = _Lines(tally)
    out: list[dict[str, Any]] = []
    hashes = _KeyHashes()

    def records() -> Iterator[Any]:
        for batch in batches:
            columns = [batch.column(c).to_pylist() for c in ("value", "key", "file")]
            hashes.add(columns[1])
            for line, key, path in zip(*columns):
                record = lines.record(line, key, path)
                if record is not None:
                    yield record
            yield stages.END_OF_PART

    stages.verify1(spec.server(), SCHEDULE, records(), _record_sink(out), tally)
    yield from _batches(out + tally.result_rows() + [hashes.row()], RESULT_SCHEMA)


# What a cache row's body holds of a record, by the name of the frame list it comes from
# (pipeline/cache.py's frames hold a chunk's records as lists and byte strings).
_BODY_LISTS = (("id", "ids"), ("problem", "problems"), ("open", "open"), ("open_h", "open_h"),
               ("open_data", "open_data"), ("digest", "digests"), ("fields", "fields"))
_ELEMENT = 11
_BODY_BYTES = (("triple", "triples", 3 * _ELEMENT), ("point", "points", _ELEMENT), ("h", "h", _ELEMENT))


class _CacheRows:
    """The cache rows a task makes, each with its sequence number and MAC."""

    def __init__(self, keyed: Keyed, out: list[dict[str, Any]]) -> None:
        self.keyed = keyed
        self.seen = Seen(keyed)
        self._out = out
        context = TaskContext.get()
        # Sequence numbers unique across tasks: the partition's number, then a counter.
        self._numbers = itertools.count((context.partitionId() if context else 0) << 32)

    def add(self, kind: str, key: str | None, file: str | None, block: int | None, row: int | None,
            body: dict[str, Any]) -> None:
        packed = msgpack.packb(body)
        seq = next(self._numbers)
        self.seen.add(seq)
        self._out.append({"kind": kind, "key": key, "file": file, "block": block, "row": row, "seq": seq,
                          "body": packed, "mac": self.keyed.mac(kind, key, file, block, row, seq, packed)})


def verify1_cached_partition(spec: ServerSpec, keyed: Keyed,
                             batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Columns value, key, file, block, row (in input order per id) -> verify1 result rows and
    the cache's rows: one per record, and each chunk's sum of evaluated data shares."""
    server = spec.server()
    tally = _ListingTally("verify1")
    lines = _Lines(tally)
    steps = CachingVerify1Steps(server, SCHEDULE, tally)
    out: list[dict[str, Any]] = []
    cache = _CacheRows(keyed, out)
    size = stages.batch_size(server.config)
    pending: list[tuple[str | None, str | None, int, int, Any]] = []
    hashes = _KeyHashes()

    def flush() -> None:
        records = [entry[4] for entry in pending if isinstance(entry[4], dict)]
        openings, kept = steps.open_chunk(records, "")
        selections = steps.decide(openings, stages.given(records), "")
        made, packed, _ = steps.compute(kept, selections)
        out.extend({"kind": "record", "line": dumps(record)} for record in made)
        frame = msgpack.unpackb(packed, raw=False)
        at = 0
        for key, path, block, row, found in pending:
            if isinstance(found, dict):
                body = {name: frame[column][at] for name, column in _BODY_LISTS}
                body.update({name: frame[column][at * width:(at + 1) * width]
                             for name, column, width in _BODY_BYTES})
                body["evaluated"] = bool(frame["evaluated"][at])
                at += 1
            else:
                body = {"id": found[0], "problem": [RejectReason.BAD_JSON.value, found[1]]}
            cache.add("row", key, path, block, row, body)
        if records:
            cache.add("sum", None, None, None, None, {"data_sum": frame["data_sum"]})
        pending.clear()

    try:
        for batch in batches:
            columns = [batch.column(c).to_pylist() for c in ("value", "key", "file", "block", "row")]
            hashes.add(columns[1])
            for line, key, path, block, row in zip(*columns):
                found = lines.check(line, key, path)
                if found is not None:
                    pending.append((key, path, block, row, found))
                    if len(pending) >= size:
                        flush()
            if pending:
                flush()
    finally:
        steps.close()
    yield from _batches(out + tally.result_rows() + [cache.seen.row(), hashes.row()], VERIFY1_SCHEMA)


def _frame(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """The rows' bodies as one frame of pipeline/cache.py, which its stage steps read."""
    frame: dict[str, Any] = {column: [body.get(name) for body in bodies] for name, column in _BODY_LISTS}
    for name, column, width in _BODY_BYTES:
        frame[column] = b"".join(body.get(name) or bytes(width) for body in bodies)
    frame["evaluated"] = bytes(1 if body.get("evaluated") else 0 for body in bodies)
    return frame


_CACHE_JOINED = ("kind", "key", "file", "block", "row", "seq", "body", "mac", "internal_payload",
                 "internal_digest", "external_payload", "external_digest")


def _cached_rows(keyed: Keyed, seen: Seen, batch: pa.RecordBatch, internal: PacketIndex,
                 external: PacketIndex) -> tuple[list[tuple[str, dict[str, Any]]], list[bytes]]:
    """A batch of cache rows joined with packets, each authenticated: (key, body) of its records
    (their packets added to the indexes) and the bodies of its sums."""
    records, sums = [], []
    for kind, key, path, block, row, seq, body, mac, own, own_digest, peer, peer_digest in zip(
            *(batch.column(c).to_pylist() for c in _CACHE_JOINED)):
        if mac is None or body is None or seq is None or not hmac.compare_digest(
                mac, keyed.mac(kind, key, path, block, row, seq, body)):
            raise CacheMiss("a row of the cache does not authenticate (altered, or not written by this "
                            "server)")
        seen.add(seq)
        if kind == "sum":
            sums.append(body)
            continue
        if own is not None:
            internal.add(key, own, own_digest)
        if peer is not None:
            external.add(key, peer, peer_digest)
        unpacked = msgpack.unpackb(body, raw=False)
        if not isinstance(unpacked, dict):
            raise CacheMiss("a row of the cache holds something other than verify1's")
        records.append((key, unpacked))
    return records, sums


def _no_raw_records() -> Any:
    raise CacheMiss("a decision needs a share's record itself")


def _miss(exc: CacheMiss) -> dict[str, Any]:
    return {"kind": "miss", "detail": str(exc)}


def verify2_cached_partition(spec: ServerSpec, keyed: Keyed,
                             batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Cache rows joined with both servers' verify1 packets -> verify2 result rows, or a "miss"
    row when the cache cannot answer (the driver then reads the shares)."""
    tally = _ListingTally("verify2")
    out: list[dict[str, Any]] = []
    seen = Seen(keyed)
    with PacketIndex() as internal, PacketIndex() as external:
        steps = CachedVerify2Steps(spec.server(), SCHEDULE, internal, external, tally)
        try:
            for batch in batches:
                records, _ = _cached_rows(keyed, seen, batch, internal, external)
                if not records:
                    continue
                openings, kept = steps.open_frame(_frame([body for _, body in records]), None, 0)  # type: ignore[arg-type]
                selections = steps.decide(openings, _no_raw_records, "")
                if selections:
                    out.extend({"kind": "record", "line": dumps(record)}
                               for record in steps.compute(kept, selections))
        except CacheMiss as exc:
            yield from _batches([_miss(exc)], RESULT_SCHEMA)
            return
        finally:
            steps.close()
    yield from _batches(out + tally.result_rows() + [seen.row()], RESULT_SCHEMA)


def aggregate_cached_partition(spec: ServerSpec, keyed: Keyed,
                               batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Cache rows joined with both servers' verify2 packets -> this partition's total share (the
    sums verify1 made), the corrections it needs ("correct": id, share digest, +1 or -1) and
    rejects; or a "miss" row."""
    server = spec.server()
    n = server.config.n_data
    tally = _ListingTally("aggregate")
    total = TotalShare(n, server.index)
    seen = Seen(keyed)
    corrections: list[dict[str, Any]] = []
    with PacketIndex() as internal, PacketIndex() as external:
        steps = CachedAggregateSteps(server, internal, external, tally)
        try:
            for batch in batches:
                records, sums = _cached_rows(keyed, seen, batch, internal, external)
                for body in sums:
                    data_sum = msgpack.unpackb(body, raw=False).get("data_sum")
                    if not isinstance(data_sum, bytes) or len(data_sum) != n * _ELEMENT:
                        raise CacheMiss("a cache row's data sum has another length")
                    added = limbs.from_bytes11(np.frombuffer(data_sum, dtype=np.uint8).reshape(n, _ELEMENT))
                    total.add(limbs.canonical(added)[:, None, :])
                if not records:
                    continue
                frame = _frame([body for _, body in records])
                openings, _ = steps.open_frame(frame, None, 0)  # type: ignore[arg-type]
                chosen = {s[0] for s in steps.decide(openings, _no_raw_records, "")}
                for position, (key, fields) in enumerate(records):
                    evaluated = bool(frame["evaluated"][position])
                    if position in chosen and not (openings[position].problem is None
                                                   and openings[position].whole_problem is None):
                        raise CacheMiss("a share verify1 could not open is to be added up")
                    if evaluated != (position in chosen):
                        corrections.append({"kind": "correct", "id": key, "detail": fields.get("digest"),
                                            "count": 1 if position in chosen else -1})
        except CacheMiss as exc:
            yield from _batches([_miss(exc)], RESULT_SCHEMA)
            return
        finally:
            steps.close()
    partial = {"kind": "partial", "payload": stages.encode_base64(total.to_bytes())}
    yield from _batches([partial] + corrections + tally.result_rows() + [seen.row()], RESULT_SCHEMA)


class _Exact(Exception):
    """A packet line whose JSON id is not the id Spark placed it by: the exact plan is needed."""


class _PacketLines:
    """Verification packet lines read one at a time into an index, as index_partition reads them
    (settings stamps checked, unusable lines listed)."""

    def __init__(self, spec: ServerSpec, whose: str, tally: _ListingTally) -> None:
        self._check = SettingsCheck(spec.server(), SCHEDULE)
        self._whose = whose
        self._tally = tally
        self.mismatch: str | None = None
        self.stamped = False

    def add(self, line: str | None, key: str | None, index: PacketIndex) -> None:
        if line is None or not line.strip():
            return
        record = _parse(line)
        try:
            entry = stages.load_index([record], self._tally, None if self.mismatch else self._check,
                                      self._whose)
        except SettingsMismatch as exc:
            self.mismatch = str(exc)
            return
        with entry:
            for found_key in _keys(record):
                if found_key != key:
                    raise _Exact()
                found = entry.get(found_key)
                if found is not None:
                    index.add(found_key, found[0], found[1])
        self.stamped = self.stamped or (isinstance(record, dict) and record.get(settings.FIELD) is not None)

    def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        if self.mismatch is not None:
            rows.append({"kind": "mismatch", "detail": self.mismatch})
        if self.stamped:
            rows.append({"kind": "stamped"})
        return rows


#: The columns of merged_partition's input: cache rows, and packet lines (kind "internal",
#: "external") in `value`.
MERGED = ("kind", "key", "file", "block", "row", "seq", "body", "mac", "value")


def merged_partition(spec: ServerSpec, keyed: Keyed, stage: str, previous: str,
                     batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """verify2 or aggregate over the cache: cache rows and both servers' packet lines of the
    previous stage, sorted by id and, per id, packets first, each in input order. Rows as
    verify2_cached_partition and aggregate_cached_partition make, the packet lines' listed
    rejects and stamps as index_partition's; an "exact" row when a packet line's id is not
    the one Spark placed it by, a "miss" row when the cache cannot answer."""
    server = spec.server()
    n = server.config.n_data
    tally = _ListingTally(stage)
    unusable = _ListingTally("index")
    seen = Seen(keyed)
    total = TotalShare(n, server.index)
    out: list[dict[str, Any]] = []
    pending: list[tuple[str, dict[str, Any]]] = []
    size = stages.batch_size(server.config)
    readers = {"internal": _PacketLines(spec, f"this server's {previous}", unusable),
               "external": _PacketLines(spec, f"the partner's {previous}", unusable)}
    with PacketIndex() as internal, PacketIndex() as external:
        steps: CachedVerify2Steps | CachedAggregateSteps
        if stage == "verify2":
            steps = CachedVerify2Steps(server, SCHEDULE, internal, external, tally)
        else:
            steps = CachedAggregateSteps(server, internal, external, tally)
        indexes = {"internal": internal, "external": external}

        def flush() -> None:
            if not pending:
                return
            frame = _frame([body for _, body in pending])
            openings, kept = steps.open_frame(frame, None, 0)  # type: ignore[arg-type]
            selections = steps.decide(openings, _no_raw_records, "")
            if stage == "verify2":
                if selections:
                    out.extend({"kind": "record", "line": dumps(record)}
                               for record in steps.compute(kept, selections))
            else:
                out.extend(_corrections(pending, frame, openings, {s[0] for s in selections}))
            pending.clear()

        try:
            for batch in batches:
                for kind, key, path, block, row, seq, body, mac, value in zip(
                        *(batch.column(c).to_pylist() for c in MERGED)):
                    if kind in readers:
                        readers[kind].add(value, key, indexes[kind])
                        continue
                    if mac is None or body is None or seq is None or not hmac.compare_digest(
                            mac, keyed.mac(kind, key, path, block, row, seq, body)):
                        raise CacheMiss("a row of the cache does not authenticate (altered, or not written "
                                        "by this server)")
                    seen.add(seq)
                    unpacked = msgpack.unpackb(body, raw=False)
                    if not isinstance(unpacked, dict):
                        raise CacheMiss("a row of the cache holds something other than verify1's")
                    if kind == "sum":
                        if stage == "aggregate":
                            _add_sum(total, unpacked, n)
                        continue
                    pending.append((key, unpacked))
                    if len(pending) >= size:
                        flush()
            flush()
        except CacheMiss as exc:
            yield from _batches([_miss(exc)], RESULT_SCHEMA)
            return
        except _Exact:
            yield from _batches([{"kind": "exact"}], RESULT_SCHEMA)
            return
        finally:
            steps.close()
    rows = out + tally.result_rows() + [seen.row()]
    rows += [{"kind": "listed", "id": r["id"], "reason": r["reason"], "detail": r.get("detail")}
             for r in unusable.rows]
    rows += [{"kind": "skipped", "count": unusable.skipped}]
    for reader in readers.values():
        rows += reader.rows()
    if stage == "aggregate":
        rows.append({"kind": "partial", "payload": stages.encode_base64(total.to_bytes())})
    yield from _batches(rows, RESULT_SCHEMA)


def _add_sum(total: TotalShare, body: dict[str, Any], n: int) -> None:
    data_sum = body.get("data_sum")
    if not isinstance(data_sum, bytes) or len(data_sum) != n * _ELEMENT:
        raise CacheMiss("a cache row's data sum has another length")
    added = limbs.from_bytes11(np.frombuffer(data_sum, dtype=np.uint8).reshape(n, _ELEMENT))
    total.add(limbs.canonical(added)[:, None, :])


def _corrections(records: list[tuple[str, dict[str, Any]]], frame: dict[str, Any], openings: list[Any],
                 chosen: set[int]) -> list[dict[str, Any]]:
    """The shares aggregate adds that verify1 did not sum up (+1) and those it summed up that
    aggregate does not add (-1)."""
    rows = []
    for position, (key, fields) in enumerate(records):
        if position in chosen and not (openings[position].problem is None
                                       and openings[position].whole_problem is None):
            raise CacheMiss("a share verify1 could not open is to be added up")
        if bool(frame["evaluated"][position]) != (position in chosen):
            rows.append({"kind": "correct", "id": key, "detail": fields.get("digest"),
                         "count": 1 if position in chosen else -1})
    return rows


def correction_partition(spec: ServerSpec, wanted: frozenset[tuple[str, str]],
                         batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Share lines (value, key) -> the data shares of those whose (id, share digest) is wanted,
    as "share" rows {id, detail: digest, payload: the share's 11-byte elements in base64}."""
    server = spec.server()
    rows: list[dict[str, Any]] = []
    done: set[tuple[str, str]] = set()
    for batch in batches:
        for line, key in zip(batch.column("value").to_pylist(), batch.column("key").to_pylist()):
            record = _parse(line) if line else None
            if not isinstance(record, dict) or not isinstance(record.get("payload"), str):
                continue
            wanted_key = (key, stages.share_digest(record))
            if wanted_key not in wanted or wanted_key in done:
                continue
            try:
                _, payload = stages.id_and_payload(record)
                packet = server.open(payload, stages.DATA_ONLY)
            except (RecordError, PacketError):
                continue  # not found: the driver reads all shares instead
            share = limbs.canonical(server.data_shares([packet]).sum(axis=1))
            rows.append({"kind": "share", "id": key, "detail": wanted_key[1],
                         "payload": stages.encode_base64(limbs.to_bytes11(share).tobytes())})
            done.add(wanted_key)
    yield from _batches(rows, RESULT_SCHEMA)


def corrected(spec: ServerSpec, total: TotalShare, corrections: dict[tuple[str, str], int],
              shares: Iterable[tuple[str, str, str]]) -> TotalShare:
    """`total` with each wanted data share added `corrections[(id, digest)]` times (negative: taken
    out); CacheMiss if a share was not found."""
    n = spec.n_data
    found: dict[tuple[str, str], str] = {}
    for key, digest, payload in shares:
        found.setdefault((key, digest), payload)
    for wanted, times in corrections.items():
        if wanted not in found:
            raise CacheMiss("a share verify1 read is no longer in --input")
        if times:
            raw = base64.b64decode(found[wanted])
            share = limbs.from_bytes11(np.frombuffer(raw, dtype=np.uint8).reshape(n, _ELEMENT))
            total.add(limbs.canonical(share * times)[:, None, :])
    return total


_JOINED = ("value", "key", "file", "internal_payload", "internal_digest", "external_payload",
           "external_digest")


def _joined_records(batches: Iterable[pa.RecordBatch], lines: _Lines,
                    internal: PacketIndex, external: PacketIndex) -> Iterator[Any]:
    """Share records; the verification packets joined to each are added to the indexes first."""
    for batch in batches:
        for line, key, path, own, own_digest, peer, peer_digest in zip(
                *(batch.column(c).to_pylist() for c in _JOINED)):
            if own is not None:
                internal.add(key, own, own_digest)
            if peer is not None:
                external.add(key, peer, peer_digest)
            record = lines.record(line, key, path)
            if record is not None:
                yield record
        yield stages.END_OF_PART


def verify2_partition(spec: ServerSpec, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Shares joined with both servers' verify1 packets (in input order per id) -> verify2 result rows."""
    tally = _ListingTally("verify2")
    out: list[dict[str, Any]] = []
    with PacketIndex() as internal, PacketIndex() as external:
        records = _joined_records(batches, _Lines(tally), internal, external)
        stages.verify2(spec.server(), SCHEDULE, records, internal, external, _record_sink(out), tally)
    yield from _batches(out + tally.result_rows(), RESULT_SCHEMA)


def aggregate_partition(spec: ServerSpec, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Shares joined with both servers' verify2 packets -> this partition's total share and rejects."""
    tally = _ListingTally("aggregate")
    with PacketIndex() as internal, PacketIndex() as external:
        records = _joined_records(batches, _Lines(tally), internal, external)
        total = stages.aggregate(spec.server(), records, internal, external, tally)
    partial = {"kind": "partial", "payload": stages.encode_base64(total.to_bytes())}
    yield from _batches([partial] + tally.result_rows(), RESULT_SCHEMA)


def merge_partials(spec: ServerSpec, payloads: Iterable[str]) -> TotalShare:
    """One total share from the partitions' partial totals."""
    total = TotalShare(spec.n_data, "AB".index(spec.server_id))
    for payload in payloads:
        total.merge(TotalShare.from_bytes(base64.b64decode(payload), spec.n_data))
    return total


def index_partition(spec: ServerSpec, whose: str,
                    batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Verification packet lines -> index rows {key, payload, digest} with their input position,
    listed unusable lines, and what the settings stamps said (as `prio`'s load_index checks them)."""
    check = SettingsCheck(spec.server(), SCHEDULE)
    rows: list[dict[str, Any]] = []
    tally = _ListingTally("index")
    mismatch: str | None = None
    stamped = False
    for batch in batches:
        columns = (batch.column(c).to_pylist() for c in ("value", "file", "block", "row"))
        for line, path, block, row in zip(*columns):
            if line is None or not line.strip():
                continue
            record = _parse(line)
            position = {"file": path, "block": block, "row": row}
            listed = len(tally.rows)
            try:
                entry = stages.load_index([record], tally, None if mismatch else check, whose)
            except SettingsMismatch as exc:
                mismatch = str(exc)
                continue
            with entry:
                for key in _keys(record):
                    found = entry.get(key)
                    if found is not None:
                        rows.append({"kind": "index", "key": key, "payload": found[0], "digest": found[1],
                                     **position})
            stamped = stamped or (isinstance(record, dict) and record.get(settings.FIELD) is not None)
            rows.extend({"kind": "listed", "key": r["id"], "reason": r["reason"], "detail": r.get("detail"),
                         **position} for r in tally.rows[listed:])
    rows.append({"kind": "skipped", "detail": str(tally.skipped)})
    if mismatch is not None:
        rows.append({"kind": "mismatch", "detail": mismatch})
    if stamped:
        rows.append({"kind": "stamped"})
    yield from _batches(rows, INDEX_SCHEMA)


def _keys(record: dict[str, Any] | BadRecord) -> list[str]:
    record_id = stages.id_key(record.get("id")) if isinstance(record, dict) else None
    return [] if record_id is None else [record_id]


def aggregate_row(spec: ServerSpec, total: TotalShare, tally: Tally, stamped: bool) -> dict[str, Any]:
    """The aggregate record as `prio` writes it; stamped with the schedule once its inputs were."""
    return stages.aggregate_record(spec.server(), total, tally, SCHEDULE if stamped else None)


def parse_lines(lines: Iterable[str]) -> list[Any]:
    """JSON lines as the pipeline reads them; lines that are not objects become BadRecords."""
    records: list[Any] = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            records.append(parse_line(line.encode("utf-8", "surrogatepass"), "aggregate input", number))
    return records


@dataclass(frozen=True)
class ClientSpec:
    """A client configuration for encoding: server A's and B's public keys."""

    n_data: int
    batch_id: bytes
    public_key_hex_a: str
    public_key_hex_b: str
    prg_keying: str

    def client(self, n_data: int | None = None, batch_id: str | None = None) -> Client:
        config = Config(n_data or self.n_data, keys.public_key_from_hex(self.public_key_hex_a),
                        keys.public_key_from_hex(self.public_key_hex_b),
                        self.batch_id if batch_id is None else batch_id.encode("utf-8"))
        return Client(config, PrgKeying(self.prg_keying))


def encode_partition(spec: ClientSpec, prec: int | None,
                     batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Client lines {"payload": [bits]} -> share rows (id, a, b) and rejects."""
    client = spec.client()
    tally = _ListingTally("encode-shares")
    shares: dict[str, dict[str, Any]] = {}

    def records() -> Iterator[Any]:
        for batch in batches:
            for line, path in zip(batch.column("value").to_pylist(), batch.column("file").to_pylist()):
                if line is None or not line.strip():
                    continue
                record = _parse(line)
                if isinstance(record, BadRecord):
                    tally.total += 1
                    tally.reject(None, RejectReason.BAD_JSON, f"a line of {path} is not a JSON object")
                    continue
                yield record
            yield stages.END_OF_PART

    def sink_a(record: dict[str, Any]) -> None:
        shares[record["id"]] = {"kind": "record", "id": record["id"], "a": record["payload"]}

    def sink_b(record: dict[str, Any]) -> None:
        shares[record["id"]]["b"] = record["payload"]

    stages.encode_shares(client, records(), sink_a, sink_b, tally, prec)
    rows = [{k: v for k, v in r.items() if k in SHARES_SCHEMA.names} for r in tally.result_rows()]
    yield from _batches(list(shares.values()) + rows, SHARES_SCHEMA)


def random_partition(spec: ClientSpec, scale: int,
                     batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Row numbers -> shares of random bit vectors, each repeated `scale` times under fresh ids."""
    client = spec.client()
    rng = np.random.default_rng()
    size = stages.batch_size(client.config)
    for batch in batches:
        count = batch.num_rows
        for start in range(0, count, size):
            vectors = rng.integers(0, 2, (min(size, count - start), spec.n_data)).tolist()
            rows = [{"kind": "record", "id": str(uuid.uuid4()), "a": stages.encode_base64(a),
                     "b": stages.encode_base64(b)}
                    for a, b in client.encode_batch(vectors) for _ in range(scale)]
            yield from _batches(rows, SHARES_SCHEMA)


@dataclass(frozen=True)
class IntegrationRow:
    """Which client a generated row is: its batch, the length it is encoded with, its payload length."""

    batch_id: str
    n_data: int
    encoded_n_data: int


def integration_partition(spec: ClientSpec, plan: list[tuple[IntegrationRow, int]],
                          batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Row numbers -> deterministic integration clients; `plan` lists (kind of row, how many) in order."""
    from ..integration import payload

    bounds = np.cumsum([count for _, count in plan])
    clients: dict[tuple[str, int], Client] = {}
    for batch in batches:
        rows = []
        for number in batch.column("id").to_pylist():
            kind = plan[int(np.searchsorted(bounds, number, side="right"))][0]
            client_key = (kind.batch_id, kind.encoded_n_data)
            if client_key not in clients:
                clients[client_key] = spec.client(kind.encoded_n_data, kind.batch_id)
            share_a, share_b = clients[client_key].encode(payload(kind.encoded_n_data))
            rows.append({"batch_id": kind.batch_id, "id": str(uuid.uuid4()),
                         "a": stages.encode_base64(share_a), "b": stages.encode_base64(share_b)})
        yield from _batches(rows, INTEGRATION_SCHEMA)
