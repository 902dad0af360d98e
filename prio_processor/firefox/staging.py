"""Staging: the prio pings of one submission date into per-server, per-batch share folders.

Input layouts (`source`):
- `gcs`: the ingestion sink, `IN/<date>/<hour>/<namespace>/<doctype>/<version>/<file>`, each line
  a message whose `payload` is the base64 of one ping's JSON.
- `json`: every data file below `IN/<date>/`, each line one ping's JSON, as an export gives them.

Output: `OUT/submission_date=<date>/server_id={a,b}/batch_id=<encoding>/part-NNNNN.ndjson` of
`{id, payload}` and `_SUCCESS` markers. Ids are row numbers `"1".."n"` of a uniformly random order
within each batch, so neither the ids nor the order of lines tie one ping's entries together across
batches. Bad pings and entries are counted by reason and handed to a rejects sink as
`{id (the ping's), reason, detail, entry (its position, for an entry)}`, never with a payload; the
output holds only shares and markers.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..storage import BadRecord, Location, RecordWriter, StorageError, is_hidden, read_records
from ..storage.ops import SUCCESS_MARKER, mark_success

SOURCES = ("gcs", "json")
SERVERS = ("a", "b")
#: Depth of a data file below the date folder in the ingestion sink: hour/namespace/doctype/version/file.
_GCS_DEPTH = 5
#: Upper bound on one output part (both servers' shares of its entries), so that a part can be shuffled
#: in memory.
PART_BYTES = 256 * 1024 * 1024
_RANDOM = random.SystemRandom()

#: Where rejects go, as `prio`'s stages hand theirs over (pipeline.tally.RejectSink).
RejectSink = Callable[[dict[str, Any]], None]


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
    """The data files that hold the pings of `date`."""
    if source not in SOURCES:
        raise StorageError(f"unknown source {source!r}: expected one of {', '.join(SOURCES)}")
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


class _BadMessage(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _ping_from_message(record: dict[str, Any]) -> Any:
    """The ping inside an ingestion-sink message, or _BadMessage."""
    payload = record.get("payload")
    if not isinstance(payload, str):
        raise _BadMessage("bad_message", "message has no base64 payload")
    try:
        text = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _BadMessage("bad_base64", "message payload is not valid base64") from None
    try:
        return json.loads(text)
    except ValueError:
        raise _BadMessage("bad_ping", "message payload is not JSON") from None


def _pings(files: list[Location], source: str, rejects: _Rejects, summary: StagingSummary) -> Iterator[dict]:
    """Pings in file order; lines that hold no ping are rejected."""
    for loc in files:
        for record in read_records(loc):
            summary.pings += 1
            if isinstance(record, BadRecord):
                rejects.add("bad_json", record.describe())
                continue
            ping: Any = record
            if source == "gcs":
                try:
                    ping = _ping_from_message(record)
                except _BadMessage as exc:
                    rejects.add(exc.reason, f"{exc.detail} ({loc.uri})")
                    continue
            if not isinstance(ping, dict):
                rejects.add("bad_ping", f"ping is not a JSON object ({loc.uri})")
                continue
            yield ping


def _valid_encoding(encoding: Any) -> bool:
    # The encoding names a folder: no separators, no white space, no hidden names.
    return (
        isinstance(encoding, str)
        and encoding != ""
        and not is_hidden(encoding)
        and not any(c.isspace() or c in "/\\=" for c in encoding)
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
    input_root: Location,
    output_root: Location,
    date: str,
    source: str = "gcs",
    known_batches: set[str] | None = None,
    rejects: RejectSink = _discard,
) -> StagingSummary:
    """Stage the pings of `date`; replaces that date's output and nothing else."""
    files = ping_files(input_root, date, source)
    day_out = output_root.join(f"submission_date={date}")
    summary = StagingSummary()
    root_marker = output_root.join(SUCCESS_MARKER)
    if root_marker.is_file():
        root_marker.delete()
    if day_out.is_dir():
        day_out.delete()
    scratch = Path(tempfile.mkdtemp(prefix="prio-staging-"))
    try:
        spills: dict[str, _Spill] = {}
        listed = _Rejects(rejects, summary)
        seen: set[str] = set()
        for ping in _pings(files, source, listed, summary):
            ping_id = ping.get("id")
            if not isinstance(ping_id, str) or not ping_id:
                listed.add("bad_ping", "ping has no id")
                continue
            if ping_id in seen:
                summary.duplicates += 1
                continue
            seen.add(ping_id)
            payload = ping.get("payload")
            entries = payload.get("prioData") if isinstance(payload, dict) else None
            if not isinstance(entries, list):
                listed.add("bad_ping", "ping has no payload.prioData list", ping_id)
                continue
            for position, entry in enumerate(entries):
                _explode(entry, position, ping_id, known_batches, listed, spills, scratch)
        for spill in spills.values():
            spill.file.close()
        _write_batches(spills, day_out, scratch, summary)
        for server in SERVERS:
            mark_success(day_out.join(f"server_id={server}"))
        mark_success(output_root)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return summary


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
    if not _valid_encoding(encoding) or (known_batches is not None and encoding not in known_batches):
        shown = encoding if isinstance(encoding, str) else type(encoding).__name__
        rejects.add("unknown_encoding", f"encoding {shown!r} is not a known batch id", ping_id, position)
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


def _write_batches(
    spills: dict[str, _Spill], day_out: Location, scratch: Path, summary: StagingSummary
) -> None:
    for batch_id in sorted(spills):
        spill = spills[batch_id]
        row = 0
        for number, entries in enumerate(_shuffled_parts(spill, spill.path.parent)):
            name = f"part-{number:05d}.ndjson"
            with (
                RecordWriter(day_out.join("server_id=a", f"batch_id={batch_id}", name)) as out_a,
                RecordWriter(day_out.join("server_id=b", f"batch_id={batch_id}", name)) as out_b,
            ):
                for share_a, share_b in entries:
                    row += 1
                    out_a.write({"id": str(row), "payload": share_a})
                    out_b.write({"id": str(row), "payload": share_b})
        summary.entries[batch_id] = row
