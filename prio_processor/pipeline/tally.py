"""Counting what a stage accepted and rejected, and listing the rejects."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..engine.errors import Reason
from ..storage import Location, RecordWriter


class Tally:
    """Totals and rejects of one stage run; rejects go to a side file as {id, reason, detail}."""

    def __init__(self, stage: str, rejects: Location | None = None) -> None:
        self.stage = stage
        self.total = 0
        self.reasons: Counter[str] = Counter()
        self.skipped = 0
        self._rejects_location = rejects
        self._writer: RecordWriter | None = None

    def __enter__(self) -> "Tally":
        if self._rejects_location is not None:
            self._writer = RecordWriter(self._rejects_location).__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._writer is not None:
            self._writer.__exit__(exc_type, exc, tb)

    def reject(self, record_id: Any, reason: Reason, detail: str = "") -> None:
        reason = Reason(reason)
        self.reasons[reason.value] += 1
        if self._writer is not None:
            entry = {"id": record_id if isinstance(record_id, str) else None, "reason": reason.value}
            if detail:
                entry["detail"] = detail
            self._writer.write(entry)

    def skip(self, record_id: Any, reason: Reason, detail: str = "") -> None:
        """List an unusable line of a side input (not a share): in the rejects file, not in the errors."""
        self.skipped += 1
        if self._writer is not None:
            entry = {"id": record_id if isinstance(record_id, str) else None, "reason": Reason(reason).value,
                     "detail": detail}
            self._writer.write(entry)

    @property
    def errors(self) -> int:
        return sum(self.reasons.values())

    def summary(self) -> str:
        """The original's count line, with the reasons appended."""
        line = f"{self.errors} errors out of {self.total} total"
        if self.reasons:
            line += " (" + ", ".join(f"{reason}: {count}" for reason, count in sorted(self.reasons.items())) + ")"
        if self.skipped:
            line += f"; {self.skipped} unusable lines in verification packet files"
        return line
