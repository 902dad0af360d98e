"""The protocol stages as library functions over streams of records.

Records are dicts as the original tool wrote them: shares and verification
packets are {"id", "payload": base64}. Every stage streams its main input,
works in batches, and keeps in memory only the verification packets it must
join by id. Each rejected record is counted in a Tally with its reason.

Evaluation points follow the original command line exactly: in the
sequential schedule the k-th packet that opens at this server, in input
order, uses the k-th draw of the server PRG, and a stage only opens a packet
once the records it is joined with were found.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import pybase64

from ..engine import codec, limbs, seal
from ..engine.client import Client, bits_from_uints
from ..engine.codec import Verify2
from ..engine.config import Config
from ..engine.errors import PacketError, Reason
from ..engine.server import Schedule, Server, TotalShare, Verify1, final_totals, is_valid
from ..storage import BadRecord
from ..storage.records import parse_line
from . import settings
from .errors import PublishError, RecordError, RejectReason, SettingsMismatch
from .index import PacketIndex
from .settings import SettingsCheck
from .tally import Tally

BATCH_SIZE = 128
# Fewer packets per batch for long vectors: memory in flight stays near
# BATCH_SIZE x 2048 elements.
_BATCH_ELEMENTS = BATCH_SIZE * 2048
# verify2 needs only the h points of a packet, aggregate only its data shares;
# verify1 checked both arrays whole, and a packet it rejected has no verify packets.
H_ONLY = frozenset({"h"})
DATA_ONLY = frozenset({"data"})

Record = dict[str, Any]
Sink = Callable[[Record], None]
# Room for a record's id and other fields beside its payload, on one line.
_LINE_FIELDS_ALLOWANCE = 64 * 1024


def max_line_bytes(config: Config) -> int:
    """The longest input line a stage reads: about twice the largest client packet of this
    configuration in base64. Longer lines are rejected unread (never held in memory)."""
    elements = config.n_data + config.n_points + 16
    packet = elements * (codec.ELEMENT_BYTES + 1) + len(config.batch_id) + seal.OVERHEAD + 256
    return 2 * 4 * (packet // 3 + 1) + _LINE_FIELDS_ALLOWANCE


def decode_base64(text: Any) -> bytes:
    """Base64 as the original decoded it: characters outside the alphabet are
    dropped (AES-GCM authenticates the bytes anyway); bad padding is an error."""
    if not isinstance(text, str):
        raise RecordError(RejectReason.BAD_JSON, "payload is not a string")
    try:
        # Strict base64 (nearly every payload) decodes several times faster with pybase64;
        # anything else is decoded by the standard library, whose permissive rules we keep.
        return pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:
        return base64.b64decode(text)
    except (binascii.Error, ValueError):
        raise RecordError(RejectReason.BAD_BASE64, "payload is not valid base64 (bad padding)") from None


def encode_base64(data: bytes) -> str:
    return pybase64.b64encode(data).decode("ascii")


def id_key(value: Any) -> str | None:
    """A record's id as the key that joins it across stages and servers, or None if it has none.

    Ids are strings; integers (the row numbers the original's staging wrote) are taken as their
    decimal digits, which is also how outputs carry them on. So 7 and "7" are one id.
    """
    if isinstance(value, str):
        return value
    if type(value) is int:  # not bool
        return str(value)
    return None


def id_and_payload(record: Record | BadRecord) -> tuple[str, bytes]:
    """The id and decoded payload of a share-like record, or RecordError."""
    if isinstance(record, BadRecord):
        raise RecordError(RejectReason.BAD_JSON, record.describe())
    record_id = id_key(record.get("id"))
    if record_id is None or "payload" not in record:
        raise RecordError(RejectReason.BAD_JSON, "record needs a string or integer id and a payload")
    return record_id, decode_base64(record["payload"])


def _fields(record: Record) -> Record:
    """The record's other fields (submission_date, ...), which outputs keep, without its payload;
    the id as its key, so that outputs are the same whether or not they come through the cache."""
    kept = dict(record)
    kept["id"] = id_key(record.get("id"))
    kept["payload"] = None  # keeps the field's position; the output's payload replaces it
    return kept


def share_digest(record: Record) -> str:
    """Binds a verification packet to the exact share it was made from, so that a
    second share under the same id cannot ride on the first one's proof."""
    return hashlib.sha256(str(record["payload"]).encode("utf-8", "surrogatepass")).hexdigest()[:32]


#: Marks the end of an input part in a share stream: pending batches are written
#: out, so that each part's output is complete before the next part starts.
END_OF_PART = object()


def _record_id(record: Record | BadRecord) -> str | None:
    return id_key(record.get("id")) if isinstance(record, dict) else None


Index = PacketIndex


def load_index(
    records: Iterable[Record | BadRecord],
    tally: Tally,
    check: SettingsCheck | None = None,
    whose: str = "",
) -> PacketIndex:
    """id -> (base64 payload, share digest or None) of verification packets, in bounded memory.

    Later duplicates win, as in the original. Unusable lines are listed in the
    rejects but are not share errors. With `check`, records stamped with other
    settings raise SettingsMismatch. The caller closes the index.
    """
    index = PacketIndex()
    try:
        for record in records:
            record_id = _record_id(record)
            if (
                isinstance(record, BadRecord)
                or record_id is None
                or not isinstance(record.get("payload"), str)
            ):
                tally.skip(record_id, RejectReason.BAD_JSON, "unusable record in a verification packet file")
                continue
            if check is not None:
                check.check(record, whose)
            digest = record.get("digest")
            index.add(record_id, record["payload"], digest if isinstance(digest, str) else None)
    except BaseException:
        index.close()
        raise
    return index


class _SeenIds:
    """Ids already used in this input, in bounded memory (spilled to disk as the packet index is)."""

    def __init__(self) -> None:
        self._ids = PacketIndex()

    def __contains__(self, record_id: str) -> bool:
        return record_id in self._ids

    def add(self, record_id: str) -> None:
        self._ids.add(record_id, "")

    def close(self) -> None:
        self._ids.close()


def batch_size(config: Config) -> int:
    """Packets per batch for a configuration."""
    return max(1, min(BATCH_SIZE, _BATCH_ELEMENTS // config.n_points))


class _Batcher:
    """Collects opened packets and runs a batch function every `size` items."""

    def __init__(self, run: Callable[[list], None], size: int) -> None:
        self._run = run
        self._size = size
        self.items: list = []

    def add(self, item: Any) -> None:
        self.items.append(item)
        if len(self.items) >= self._size:
            self.flush()

    def flush(self) -> None:
        if self.items:
            items, self.items = self.items, []
            self._run(items)

    def records(self, stream: Iterable[Any], tally: Tally) -> Iterator[Any]:
        """The records of a stream, each counted in `tally`; at END_OF_PART and at the
        end the pending batch is run, so a part's output is written before the next part."""
        for record in stream:
            if record is END_OF_PART:
                self.flush()
                continue
            tally.total += 1
            yield record
        self.flush()


class Opening:
    """What the in-order step needs to know of one record after its first step
    (parse, decode, decrypt), which may run in another process."""

    __slots__ = ("digest", "open_problem", "problem", "record_id", "whole_problem")

    def __init__(self, record_id: str | None) -> None:
        self.record_id = record_id
        self.problem: Problem | None = None  # the record is unusable (bad JSON, bad base64)
        self.open_problem: Problem | None = None  # the part of its packet this stage reads does not open
        self.whole_problem: Problem | None = None  # the whole packet does not open (known from a cache)
        self.digest: str | None = None

    def __getstate__(self) -> tuple:
        return self.record_id, self.problem, self.open_problem, self.whole_problem, self.digest

    def __setstate__(self, state: tuple) -> None:
        self.record_id, self.problem, self.open_problem, self.whole_problem, self.digest = state


#: (reason, detail) of a rejected record.
Problem = tuple[RejectReason | Reason, str]
#: A record read but not yet parsed: a JSON line and its line number, or a parsed record.
RawItem = tuple[int, bytes] | Record | BadRecord
#: (position in the chunk, evaluation point or None, what the compute step needs besides the packet).
Selection = tuple[int, int | None, Any]


def as_record(item: RawItem, source: str) -> Record | BadRecord:
    """The record of a raw item (JSON lines are parsed where the heavy work runs)."""
    if isinstance(item, tuple):
        return parse_line(item[1], source, item[0])
    return item


def _problem(exc: PacketError | RecordError) -> Problem:
    return exc.reason, exc.detail


class StageSteps:
    """A server stage over chunks of records, in three steps:

    * `open_chunk` parses, decodes and decrypts (any process; keeps the opened packets);
    * `decide`, in input order in one process, joins, finds duplicates, draws the
      evaluation points and counts rejects: what makes outputs independent of how
      many processes did the other steps;
    * `compute` runs the batch arithmetic on the packets `open_chunk` kept.
    """

    #: Which of server A's arrays the stage decodes.
    arrays: frozenset = codec.BOTH_ARRAYS

    def __init__(self, server: Server, tally: Tally) -> None:
        self.server = server
        self.tally = tally
        self.seen = _SeenIds()

    def open_chunk(self, items: Sequence[RawItem], source: str) -> tuple[list[Opening], list[Any]]:
        openings: list[Opening] = []
        kept: list[Any] = []
        for item in items:
            record = as_record(item, source)
            opening = Opening(_record_id(record))
            openings.append(opening)
            kept.append(None)
            try:
                _, payload = id_and_payload(record)
            except RecordError as exc:
                opening.problem = _problem(exc)
                continue
            assert not isinstance(record, BadRecord)
            opening.digest = share_digest(record)
            try:
                packet = self.server.open(payload, self.arrays)
            except PacketError as exc:
                opening.open_problem = _problem(exc)
                continue
            kept[-1] = (_fields(record), opening.digest, packet)
        return openings, kept

    def decide(
        self, openings: Sequence[Opening], items: Callable[[], Sequence[RawItem]], source: str
    ) -> list[Selection]:
        """`items` gives the chunk's raw records, for the rare decision that needs one again."""
        selections = []
        for position, opening in enumerate(openings):
            self.tally.total += 1
            try:
                selection = self._decide(position, opening, _item_at(items, position), source)
            except (PacketError, RecordError) as exc:
                self.tally.reject(opening.record_id, exc.reason, exc.detail)
                continue
            if selection is not None:
                selections.append(selection)
        return selections

    def _decide(
        self, position: int, opening: Opening, item: Callable[[], RawItem], source: str
    ) -> Selection | None:
        raise NotImplementedError

    def compute(self, kept: Sequence[Any], selections: Sequence[Selection]) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        self.seen.close()


def _item_at(items: Callable[[], Sequence[RawItem]], position: int) -> Callable[[], RawItem]:
    return lambda: items()[position]


def _points(selections: Sequence[Selection]) -> list[int]:
    return [cast(int, s[1]) for s in selections]


def _raise(problem: Problem | None) -> None:
    if problem is not None:
        raise RecordError(*problem)


class Verify1Steps(StageSteps):
    def __init__(self, server: Server, schedule: Schedule, tally: Tally) -> None:
        super().__init__(server, tally)
        self.points = server.points(schedule)
        self.stamp = settings.stamp(server, schedule)

    def _decide(
        self, position: int, opening: Opening, item: Callable[[], RawItem], source: str
    ) -> Selection | None:
        _raise(opening.problem)
        _raise(opening.open_problem)
        point = next(self.points)  # the peer draws for this packet too, duplicate or not
        record_id = opening.record_id
        assert record_id is not None
        if record_id in self.seen:
            raise RecordError(RejectReason.DUPLICATE_ID, "id seen before in this input")
        self.seen.add(record_id)
        return position, point, None

    def compute(self, kept: Sequence[Any], selections: Sequence[Selection]) -> list[Record]:
        if not selections:
            return []
        chosen = [kept[s[0]] for s in selections]
        results = self.server.verify1([c[2] for c in chosen], _points(selections))
        return [output_record(c[0], out.to_bytes(), c[1], self.stamp) for c, out in zip(chosen, results)]


def _joined_packets(opening: Opening, internal: Index, external: Index, stage: str) -> tuple[bytes, bytes]:
    """Both servers' decoded `stage` packets for a share, or RecordError."""
    found = []
    for index, reason, whose in (
        (internal, RejectReason.MISSING_OWN_PACKET, "this server"),
        (external, RejectReason.MISSING_PEER_PACKET, "the other server"),
    ):
        entry = index.get(opening.record_id)  # type: ignore[arg-type]
        if entry is None:
            raise RecordError(reason, f"no {stage} packet of {whose} for this id")
        found.append(decode_base64(entry[0]))
    return found[0], found[1]


def _check_own_digest(opening: Opening, internal: Index, stage: str) -> None:
    """The share must be the one our own `stage` packet was made from."""
    made_from = internal[opening.record_id][1]  # type: ignore[index]
    if made_from is not None and made_from != opening.digest:
        raise RecordError(
            RejectReason.SHARE_MISMATCH,
            f"this server's {stage} packet was made from another share with this id",
        )


class Verify2Steps(StageSteps):
    arrays = H_ONLY

    def __init__(
        self, server: Server, schedule: Schedule, internal: Index, external: Index, tally: Tally
    ) -> None:
        super().__init__(server, tally)
        self.points = server.points(schedule)
        self.stamp = settings.stamp(server, schedule)
        self.internal, self.external = internal, external

    def _decide(
        self, position: int, opening: Opening, item: Callable[[], RawItem], source: str
    ) -> Selection | None:
        _raise(opening.problem)
        own, peer = _joined_packets(opening, self.internal, self.external, "verify1")
        record_id = opening.record_id
        assert record_id is not None
        if record_id in self.seen:
            self._check_whole_packet(opening, item, source)
        else:
            _raise(opening.open_problem)
        point = next(self.points)
        if record_id in self.seen:
            raise RecordError(RejectReason.DUPLICATE_ID, "id seen before in this input")
        _check_own_digest(opening, self.internal, "verify1")
        packets = Verify1.from_bytes(own), Verify1.from_bytes(peer)
        self.seen.add(record_id)
        return position, point, packets

    def _check_whole_packet(self, opening: Opening, item: Callable[[], RawItem], source: str) -> None:
        """A repeated id may carry another packet: check that one whole, as libprio would."""
        _, payload = id_and_payload(as_record(item(), source))
        self.server.open(payload, codec.BOTH_ARRAYS)

    def compute(self, kept: Sequence[Any], selections: Sequence[Selection]) -> list[Record]:
        if not selections:
            return []
        chosen = [kept[s[0]] for s in selections]
        results = self.server.verify2(
            [c[2] for c in chosen],
            _points(selections),
            [s[2][0] for s in selections],
            [s[2][1] for s in selections],
        )
        return [output_record(c[0], out.to_bytes(), c[1], self.stamp) for c, out in zip(chosen, results)]


class AggregateSteps(StageSteps):
    arrays = DATA_ONLY

    def __init__(self, server: Server, internal: Index, external: Index, tally: Tally) -> None:
        super().__init__(server, tally)
        self.internal, self.external = internal, external

    def _decide(
        self, position: int, opening: Opening, item: Callable[[], RawItem], source: str
    ) -> Selection | None:
        _raise(opening.problem)
        own, peer = _joined_packets(opening, self.internal, self.external, "verify2")
        _check_own_digest(opening, self.internal, "verify2")
        _raise(opening.open_problem)
        if not is_valid(Verify2.from_bytes(own), Verify2.from_bytes(peer)):
            raise RecordError(RejectReason.INVALID_PROOF, "the proof does not verify")
        record_id = opening.record_id
        assert record_id is not None
        if record_id in self.seen:
            raise RecordError(RejectReason.DUPLICATE_ID, "id seen before in this input")
        self.seen.add(record_id)
        return position, None, None

    def compute(self, kept: Sequence[Any], selections: Sequence[Selection]) -> Any:
        """The canonical sum of the chosen packets' data shares, (4, 1, n_data) limbs, or None."""
        if not selections:
            return None
        shares = self.server.data_shares([kept[s[0]][2] for s in selections])
        return limbs.canonical(shares.sum(axis=1))[:, None, :]


def chunks(stream: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of at most `size` records; END_OF_PART ends a list early (an empty list for an empty part)."""
    chunk: list[Any] = []
    for record in stream:
        if record is END_OF_PART:
            yield chunk
            chunk = []
            continue
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def given(items: Sequence[RawItem]) -> Callable[[], Sequence[RawItem]]:
    """`items` for StageSteps.decide, when they are at hand."""
    return lambda: items


def run_inline(
    steps: StageSteps, stream: Iterable[Any], emit: Callable[[Any], None], source: str = ""
) -> None:
    """All three steps in this process, a chunk at a time."""
    try:
        for chunk in chunks(stream, batch_size(steps.server.config)):
            openings, kept = steps.open_chunk(chunk, source)
            selections = steps.decide(openings, given(chunk), source)
            emit(steps.compute(kept, selections))
    finally:
        steps.close()


def _sink_all(sink: Sink) -> Callable[[list[Record]], None]:
    def emit(records: list[Record]) -> None:
        for record in records:
            sink(record)

    return emit


def verify1(
    server: Server,
    schedule: Schedule,
    shares: Iterable[Record | BadRecord],
    sink: Sink,
    tally: Tally,
) -> None:
    """For every share that opens, write its record with the verify1 packet as payload
    (other fields kept), the share's digest and this server's settings stamp."""
    run_inline(Verify1Steps(server, schedule, tally), shares, _sink_all(sink))


def output_record(fields: Record, packet: bytes, digest: str, stamp: dict[str, Any]) -> Record:
    out = dict(fields)
    out["payload"] = encode_base64(packet)
    out["digest"] = digest
    out[settings.FIELD] = stamp
    return out


def verify2(
    server: Server,
    schedule: Schedule,
    shares: Iterable[Record | BadRecord],
    internal: Index,
    external: Index,
    sink: Sink,
    tally: Tally,
) -> None:
    """For every share with both verify1 packets, write its record with the verify2 packet
    as payload (other fields kept), the share's digest and this server's settings stamp."""
    run_inline(Verify2Steps(server, schedule, internal, external, tally), shares, _sink_all(sink))


def aggregate(
    server: Server,
    shares: Iterable[Record | BadRecord],
    internal: Index,
    external: Index,
    tally: Tally,
) -> TotalShare:
    """The total share of all shares whose proof both servers accepted."""
    total = TotalShare(server.config.n_data, server.index)
    steps = AggregateSteps(server, internal, external, tally)
    run_inline(steps, shares, lambda partial: add_partial(total, partial))
    return total


def add_partial(total: TotalShare, partial: Any) -> None:
    """Add a chunk's sum from AggregateSteps.compute."""
    if partial is not None:
        total.add(partial)


def aggregate_record(
    server: Server, total: TotalShare, tally: Tally, schedule: Schedule | str | None = None
) -> Record:
    """The aggregate file's record; batch_id, n_data, server_id and the settings stamp let
    publish check pairings. `schedule`: the one the verify2 packets were made with, if known."""
    return {
        "payload": encode_base64(total.to_bytes()),
        "error": tally.errors,
        "total": tally.total,
        "batch_id": server.config.batch_id.decode("utf-8", "replace"),
        "n_data": server.config.n_data,
        "server_id": "AB"[server.index],
        settings.FIELD: settings.stamp(server, None if schedule is None else Schedule(schedule)),
    }


def _merge_aggregates(
    config: Config, records: Iterable[Record | BadRecord], expected_index: int, side: str
) -> tuple[TotalShare, int, int, Any]:
    """Sum the partial aggregates of one server: (TotalShare, error, total, settings stamp or None)."""
    merged: TotalShare | None = None
    errors = totals = 0
    stamp: Any = None
    for record in records:
        if isinstance(record, BadRecord) or not isinstance(record.get("payload"), str):
            raise PublishError(f"the {side} aggregate is not a valid aggregate record")
        if "batch_id" in record and record["batch_id"] != config.batch_id.decode("utf-8", "replace"):
            raise PublishError(f"the {side} aggregate is for batch {record['batch_id']!r}, not this batch")
        if "n_data" in record and (type(record["n_data"]) is not int or record["n_data"] != config.n_data):
            raise PublishError(f"the {side} aggregate has n_data {record['n_data']}, not {config.n_data}")
        try:
            share = TotalShare.from_bytes(decode_base64(record["payload"]), config.n_data)
        except PacketError as exc:
            raise PublishError(f"the {side} aggregate does not fit this configuration: {exc}") from None
        if share.index != expected_index:
            found, expected = "AB"[share.index], "AB"[expected_index]
            raise PublishError(f"the {side} aggregate is server {found}'s, expected server {expected}'s")
        if merged is None:
            merged = share
        else:
            merged.merge(share)
        counts = record.get("error", 0), record.get("total", 0)
        if (
            not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)
            or counts[0] > counts[1]
        ):
            raise PublishError(f"the {side} aggregate has unusable error and total counts")
        errors += counts[0]
        totals += counts[1]
        if record.get(settings.FIELD) is not None:
            if stamp is not None and record[settings.FIELD] != stamp:
                raise SettingsMismatch(f"the {side} partial aggregates were made with different settings")
            stamp = record[settings.FIELD]
    if merged is None:
        raise PublishError(f"the {side} aggregate is empty")
    return merged, errors, totals, stamp


def publish(
    config: Config,
    server_index: int,
    internal: Iterable[Record | BadRecord],
    external: Iterable[Record | BadRecord],
    min_batch_size: int = 0,
    prec: int | None = None,
    max_error_ratio: float | None = None,
) -> Record:
    """The published record: per-index counts (or integer totals with `prec`), error and total.
    With `max_error_ratio`, refuses when more than that share of either server's clients failed."""
    own, error, total, own_stamp = _merge_aggregates(config, internal, server_index, "internal")
    peer, peer_error, peer_total, peer_stamp = _merge_aggregates(
        config, external, 1 - server_index, "external"
    )
    settings.compare_stamps(own_stamp, peer_stamp)
    if max_error_ratio is not None:
        sides = (("this server's", error, total), ("the partner's", peer_error, peer_total))
        for whose, failed, count in sides:
            if failed > max_error_ratio * count:
                raise PublishError(
                    f"{failed} of {count} of {whose} clients failed, more than --max-error-ratio "
                    f"{max_error_ratio:g}: the servers' keys, shared seed (secret), --prg-keying or "
                    "--evaluation-point likely differ"
                )
    valid = total - error
    if peer_total - peer_error != valid:
        # Both servers add up exactly the packets both accepted: other counts mean other batches or settings.
        raise SettingsMismatch(
            f"this server aggregated {valid} valid clients and the partner {peer_total - peer_error}: "
            "the servers did not verify the same shares with the same settings"
        )
    if valid < min_batch_size:
        raise PublishError(f"only {valid} valid clients, fewer than the minimum batch size {min_batch_size}")
    share_a, share_b = (own, peer) if server_index == codec.SERVER_A else (peer, own)
    try:
        if prec is not None:
            share_a, share_b = share_a.folded_uint(prec), share_b.folded_uint(prec)
        counts = final_totals(share_a, share_b)
    except ValueError as exc:
        raise PublishError(str(exc)) from None
    return {
        "id": str(uuid.uuid4()),
        "timestamp": datetime.now(UTC).replace(tzinfo=None).isoformat(),
        "payload": counts,
        "error": error,
        "total": total,
    }


def encode_shares(
    client: Client,
    inputs: Iterable[Record | BadRecord],
    sink_a: Sink,
    sink_b: Sink,
    tally: Tally,
    prec: int | None = None,
) -> None:
    """Encrypted shares {"id", "payload"} for both servers from {"payload": [bits]}
    (or integers with `prec`)."""
    n = client.config.n_data

    def run(items: list[list[int]]) -> None:
        for packet_a, packet_b in client.encode_batch(items):
            record_id = str(uuid.uuid4())
            sink_a({"id": record_id, "payload": encode_base64(packet_a)})
            sink_b({"id": record_id, "payload": encode_base64(packet_b)})

    batch = _Batcher(run, batch_size(client.config))
    for record in batch.records(inputs, tally):
        try:
            vector = _client_vector(record, n, prec)
        except RecordError as exc:
            tally.reject(_record_id(record), exc.reason, exc.detail)
            continue
        batch.add(vector)


def _client_vector(record: Record | BadRecord, n: int, prec: int | None) -> list[int]:
    if isinstance(record, BadRecord):
        raise RecordError(RejectReason.BAD_JSON, record.describe())
    payload = record.get("payload")
    if not isinstance(payload, list):
        raise RecordError(RejectReason.BAD_JSON, "payload must be a list")
    if prec is not None:
        try:
            payload = bits_from_uints(payload, prec)
        except ValueError as exc:
            raise RecordError(RejectReason.OUT_OF_RANGE, str(exc)) from None
    if len(payload) != n:
        raise RecordError(RejectReason.WRONG_LENGTH, f"payload has {len(payload)} bits, expected {n}")
    if any(isinstance(b, bool) or b not in (0, 1) for b in payload):
        raise RecordError(RejectReason.OUT_OF_RANGE, "payload entries must be 0 or 1")
    return [int(b) for b in payload]


__all__ = [
    "BATCH_SIZE",
    "END_OF_PART",
    "Index",
    "PublishError",
    "aggregate",
    "aggregate_record",
    "decode_base64",
    "encode_shares",
    "load_index",
    "max_line_bytes",
    "publish",
    "verify1",
    "verify2",
]
