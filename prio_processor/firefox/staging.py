"""Staging: the prio pings of one submission date into per-server, per-batch share folders.

Input sources:
- `gcs`: the ingestion sink, `IN/<date>/<hour>/<namespace>/<doctype>/<version>/<file>`, each line
  a message whose `payload` is the base64 of one ping's JSON (`file_pings`).
- `json`: every data file below `IN/<date>/`, each line one ping's JSON, as an export gives them
  (`file_pings`).
- `bigquery`: the rows of a `payload_bytes_decoded` table submitted on the date, whose `payload` is
  the gzip'd ping (`firefox.bigquery`).

Output: `OUT/submission_date=<date>/server_id={a,b}/batch_id=<encoding>/part-NNNNN.json` of
`{id, payload}` and `_SUCCESS` markers. Ids are the integers 1..n, row numbers of a uniformly random
order within each batch, so neither the ids nor the order of lines tie one ping's entries together
across batches. Bad pings and entries are counted by reason and handed to a rejects sink as
`{id (the ping's), reason, detail, entry (its position, for an entry)}`, never with a payload; the
output holds only shares and markers.

Every ping is read and checked before the output is touched: the new day is written complete under a
hidden name beside the old one, and only then takes its place, so a failed run leaves the date's
previous output as it was.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import errno
import json
import os
import random
import re
import secrets
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dataconfig import BATCH_ID_PATTERN
from ..storage import BadRecord, LocalLocation, Location, RecordWriter, StorageError, is_hidden, read_records
from ..storage.ops import SUCCESS_MARKER, mark_success, sync

SOURCES = ("gcs", "json", "bigquery")
SERVERS = ("a", "b")
#: Depth of a data file below the date folder in the ingestion sink: hour/namespace/doctype/version/file.
_GCS_DEPTH = 5
#: Upper bound on one output part (both servers' shares of its entries), so that a part can be shuffled
#: in memory.
PART_BYTES = 256 * 1024 * 1024
_RANDOM = random.SystemRandom()
#: How much of a bad encoding a reject's detail shows.
_SHOWN = 40

#: Where rejects go, as `prio`'s stages hand theirs over (pipeline.tally.RejectSink).
RejectSink = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Rejected:
    """A line or row of a source that holds no usable ping, with the reason it is counted under."""

    reason: str
    detail: str


#: What a source yields for each line or row it reads: a ping (a JSON object) or why there is none.
PingStream = Iterable["dict[str, Any] | Rejected"]


@dataclass
class StagingSummary:
    """What one staging run read, wrote and rejected."""

    pings: int = 0
    duplicates: int = 0
    entries: Counter[str] = field(default_factory=Counter)
    rejects: Counter[str] = field(default_factory=Counter)

    def count_line(self) -> str:
        """The stage's count line, as `prio` prints it: errors (bad lines, pings, entries) of lines read."""
        return f"{sum(self.rejects.values())} errors out of {self.pings} total"

    def details(self) -> list[str]:
        """What the count line does not say: pings, duplicates, entries per batch, errors by reason."""
        written = sum(self.entries.values())
        out = [
            f"{self.pings} pings read, {self.duplicates} duplicate ping ids dropped, "
            f"{written} entries written in {len(self.entries)} batches"
        ]
        out += [f"batch {batch_id}: {count} entries" for batch_id, count in sorted(self.entries.items())]
        if self.rejects:
            out.append("rejected " + ", ".join(f"{r}: {n}" for r, n in sorted(self.rejects.items())))
        return out


def _discard(entry: dict[str, Any]) -> None:
    """Rejects are only counted when no rejects list was asked for."""


class _Rejects:
    """Counts rejects by reason and hands them, without payloads, to the sink."""

    def __init__(self, sink: RejectSink, summary: StagingSummary) -> None:
        self._sink = sink
        self._summary = summary

    def add(self, reason: str, detail: str, ping_id: str | None = None, entry: int | None = None) -> None:
        self._summary.rejects[reason] += 1
        record: dict[str, Any] = {"id": ping_id, "reason": reason, "detail": detail}
        if entry is not None:
            record["entry"] = entry
        self._sink(record)


def ping_files(input_root: Location, date: str, source: str) -> list[Location]:
    """The data files that hold the pings of `date` in a `gcs` or `json` layout."""
    if source not in ("gcs", "json"):
        raise StorageError(f"unknown file source {source!r}: expected gcs or json")
    day = input_root.join(date)
    if not day.is_dir():
        raise StorageError(f"{day} does not exist: no pings for {date}")
    files = []
    for name, loc in day.walk():
        parts = name.split("/")
        if any(is_hidden(p) for p in parts):
            continue
        if source == "gcs" and len(parts) != _GCS_DEPTH:
            continue
        files.append(loc)
    return files


def ping_from_json(text: bytes | str, what: str) -> dict[str, Any] | Rejected:
    """The ping in one document's JSON text, or why it holds none (`what` names the document)."""
    try:
        ping = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return Rejected("bad_ping", f"{what} is not JSON")
    except RecursionError:
        return Rejected("bad_ping", f"{what} nests too deeply")
    if not isinstance(ping, dict):
        return Rejected("bad_ping", f"ping is not a JSON object ({what})")
    return ping


def _ping_from_message(record: dict[str, Any], uri: str) -> dict[str, Any] | Rejected:
    """The ping inside an ingestion-sink message."""
    payload = record.get("payload")
    if not isinstance(payload, str):
        return Rejected("bad_message", f"message has no base64 payload ({uri})")
    try:
        text = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return Rejected("bad_base64", f"message payload is not valid base64 ({uri})")
    return ping_from_json(text, f"message payload in {uri}")


def file_pings(input_root: Location, date: str, source: str) -> PingStream:
    """The pings of `date` in a `gcs` or `json` layout, in file order; StorageError at once (before any
    ping is read) if the date has no folder."""
    files = ping_files(input_root, date, source)
    return _file_pings(files, source)


def _file_pings(files: list[Location], source: str) -> Iterator[dict[str, Any] | Rejected]:
    for loc in files:
        for record in read_records(loc):
            if isinstance(record, BadRecord):
                yield Rejected("bad_json", record.describe())
            elif source == "gcs":
                yield _ping_from_message(record, loc.uri)
            elif isinstance(record, dict):
                yield record
            else:
                yield Rejected("bad_ping", f"ping is not a JSON object ({loc.uri})")


def _encoding_problem(encoding: Any) -> str | None:
    """Why an entry's encoding cannot name its batch folder, or None if it can."""
    if not isinstance(encoding, str):
        return f"encoding is {'missing' if encoding is None else 'not a string'}"
    if BATCH_ID_PATTERN.fullmatch(encoding):
        return None
    shown = ascii(encoding[:_SHOWN]) + (f" ({len(encoding)} characters)" if len(encoding) > _SHOWN else "")
    return (
        f"encoding {shown} cannot be a batch id: use 1 to 128 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit"
    )


class _Spill:
    """Entries of one batch on local disk, both shares per line, until they are shuffled."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "entries.ndjson"
        self.file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 (closed once all pings are read)
        self.count = 0
        self.bytes = 0

    def add(self, share_a: str, share_b: str) -> None:
        line = json.dumps([share_a, share_b]) + "\n"
        self.file.write(line)
        self.count += 1
        self.bytes += len(line)


def _shuffled_parts(spill: _Spill, scratch: Path) -> Iterator[list[list[str]]]:
    """The entries of a batch as parts in a uniformly random overall order.

    Each entry goes to a random bucket, then each bucket is shuffled in memory:
    concatenating the buckets gives a uniform permutation without holding the
    whole batch in memory.
    """
    n_parts = max(1, -(-spill.bytes // PART_BYTES))
    if n_parts == 1:
        buckets = [spill.path]
    else:
        buckets = [scratch / f"bucket-{k}.ndjson" for k in range(n_parts)]
        files = [open(p, "w", encoding="utf-8") for p in buckets]  # noqa: SIM115 (closed below)
        try:
            with open(spill.path, encoding="utf-8") as source:
                for line in source:
                    files[_RANDOM.randrange(n_parts)].write(line)
        finally:
            for f in files:
                f.close()
    for bucket in buckets:
        with open(bucket, encoding="utf-8") as f:
            entries = [json.loads(line) for line in f]
        _RANDOM.shuffle(entries)
        yield entries


def stage(
    pings: PingStream,
    output_root: Location,
    date: str,
    known_batches: set[str] | None = None,
    rejects: RejectSink = _discard,
) -> StagingSummary:
    """Stage the pings of `date`; replaces that date's output, once the new one is complete, and
    nothing else."""
    summary = StagingSummary()
    listed = _Rejects(rejects, summary)
    scratch = Path(tempfile.mkdtemp(prefix="prio-staging-"))
    try:
        spills = _explode_all(pings, known_batches, listed, summary, scratch)
        _replace_day(spills, output_root, date, summary)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return summary


def _explode_all(
    pings: PingStream,
    known_batches: set[str] | None,
    rejects: _Rejects,
    summary: StagingSummary,
    scratch: Path,
) -> dict[str, _Spill]:
    """Every entry of every ping, spilled to local scratch by batch; the output is not touched."""
    spills: dict[str, _Spill] = {}
    seen: set[str] = set()
    try:
        for ping in pings:
            summary.pings += 1
            if isinstance(ping, Rejected):
                rejects.add(ping.reason, ping.detail)
                continue
            ping_id = ping.get("id")
            if not isinstance(ping_id, str) or not ping_id:
                rejects.add("bad_ping", "ping has no id")
                continue
            if ping_id in seen:
                summary.duplicates += 1
                continue
            seen.add(ping_id)
            payload = ping.get("payload")
            entries = payload.get("prioData") if isinstance(payload, dict) else None
            if not isinstance(entries, list):
                rejects.add("bad_ping", "ping has no payload.prioData list", ping_id)
                continue
            for position, entry in enumerate(entries):
                _explode(entry, position, ping_id, known_batches, rejects, spills, scratch)
    finally:
        for spill in spills.values():
            spill.file.close()
    return spills


def _explode(
    entry: Any,
    position: int,
    ping_id: str,
    known_batches: set[str] | None,
    rejects: _Rejects,
    spills: dict[str, _Spill],
    scratch: Path,
) -> None:
    if not isinstance(entry, dict):
        rejects.add("bad_entry", "prioData entry is not an object", ping_id, position)
        return
    encoding = entry.get("encoding")
    problem = _encoding_problem(encoding)
    if problem is not None:
        rejects.add("bad_encoding", problem, ping_id, position)
        return
    if known_batches is not None and encoding not in known_batches:
        rejects.add("unknown_encoding", f"encoding {encoding!r} is not in the data config", ping_id, position)
        return
    prio = entry.get("prio")
    shares = [prio.get(s) if isinstance(prio, dict) else None for s in SERVERS]
    missing = [s for s, share in zip(SERVERS, shares) if not isinstance(share, str) or not share]
    if missing:
        rejects.add("missing_share", f"no share for server {' and '.join(missing)}", ping_id, position)
        return
    batch_id = str(encoding)
    spill = spills.get(batch_id)
    if spill is None:
        folder = scratch / f"batch-{len(spills)}"
        os.mkdir(folder)
        spill = spills[batch_id] = _Spill(folder)
    spill.add(str(shares[0]), str(shares[1]))


def _replace_day(
    spills: dict[str, _Spill], output_root: Location, date: str, summary: StagingSummary
) -> None:
    """Write the new day under a hidden name, then put it in the old one's place."""
    day_name = f"submission_date={date}"
    day = output_root.join(day_name)
    # Hidden, so that no reader of the output takes the unfinished day for data.
    new = output_root.join(f".{day_name}.{secrets.token_hex(4)}.tmp")
    try:
        _write_batches(spills, new, summary)
        for server in SERVERS:
            mark_success(new.join(f"server_id={server}"))
        root_marker = output_root.join(SUCCESS_MARKER)
        if root_marker.is_file():
            root_marker.delete()
        if isinstance(new, LocalLocation) and isinstance(day, LocalLocation):
            _swap_folders(new.path, day.path)
            _clear_leftovers(day.path)
        else:
            _replace_objects(new, day)
    finally:
        if new.is_dir():
            new.delete()
    mark_success(output_root)


def _write_batches(spills: dict[str, _Spill], day_out: Location, summary: StagingSummary) -> None:
    for batch_id in sorted(spills):
        spill = spills[batch_id]
        row = 0
        for number, entries in enumerate(_shuffled_parts(spill, spill.path.parent)):
            name = f"part-{number:05d}.json"
            with (
                RecordWriter(day_out.join("server_id=a", f"batch_id={batch_id}", name)) as out_a,
                RecordWriter(day_out.join("server_id=b", f"batch_id={batch_id}", name)) as out_b,
            ):
                for share_a, share_b in entries:
                    row += 1
                    out_a.write({"id": row, "payload": share_a})
                    out_b.write({"id": row, "payload": share_b})
        summary.entries[batch_id] = row


_RENAME_EXCHANGE = 2  # linux/fs.h
_LEFTOVER = re.compile(r"[0-9a-f]{8}\.(tmp|old)")


def _swap_folders(new: Path, day: Path) -> None:
    """Put the folder `new` in place of `day`: one atomic exchange where the kernel offers it."""
    try:
        if not day.exists():
            os.rename(new, day)
            return
        if not _exchange(new, day):
            # Without an exchange the day is missing for the moment between two renames, never partial.
            old = day.with_name(f".{day.name}.{secrets.token_hex(4)}.old")
            os.rename(day, old)
            os.rename(new, day)
            new = old
    except OSError as exc:
        raise StorageError(f"cannot replace {day}: {exc.strerror or exc}") from None
    # The new day is in place: what is left of the old one is removed here or by the next run.
    shutil.rmtree(new, ignore_errors=True)


def _clear_leftovers(day: Path) -> None:
    """The hidden new and old days that runs killed while writing or swapping left beside `day`."""
    for path in day.parent.glob(f".{day.name}.*"):
        if _LEFTOVER.fullmatch(path.name[len(day.name) + 2 :]) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """renameat2(RENAME_EXCHANGE) of two paths; False where the system or file system lacks it."""
    libc_name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(libc_name, use_errno=True) if libc_name else None
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _replace_objects(new: Location, day: Location) -> None:
    """In a bucket, where nothing is renamed: each server's folder is synced from the finished new
    day, its marker going first and coming back last, so no reader takes a half-replaced folder
    for a complete one."""
    folders = {f"server_id={server}" for server in SERVERS}
    for name, loc in day.walk():
        if name.split("/", 1)[0] not in folders:
            loc.delete()
    for folder in sorted(folders):
        sync(new.join(folder), day.join(folder))
