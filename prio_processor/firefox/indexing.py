"""Published per-index totals mapped to the origins they count.

A metric's origins are split over batch ids `<metric>-<part>`: part 0 covers the
origins from index 0, part k starts where part k - 1 ends (the sum of the n_data
of parts 0..k-1 in the data config). Each published record of a batch becomes
one row per origin: `{id, timestamp, batch_id (the metric), origin, hash, index,
aggregate, error, total, submission_date}`; without a known date the rows have no
submission_date, as the original's had none.

Where the original silently dropped a batch missing from the data config and cut
a vector longer than the origin list, each is an error here that names the batch;
the other batches are still indexed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..dataconfig import Batch
from ..storage import BadRecord, Location, read_all
from .origins import Origin

BATCH_FOLDER = "batch_id="
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class BatchError:
    batch_id: str
    reason: str
    detail: str

    def record(self) -> dict[str, str]:
        return {"batch_id": self.batch_id, "reason": self.reason, "detail": self.detail}


@dataclass
class IndexResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    batches: list[str] = field(default_factory=list)
    errors: list[BatchError] = field(default_factory=list)


def split_batch_id(batch_id: str) -> tuple[str, int]:
    """(metric, part) of `<metric>-<part>`, split at the last hyphen; ValueError otherwise."""
    metric, sep, part = batch_id.rpartition("-")
    if not sep or not metric or not part.isdigit():
        raise ValueError(f"batch id {batch_id!r} is not <name>-<part number>")
    return metric, int(part)


def offset_of(batch_id: str, config: dict[str, int]) -> int:
    """The index of the first origin a batch counts; ValueError if the config cannot say."""
    metric, part = split_batch_id(batch_id)
    offset = 0
    for earlier in range(part):
        n_data = config.get(f"{metric}-{earlier}")
        if n_data is None:
            raise ValueError(f"batch {batch_id}: part {metric}-{earlier} is not in the data config")
        offset += n_data
    return offset


def published_batches(published: Location) -> list[str]:
    """Batch ids named by the `batch_id=<id>` folders of a publish folder."""
    names = {rel.split("/", 1)[0] for rel, _ in published.walk() if "/" in rel}
    return sorted(n[len(BATCH_FOLDER) :] for n in names if n.startswith(BATCH_FOLDER))


def date_from_path(published: Location) -> str | None:
    """The submission date in a `.../<date>/processed/publish` path, if there is one."""
    for part in reversed(published.uri.rstrip("/").split("/")):
        if _DATE.match(part):
            return part
    return None


def index(
    published: Location, batches: list[Batch], origins: list[Origin], date: str | None
) -> IndexResult:
    """Rows for every published batch that maps onto the origin list, errors for the others."""
    config = {b.batch_id: b.n_data for b in batches}
    result = IndexResult()
    for batch_id in published_batches(published):
        result.batches.append(batch_id)
        try:
            rows = list(_batch_rows(published.join(BATCH_FOLDER + batch_id), batch_id, config, origins, date))
        except _Reject as exc:
            result.errors.append(BatchError(batch_id, exc.reason, exc.detail))
            continue
        result.rows.extend(rows)
    return result


class _Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _batch_rows(
    folder: Location, batch_id: str, config: dict[str, int], origins: list[Origin], date: str | None
) -> Iterator[dict[str, Any]]:
    if batch_id not in config:
        raise _Reject("unknown_batch", f"batch {batch_id} is not in the data config")
    try:
        metric, _ = split_batch_id(batch_id)
        offset = offset_of(batch_id, config)
    except ValueError as exc:
        raise _Reject("bad_batch_id", str(exc)) from None
    records = list(read_all(folder.parts()))
    if not records:
        raise _Reject("no_record", f"batch {batch_id} has no published record")
    checked = [_checked_record(r, batch_id, config[batch_id]) for r in records]
    for record in checked:
        payload = record["payload"]
        if offset + len(payload) > len(origins):
            raise _Reject(
                "too_long",
                f"batch {batch_id} counts origins {offset}..{offset + len(payload) - 1} "
                f"but the origin list has {len(origins)}",
            )
    for record in checked:
        for position, aggregate in enumerate(record["payload"]):
            origin = origins[offset + position]
            row = {
                "id": record["id"],
                "timestamp": record["timestamp"],
                "batch_id": metric,
                "origin": origin["name"],
                "hash": origin["hash"],
                "index": origin["index"],
                "aggregate": aggregate,
                "error": record["error"],
                "total": record["total"],
            }
            if date is not None:
                row["submission_date"] = date
            yield row


def _checked_record(record: dict[str, Any] | BadRecord, batch_id: str, n_data: int) -> dict[str, Any]:
    if isinstance(record, BadRecord):
        raise _Reject("bad_record", f"batch {batch_id}: line {record.line} of {record.source} is not JSON")
    payload = record.get("payload")
    if not isinstance(payload, list):
        raise _Reject("bad_record", f"batch {batch_id}: a published record has no payload list")
    fields_ok = (
        isinstance(record.get("id"), str)
        and isinstance(record.get("timestamp"), str)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in payload)
    )
    if not fields_ok:
        raise _Reject(
            "bad_record", f"batch {batch_id}: a published record lacks id, timestamp or integer payload"
        )
    if len(payload) != n_data:
        raise _Reject(
            "wrong_length", f"batch {batch_id} published {len(payload)} counts, the config says {n_data}"
        )
    counts = [record.get(k, 0) for k in ("error", "total")]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
        raise _Reject("bad_record", f"batch {batch_id}: error and total must be integers")
    return {**record, "error": counts[0], "total": counts[1]}
