"""Counting what a stage accepted and rejected."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from ..engine.errors import Reason
from .errors import REASON_NOTES, RejectReason

#: Where a stage's rejects go, as {id, reason, detail} (never a payload).
RejectSink = Callable[[dict[str, Any]], None]


def _discard(entry: dict[str, Any]) -> None:
    """Rejects are only counted when no rejects list was asked for."""


class Tally:
    """Totals and reasons of one stage run; each reject is also handed to `rejects`."""

    def __init__(self, stage: str, rejects: RejectSink = _discard) -> None:
        self.stage = stage
        self.total = 0
        self.reasons: Counter[str] = Counter()
        self.skipped = 0
        self._rejects = rejects

    def reject(self, record_id: Any, reason: RejectReason | Reason, detail: str = "") -> None:
        """A record of the stage's main input that was not used: an error of the batch."""
        value = RejectReason(reason.value).value
        self.reasons[value] += 1
        self._rejects(_entry(record_id, value, detail))

    def skip(self, record_id: Any, reason: RejectReason, detail: str = "") -> None:
        """An unusable line of a side input (not a share): listed, but not an error of the batch."""
        self.skipped += 1
        self._rejects(_entry(record_id, RejectReason(reason.value).value, detail))

    @property
    def errors(self) -> int:
        return sum(self.reasons.values())

    def summary(self) -> str:
        """The original's count line."""
        return f"{self.errors} errors out of {self.total} total"

    def breakdown(self) -> str:
        """Errors by reason, and unusable side lines: what the count line does not say."""
        parts = [
            f"{reason}: {count}" + (f" ({REASON_NOTES[reason]})" if reason in REASON_NOTES else "")
            for reason, count in sorted(self.reasons.items())
        ]
        if self.skipped:
            parts.append(f"{self.skipped} unusable lines in verification packet files")
        return ", ".join(parts)


def _entry(record_id: Any, reason: str, detail: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": record_id if isinstance(record_id, str) else None, "reason": reason}
    if detail:
        entry["detail"] = detail
    return entry
