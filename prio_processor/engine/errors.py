"""The engine's exception type for unusable packets, with a machine-readable reason."""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    """Why packet bytes are unusable (wire format and cryptography). The pipeline's
    `RejectReason` extends these with record-level reasons."""

    DECRYPT_FAILED = "decrypt_failed"
    MALFORMED = "malformed"
    WRONG_BATCH_ID = "wrong_batch_id"
    WRONG_SERVER = "wrong_server"
    WRONG_LENGTH = "wrong_length"
    OUT_OF_RANGE = "out_of_range"


class PacketError(Exception):
    """A packet (client share or verification packet) that cannot be used.

    `reason` says why, as a `Reason`; the message never contains key material
    or packet contents.
    """

    def __init__(self, reason: Reason, detail: str = "") -> None:
        self.reason = Reason(reason)
        self.detail = detail
        super().__init__(f"{self.reason.value}: {detail}" if detail else self.reason.value)
