"""What one server's run did, batch by batch: the summary bin/process ends with.

Read back from what the run left in its private bucket (the rejects lists and
the published records), so that it says what is there, not what a log said.
A client is counted once, under the reason of the first stage that rejected
it: a client rejected at verify1 is missing at verify2 and aggregate too.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from .dataconfig import Batch
from .pipeline.errors import REASON_NOTES
from .storage import Location, StorageError, read_all
from .storage.locations import is_part_name

#: The stages whose rejects lists are read, in the order they run.
STAGES = ("verify1", "verify2", "aggregate")
PUBLISHED_NAME = "publish.ndjson"
#: More rejects than this share of a batch point at settings rather than at clients.
SUSPICIOUS_SHARE = 0.5

#: What a mostly rejected batch most likely means, by its most common reason (for bin/process).
LIKELY_CAUSES = {
    "decrypt_failed": "the shares were encrypted to another key: check PRIVATE_KEY_HEX (or "
    "PRIVATE_KEY_FILE) and SERVER_ID",
    "wrong_batch_id": "the clients used another batch id: check DATA_CONFIG",
    "wrong_server": "these are the other server's shares: check SERVER_ID and the buckets",
    "wrong_length": "the clients used another vector length: check n_data in DATA_CONFIG",
    "missing_peer_packet": "the partner rejected these clients or sent no packets for them: see its "
    "summary; if it rejected none, its DATA_CONFIG, EVALUATION_POINT, PRG_KEYING or SHARED_SECRET differ",
    "missing_own_packet": "this server's earlier packets are of another run or incomplete",
}
#: A settings mismatch that stamps cannot prove: a partner running the original writes none.
SETTINGS_CAUSE = (
    "the partner's settings likely differ: EVALUATION_POINT (bin/process uses fixed, `prio verify1` "
    "alone sequential), PRG_KEYING, SHARED_SECRET or the keys; a partner running the original "
    "writes no stamps, so this cannot be checked before the proofs fail"
)


@dataclass
class BatchSummary:
    batch_id: str
    had_data: bool
    published: Location | None = None
    #: From the published record, else from verify1's count (None: unknown).
    total: int | None = None
    errors: int | None = None
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def valid(self) -> int | None:
        if self.published is None or self.total is None or self.errors is None:
            return None
        return self.total - self.errors

    @property
    def failed(self) -> bool:
        """Data was there, and nothing valid came of it (or nothing was published)."""
        return self.had_data and not self.valid

    def lines(self) -> list[str]:
        label = f"batch {self.batch_id}"
        if not self.had_data:
            return [f"{label}: skipped, no data"]
        status = "FAILED: " if self.failed else ""
        total = "?" if self.total is None else str(self.total)
        reasons = format_reasons(self.reasons)
        if self.published is None:
            line = f"{label}: {status}nothing published (see the publish lines above), {total} total"
            if reasons:
                line += f", rejected {reasons}"
            lines = [line]
        else:
            errors = "?" if self.errors is None else str(self.errors)
            line = f"{label}: {status}{self.valid} valid, {errors} errors of {total} total"
            line += f" ({reasons})" if reasons else ""
            lines = [f"{line}, published {self.published}"]
        cause = self.likely_cause()
        if cause:
            lines.append(f"{label}: likely cause: {cause}")
        return lines

    def likely_cause(self) -> str | None:
        rejected = sum(self.reasons.values())
        if not self.total or rejected <= SUSPICIOUS_SHARE * self.total:
            return None
        top = self.reasons.most_common(1)[0][0]
        return LIKELY_CAUSES.get(top, SETTINGS_CAUSE)


def format_reasons(reasons: Counter[str]) -> str:
    parts = []
    for reason, count in sorted(reasons.items()):
        note = REASON_NOTES.get(reason)
        parts.append(f"{reason}: {count}" + (f", {note}" if note else ""))
    return "; ".join(parts)


def first_reasons(stage_rejects: Iterable[Iterable[dict | object]]) -> Counter[str]:
    """Reasons per client, each client under the first stage that rejected it."""
    reasons: Counter[str] = Counter()
    earlier: set[str] = set()
    for entries in stage_rejects:
        here: set[str] = set()
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            record_id = entry.get("id")
            if isinstance(record_id, str):
                if record_id in earlier:
                    continue
                here.add(record_id)
            reasons[str(entry.get("reason", "unknown"))] += 1
        earlier |= here
    return reasons


def _rejects(folder: Location) -> list[dict | object]:
    if not folder.is_dir():
        return []
    return list(read_all(child for child in folder.children() if is_part_name(child.name)))


def _published(folder: Location) -> tuple[Location, dict] | None:
    """The published record and its file: publish.ndjson from prio, a part file from prio-spark."""
    if not folder.is_dir():
        return None
    files = [child for child in folder.children() if is_part_name(child.name)]
    if not files:
        return None
    target = next((f for f in files if f.name == PUBLISHED_NAME), files[0])
    try:
        record = json.loads(target.read_bytes())
    except ValueError as exc:
        raise StorageError(f"{target} is not a published record: {exc}") from None
    return (target, record) if isinstance(record, dict) else None


def summarize(
    batches: Iterable[Batch],
    raw: Location,
    rejects: Location,
    published: Location,
    totals: dict[str, int],
) -> list[BatchSummary]:
    """One summary per batch of DATA_CONFIG; `totals` are verify1's counts (bin/process's stamp)."""
    summaries = []
    for batch in batches:
        folder = f"batch_id={batch.batch_id}"
        summary = BatchSummary(batch.batch_id, had_data=raw.join(folder).has_data())
        if summary.had_data:
            summary.reasons = first_reasons(_rejects(rejects.join(stage, folder)) for stage in STAGES)
            found = _published(published.join(folder))
            summary.total = totals.get(batch.batch_id)
            if found is not None:
                summary.published, record = found
                summary.total = int(record.get("total", 0))
                summary.errors = int(record.get("error", 0))
        summaries.append(summary)
    return summaries


def parse_totals(stamp: str) -> dict[str, int]:
    """bin/process's stamp "<batch_id>=<n> ..." as {batch_id: n} (unknown counts left out)."""
    totals = {}
    for item in stamp.split():
        batch_id, _, count = item.rpartition("=")
        if batch_id and count.isdigit():
            totals[batch_id] = int(count)
    return totals


def closing_line(summaries: list[BatchSummary]) -> str:
    failed = sum(s.failed for s in summaries)
    skipped = sum(not s.had_data for s in summaries)
    done = len(summaries) - failed - skipped
    line = f"{len(summaries)} batches: {done} published, {failed} FAILED, {skipped} skipped for lack of data"
    return line + (" (exit status 3)" if failed else "")
