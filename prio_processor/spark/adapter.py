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
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ..engine import keys
from ..engine.client import Client
from ..engine.config import Config
from ..engine.prg import PrgKeying
from ..engine.server import Schedule, Server, TotalShare
from ..pipeline import settings, stages
from ..pipeline.errors import RejectReason, SettingsMismatch
from ..pipeline.index import PacketIndex
from ..pipeline.settings import SettingsCheck
from ..pipeline.tally import Tally
from ..storage import BadRecord
from ..storage.records import dumps, parse_line

RESULT_SCHEMA = pa.schema([
    ("kind", pa.string()), ("line", pa.string()), ("id", pa.string()), ("reason", pa.string()),
    ("detail", pa.string()), ("count", pa.int64()), ("payload", pa.string()),
])
RESULT_DDL = ("kind string, line string, id string, reason string, detail string, count long, "
              "payload string")

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


def _parse(line: str) -> dict[str, Any] | BadRecord:
    """A line as `prio` parses it (Spark does not know its line number)."""
    return parse_line(line.encode("utf-8", "surrogatepass"), "input", 0)


class _Lines:
    """Input lines of a partition as pipeline records.

    Blank lines are not records, as in `prio`. A line that is not a JSON object
    is counted and rejected here. A line whose id JSON readers disagree on is
    rejected too: Spark placed it by the id it read, so duplicates of it could
    not be found.
    """

    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def record(self, line: str | None, key: str | None, path: str | None) -> dict[str, Any] | None:
        if line is None or not line.strip():
            return None
        record = _parse(line)
        if isinstance(record, BadRecord):
            self.tally.total += 1
            self.tally.reject(None, RejectReason.BAD_JSON, f"a line of {path} is not a JSON object")
            return None
        record_id = stages.id_key(record.get("id"))
        if record_id is not None and record_id != key:
            self.tally.total += 1
            self.tally.reject(record_id, RejectReason.BAD_JSON,
                              "the record's id cannot be read unambiguously")
            return None
        return record


def _record_sink(out: list[dict[str, Any]]) -> Callable[[dict[str, Any]], None]:
    return lambda record: out.append({"kind": "record", "line": dumps(record)})


def verify1_partition(spec: ServerSpec, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Columns value, key, file (in input order per id) -> verify1 result rows."""
    tally = _ListingTally("verify1")
    lines = _Lines(tally)
    out: list[dict[str, Any]] = []

    def records() -> Iterator[Any]:
        for batch in batches:
            for line, key, path in zip(*(batch.column(c).to_pylist() for c in ("value", "key", "file"))):
                record = lines.record(line, key, path)
                if record is not None:
                    yield record
            yield stages.END_OF_PART

    stages.verify1(spec.server(), SCHEDULE, records(), _record_sink(out), tally)
    yield from _batches(out + tally.result_rows(), RESULT_SCHEMA)


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
