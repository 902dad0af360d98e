"""What verify1 keeps of each share so that verify2 and aggregate need not open it again.

Opening a share (parsing its JSON line, decoding base64, decrypting, decoding
thousands of field elements) is most of a stage's work, and without a cache
verify1, verify2 and aggregate each do it for every share. Given a cache folder,
verify1 also writes, for every input record in input order:

* what the later stages decide with: the id, why the record or its packet was
  rejected (for the whole packet and for each half verify2 and aggregate read),
  the share digest, and the record's other fields;
* for verify2: the Beaver triple share, the evaluation point and this server's
  share of h at that point;
* for aggregate: the sum of the data shares of each chunk's packets verify1
  evaluated. aggregate takes back out the few whose proof failed (and adds any
  it accepts that verify1 did not evaluate), opening just those shares again
  from the input.

`cache-<part>.rows` holds one msgpack map per chunk.

`_manifest.json`, written last, ties the cache to the exact --input files (uri
and version) and this server's settings.

Nothing in the cache is taken on faith: it is authenticated with a key only this
server can derive (HKDF-SHA256 over its X25519 private key, with info
`prio-processor/cache/v1` || server id || batch id; never written anywhere, and
the partner, who knows the shared seed, cannot derive it). Each frame is stored
as [frame, MAC] with the MAC over the part's name, the frame's number and the
manifest's digest of the inputs, so frames cannot be altered, reordered or moved
between parts or caches; the manifest's MAC covers all of it, the number of
frames of each part included, so a cut-short part is noticed too. A frame or
manifest that does not authenticate is handled like a damaged cache. verify2 and aggregate given the same
folder use it only if it matches; when it does not, or a record needs what
verify1 did not compute (the sequential schedule drawing another point for it,
say), the stage reads the shares as it would without a cache. Outputs and
rejects are the same either way.

The cache holds this server's shares of client data in clear: it belongs in
the server's private storage only, never in a bucket the partner reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

import msgpack
import numpy as np

from ..engine import limbs
from ..engine.errors import PacketError
from ..engine.field import ELEMENT_BYTES
from ..engine.fingerprint import same_mac
from ..engine.server import Schedule, Server, verify2_messages
from ..storage import Location, StorageError
from ..storage.records import dumps, read_raw
from . import settings, stages
from .errors import RecordError, RejectReason
from .stages import Opening, Problem, RawItem, Record, Selection

FORMAT = 2
_KEY_INFO = b"prio-processor/cache/v1"
# Names no reader takes for data (not part-*, *.json, *.ndjson, *.parquet; the manifest is a side file).
MANIFEST = "_manifest.json"
PREFIX = "cache-"
ROWS_SUFFIX = ".rows"
#: The other fields of nearly every record: only its id (the payload's place is kept).
_ID_ONLY = ["id", "payload"]
_TRIPLE_BYTES = 3 * ELEMENT_BYTES


class CacheMiss(Exception):
    """The cache cannot answer for a record (or is damaged): the stage reads the shares instead."""


def _problem_out(problem: Problem | None) -> list[str] | None:
    return None if problem is None else [RejectReason(problem[0].value).value, problem[1]]


def _problem_in(value: Any) -> Problem | None:
    if value is None:
        return None
    try:
        return RejectReason(value[0]), str(value[1])
    except (ValueError, TypeError, IndexError, KeyError):
        raise CacheMiss("a cache file names an unknown reject reason") from None


def cache_key(server: Server) -> bytes:
    """The key the cache is authenticated with; only this server can derive it."""
    return server.private_key_derived(_KEY_INFO + server.server_id.encode() + server.config.batch_id)


def inputs_digest(inputs: Any) -> str:
    """SHA-256 of the stage's inputs as the manifest records them (prio-spark's cache rows bind it too)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _frame_mac(key: bytes, part: str, number: int, digest: str, body: bytes) -> bytes:
    # msgpack of a list is self-delimiting: no two (part, number, digest, body) encode alike.
    bound = msgpack.packb(["frame", part, number, digest])
    return hmac.new(key, bound + body, hashlib.sha256).digest()


def manifest_mac(key: bytes, found: dict[str, Any]) -> str:
    """The manifest's HMAC under the cache key: every field but the MAC itself."""
    fields = {k: v for k, v in found.items() if k != "mac"}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, b"manifest" + text, hashlib.sha256).hexdigest()


def _element_at(blob: bytes, position: int) -> int:
    return int.from_bytes(blob[position * ELEMENT_BYTES:(position + 1) * ELEMENT_BYTES], "big")


# -- verify1: writing ------------------------------------------------------------


class CachingVerify1Steps(stages.Verify1Steps):
    """verify1 that also returns, per chunk, its cache frame and data rows."""

    def open_chunk(self, items: Sequence[RawItem], source: str) -> tuple[list[Opening], Any]:
        openings, kept = super().open_chunk(items, source)
        halves: list[tuple[Problem | None, Problem | None] | None] = [None] * len(openings)
        for position, opening in enumerate(openings):
            if opening.problem is None and opening.open_problem is not None:
                halves[position] = self._half_problems(items[position], source)
        return openings, (openings, kept, halves)

    def _half_problems(self, item: RawItem, source: str) -> tuple[Problem | None, Problem | None]:
        """What verify2 (h points only) and aggregate (data shares only) meet opening their half
        of a packet that does not open whole: a failure may lie in the other half."""
        _, payload = stages.id_and_payload(stages.as_record(item, source))
        found: list[Problem | None] = []
        for arrays in (stages.H_ONLY, stages.DATA_ONLY):
            try:
                self.server.open(payload, arrays)
                found.append(None)
            except PacketError as exc:
                found.append((exc.reason, exc.detail))
        return found[0], found[1]

    def compute(  # type: ignore[override]  # the records, and what the cache keeps of the chunk
        self, kept: Any, selections: Sequence[Selection]
    ) -> tuple[list[Record], bytes, int]:
        openings, packets, halves = kept
        chosen = [packets[s[0]] for s in selections]
        points = [int(s[1]) for s in selections]  # type: ignore[arg-type]
        messages, h_values, data = self.server.verify1_and_h([c[2] for c in chosen], points)
        records = [
            stages.output_record(c[0], m.to_bytes(), c[1], self.stamp) for c, m in zip(chosen, messages)
        ]
        evaluated = {s[0]: (point, h) for s, point, h in zip(selections, points, h_values)}
        data_sum = limbs.to_bytes11(data.sum(axis=1)).tobytes()
        return records, _frame(openings, packets, halves, evaluated, data_sum), len(openings)


def _frame(
    openings: Sequence[Opening],
    packets: Sequence[Any],
    halves: Sequence[tuple[Problem | None, Problem | None] | None],
    evaluated: dict[int, tuple[int, int]],
    data_sum: bytes,
) -> bytes:
    """A chunk's msgpack frame. `data_sum`: the sum of the data shares of the packets verify1
    evaluated, which aggregate corrects for the few it does not add up."""
    fields: list[str | None] = []
    triples, points, h_values = bytearray(), bytearray(), bytearray()
    for position, kept in enumerate(packets):
        if kept is None:
            fields.append(None)
            triples += bytes(_TRIPLE_BYTES)
        else:
            record_fields, _digest, packet = kept
            fields.append(None if list(record_fields) == _ID_ONLY else dumps(record_fields))
            triples += b"".join(v.to_bytes(ELEMENT_BYTES, "big") for v in packet.triple)
        point, h_r = evaluated.get(position, (0, 0))
        points += point.to_bytes(ELEMENT_BYTES, "big")
        h_values += h_r.to_bytes(ELEMENT_BYTES, "big")
    frame = {
        "ids": [o.record_id for o in openings],
        "problems": [_problem_out(o.problem) for o in openings],
        "open": [_problem_out(o.open_problem) for o in openings],
        "open_h": [None if half is None else _problem_out(half[0]) for half in halves],
        "open_data": [None if half is None else _problem_out(half[1]) for half in halves],
        "digests": [o.digest for o in openings],
        "fields": fields,
        "triples": bytes(triples),
        "evaluated": bytes(1 if p in evaluated else 0 for p in range(len(openings))),
        "points": bytes(points),
        "h": bytes(h_values),
        "data_sum": data_sum,
    }
    return msgpack.packb(frame)


def manifest(server: Server, schedule: Schedule, parts: Sequence[Location]) -> dict[str, Any]:
    """What a cache is tied to: the server, its settings and the exact input files."""
    return {
        "format": FORMAT,
        "server_id": server.server_id,
        "batch_id": server.config.batch_id.decode("utf-8", "replace"),
        "n_data": server.config.n_data,
        settings.FIELD: settings.stamp(server, schedule),
        "inputs": [{"uri": part.uri, "version": part.version()} for part in parts],
    }


class CacheWriter:
    """Writes a cache folder: each input part's frames, then the manifest."""

    def __init__(self, folder: Location, server: Server, schedule: Schedule, parts: Sequence[Location]):
        self._folder = folder
        self._manifest = manifest(server, schedule, parts)
        self._key = cache_key(server)
        self._digest = inputs_digest(self._manifest["inputs"])
        self._rows: dict[str, int] = {}  # records per part: a file cut short is noticed
        self._frames: dict[str, int] = {}
        self._stack: contextlib.ExitStack | None = None
        self._file: IO[bytes] | None = None
        self._name: str | None = None

    def __enter__(self) -> CacheWriter:
        # An earlier manifest must not vouch for files this run replaces: it goes first.
        self._folder.join(MANIFEST).delete()
        self._folder.clear_stale_temporaries()
        if self._folder.is_dir():
            for child in self._folder.children():
                if child.name.startswith(PREFIX) and child.name.endswith(ROWS_SUFFIX):
                    child.delete()
        return self

    def write(self, name: str, frame: bytes, rows: int) -> None:
        """A chunk's frame of `rows` records of the input part `name`."""
        if name != self._name:
            self._close(None)
            self._stack = contextlib.ExitStack()
            target = self._folder.join(PREFIX + name + ROWS_SUFFIX)
            self._file = self._stack.enter_context(target.open_write())
            self._name = name
        assert self._file is not None
        self._rows[name] = self._rows.get(name, 0) + rows
        number = self._frames.get(name, 0)
        self._frames[name] = number + 1
        mac = _frame_mac(self._key, name, number, self._digest, frame)
        try:
            self._file.write(msgpack.packb([frame, mac]))
        except OSError as exc:
            problem = exc.strerror or exc
            raise StorageError(f"cannot write the cache in {self._folder.uri}: {problem}") from None

    def _close(self, exc: BaseException | None) -> None:
        if self._stack is not None:
            stack, self._stack, self._file = self._stack, None, None
            stack.__exit__(type(exc) if exc else None, exc, None)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self._close(exc)
        if exc_type is None:
            self._manifest["rows"] = self._rows
            self._manifest["frames"] = self._frames
            self._manifest["mac"] = manifest_mac(self._key, self._manifest)
            self._folder.join(MANIFEST).write_bytes(json.dumps(self._manifest, indent=1).encode())


# -- verify2 and aggregate: reading ------------------------------------------------


class Cache:
    """A cache folder whose manifest matches a stage's inputs and settings."""

    def __init__(self, folder: Location, found: dict[str, Any], key: bytes) -> None:
        self.folder = folder
        self._rows = found["rows"]
        self._frames = found["frames"]
        self._digest = inputs_digest(found["inputs"])
        self._key = key

    def frames(self, part: Location) -> Iterator[dict[str, Any]]:
        """The frames verify1 wrote for `part`, in order, each authenticated."""
        name = PREFIX + part.name + ROWS_SUFFIX
        try:
            with self.folder.join(name).open_read() as rows:
                seen = number = 0
                for item in msgpack.Unpacker(rows, raw=False):
                    frame = self._authentic(item, part.name, number, name)
                    number += 1
                    seen += _checked_rows(frame)
                    yield frame
                if seen != self._rows.get(part.name) or number != self._frames.get(part.name):
                    raise CacheMiss(f"{name} in the cache is cut short")
        except StorageError as exc:
            raise CacheMiss(str(exc)) from None
        except (ValueError, msgpack.UnpackException) as exc:
            raise CacheMiss(f"{name} in the cache is damaged ({exc})") from None


    def _authentic(self, item: Any, part: str, number: int, name: str) -> Any:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(v, bytes) for v in item)):
            raise CacheMiss(f"{name} in the cache holds something other than verify1's frames")
        body, mac = item
        if not hmac.compare_digest(mac, _frame_mac(self._key, part, number, self._digest, body)):
            raise CacheMiss(
                f"frame {number} of {name} in the cache does not authenticate (altered, reordered, "
                "or not written by this server)"
            )
        return msgpack.unpackb(body, raw=False)


_FRAME_LISTS = ("ids", "problems", "open", "open_h", "open_data", "digests", "fields")
_FRAME_BYTES = {"triples": _TRIPLE_BYTES, "evaluated": 1, "points": ELEMENT_BYTES, "h": ELEMENT_BYTES}
# Also "data_sum": n_data elements, checked where used.


def _checked_rows(frame: Any) -> int:
    """The number of records of a frame, whose every column must have one entry per record."""
    if not isinstance(frame, dict) or not isinstance(frame.get("ids"), list):
        raise CacheMiss("a cache file holds something other than verify1's frames")
    count = len(frame["ids"])
    lists_ok = all(isinstance(frame.get(k), list) and len(frame[k]) == count for k in _FRAME_LISTS)
    bytes_ok = all(
        isinstance(frame.get(k), bytes) and len(frame[k]) == count * size for k, size in _FRAME_BYTES.items()
    )
    if not (lists_ok and bytes_ok):
        raise CacheMiss("a cache frame is incomplete")
    return count


def check_manifest(
    folder: Location, parts: Sequence[Location], server: Server, form: Any, schedule: Schedule | None
) -> tuple[dict[str, Any] | None, bytes, str]:
    """The manifest in `folder`, its format `form`, if it authenticates under this server's cache
    key and was made from exactly `parts` with this server's settings (and `schedule`, if
    given): (manifest, key, ""), or (None, key, why it cannot be used). Format-specific
    counts are the caller's to check (prio's cache and prio-spark's share this)."""
    key = cache_key(server)
    try:
        found = json.loads(folder.join(MANIFEST).read_bytes())
    except StorageError:
        return None, key, "it holds no finished cache from verify1"
    except ValueError:
        return None, key, "its manifest is unreadable"
    if not isinstance(found, dict) or found.get("format") != form:
        return None, key, "it was written in another format"
    batch = server.config.batch_id.decode("utf-8", "replace")
    if (found.get("server_id"), found.get("batch_id"), found.get("n_data")) != (
        server.server_id,
        batch,
        server.config.n_data,
    ):
        return None, key, "it was made for another server, batch or n_data"
    if not same_mac(str(found.get("mac")), manifest_mac(key, found)):
        why_not = f"its manifest {MANIFEST} does not authenticate (altered, or not written by this server)"
        return None, key, why_not
    stamp = found.get(settings.FIELD)
    if not isinstance(stamp, dict):
        return None, key, "its manifest names no settings"
    try:
        made_with = Schedule(stamp.get("evaluation_point"))
    except ValueError:
        return None, key, "its manifest names an unknown evaluation point"
    if schedule is not None and Schedule(schedule) is not made_with:
        return None, key, "it was made with another --evaluation-point"
    expected = settings.stamp(server, made_with)
    same_secret = same_mac(str(stamp.get("mac")), expected["mac"])
    if stamp.get("prg_keying") != expected["prg_keying"] or not same_secret:
        return None, key, "it was made with another --prg-keying or shared secret"
    try:
        inputs = [{"uri": part.uri, "version": part.version()} for part in parts]
    except StorageError as exc:
        return None, key, str(exc)
    if inputs != found.get("inputs"):
        return None, key, "--input is not the files verify1 read (they changed, or others were given)"
    return found, key, ""


def open_cache(
    folder: Location, parts: Sequence[Location], server: Server, schedule: Schedule | None
) -> tuple[Cache | None, str]:
    """The cache verify1 made from exactly `parts` with this server's settings (and `schedule`,
    if given), or (None, why it cannot be used)."""
    found, key, why_not = check_manifest(folder, parts, server, FORMAT, schedule)
    if found is None:
        return None, why_not
    if not (isinstance(found.get("rows"), dict) and isinstance(found.get("frames"), dict)):
        return None, "its manifest does not count the records"
    return Cache(folder, found, key), ""


def _record_fields(record_id: str | None, text: str | None) -> Record:
    if text is None:
        return {"id": record_id, "payload": None}
    return json.loads(text)


def _openings(frame: dict[str, Any], half: str) -> list[Opening]:
    """The openings of a frame as a stage that reads `half` ("open_h", "open_data") sees them."""
    openings = []
    for position, record_id in enumerate(frame["ids"]):
        opening = Opening(record_id)
        opening.problem = _problem_in(frame["problems"][position])
        opening.whole_problem = _problem_in(frame["open"][position])
        if opening.whole_problem is not None:
            opening.open_problem = _problem_in(frame[half][position])
        opening.digest = frame["digests"][position]
        openings.append(opening)
    return openings


def _opened(opening: Opening) -> bool:
    return opening.problem is None and opening.whole_problem is None


class CachedVerify2Steps(stages.Verify2Steps):
    """verify2 over cache frames: the same decisions, with h(r) from verify1."""

    def open_frame(self, frame: dict[str, Any], shares: RawRecords, first: int) -> tuple[list[Opening], Any]:
        openings = _openings(frame, "open_h")
        return openings, (frame, [_opened(o) for o in openings])

    def _check_whole_packet(self, opening: Opening, item: Callable[[], RawItem], source: str) -> None:
        if opening.whole_problem is not None:
            raise RecordError(*opening.whole_problem)

    def compute(self, kept: Any, selections: Sequence[Selection]) -> list[Record]:
        frame, opened = kept
        triples, h_values = [], []
        for position, point, _packets in selections:
            cached_point = _element_at(frame["points"], position)
            if not (opened[position] and frame["evaluated"][position] and cached_point == point):
                raise CacheMiss("a share is verified at another point than verify1 used for it")
            blob = frame["triples"][position * _TRIPLE_BYTES:(position + 1) * _TRIPLE_BYTES]
            triples.append(tuple(_element_at(blob, k) for k in range(3)))
            h_values.append(_element_at(frame["h"], position))
        messages = verify2_messages(
            triples,  # type: ignore[arg-type]
            h_values,
            [s[2][0] for s in selections],
            [s[2][1] for s in selections],
        )
        out = []
        for (position, _point, _packets), message in zip(selections, messages):
            fields = _record_fields(frame["ids"][position], frame["fields"][position])
            digest = frame["digests"][position]
            out.append(stages.output_record(fields, message.to_bytes(), digest, self.stamp))
        return out


class CachedAggregateSteps(stages.AggregateSteps):
    """aggregate over cache frames: the same decisions, and the sum of the data shares verify1
    evaluated, corrected by the few shares whose proof failed (opened again from the input)."""

    def open_frame(self, frame: dict[str, Any], shares: RawRecords, first: int) -> tuple[list[Opening], Any]:
        """`first`: the position in its input part of the frame's first record."""
        openings = _openings(frame, "open_data")
        return openings, (frame, shares, first, [_opened(o) for o in openings])

    def compute(self, kept: Any, selections: Sequence[Selection]) -> Any:
        frame, shares, first, opened = kept
        if not selections:
            return None
        n = self.server.config.n_data
        if len(frame["data_sum"]) != n * ELEMENT_BYTES:
            raise CacheMiss("a cache frame's data sum has another length")
        chosen = {s[0] for s in selections}
        if not all(opened[p] for p in chosen):
            raise CacheMiss("a share verify1 could not open is to be added up")
        evaluated = frame["evaluated"]
        left_out = [p for p in range(len(opened)) if evaluated[p] and p not in chosen]
        added = [p for p in sorted(chosen) if not evaluated[p]]
        total = limbs.from_bytes11(np.frombuffer(frame["data_sum"], dtype=np.uint8).reshape(n, ELEMENT_BYTES))
        if left_out or added:
            positions = sorted(left_out + added)
            items = dict(zip(positions, shares.at([first + p for p in positions])))
            if left_out:
                total = total - self._data_shares([items[p] for p in left_out], shares.source).sum(axis=1)
            if added:
                total = total + self._data_shares([items[p] for p in added], shares.source).sum(axis=1)
        return limbs.canonical(total)[:, None, :]

    def _data_shares(self, items: list[RawItem], source: str) -> limbs.Limbs:
        """The data shares of input records, opened again."""
        packets = []
        for item in items:
            try:
                _, payload = stages.id_and_payload(stages.as_record(item, source))
                packets.append(self.server.open(payload, stages.DATA_ONLY))
            except (RecordError, PacketError):
                raise CacheMiss("a share no longer opens as it did in verify1") from None
        return self.server.data_shares(packets)


class RawRecords:
    """The records of one input part, unparsed, read forward once and only as far as the
    last one asked for."""

    def __init__(self, part: Location, reader: Iterator[Any]) -> None:
        self.source = part.uri
        self._reader = reader
        self._read = 0  # records read so far

    def at(self, positions: Sequence[int]) -> list[RawItem]:
        """The records at these positions in the part, in increasing order, each after the last asked for."""
        found: list[RawItem] = []
        for position in positions:
            if position < self._read:
                raise CacheMiss("records of the input were asked for out of order")
            item: RawItem | None = None
            while self._read <= position:
                item = next(self._reader, None)
                if item is None:
                    raise CacheMiss(f"{self.source} holds fewer records than verify1 read")
                self._read += 1
            assert item is not None  # the record at `position`: the loop ran at least once
            found.append(item)
        return found


CachedSteps = CachedVerify2Steps | CachedAggregateSteps


def _no_raw_records() -> Sequence[RawItem]:
    raise CacheMiss("a decision needs a share's record itself")


def run_cached(
    steps: CachedSteps,
    cache: Cache,
    parts: Sequence[Location],
    tags: Sequence[Any],
    emit: Callable[[Any, Any], None],
    progress: Callable[[int], None],
    max_line: int,
) -> None:
    """A stage's steps over the cache frames of every part, in order; `emit(tag, result)`.
    Records of the input are read only where the cache cannot answer for them (aggregate's
    corrections), and then only up to the last one needed."""
    try:
        for part, tag in zip(parts, tags):
            with contextlib.closing(read_raw(part, max_line)) as reader:
                shares, first = RawRecords(part, reader), 0
                for frame in cache.frames(part):
                    openings, kept = steps.open_frame(frame, shares, first)
                    first += len(openings)
                    progress(len(openings))
                    selections = steps.decide(openings, _no_raw_records, part.uri)
                    emit(tag, steps.compute(kept, selections))
    finally:
        steps.close()
