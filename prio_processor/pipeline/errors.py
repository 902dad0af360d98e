"""Record-level and batch-level errors of the pipeline.

The engine reports what is wrong with a packet's bytes (`engine.errors.Reason`);
the pipeline adds what is wrong with a record or with how records of a batch
fit together. `RejectReason` is the one machine-readable list of reasons that
rejects files and summaries use.
"""

from __future__ import annotations

import enum

from ..engine.errors import PacketError, Reason


class RejectReason(enum.StrEnum):
    """Why a record was rejected: the engine's reasons, then the pipeline's own."""

    # The engine's (see engine.errors.Reason).
    DECRYPT_FAILED = Reason.DECRYPT_FAILED.value
    MALFORMED = Reason.MALFORMED.value
    WRONG_BATCH_ID = Reason.WRONG_BATCH_ID.value
    WRONG_SERVER = Reason.WRONG_SERVER.value
    WRONG_LENGTH = Reason.WRONG_LENGTH.value
    OUT_OF_RANGE = Reason.OUT_OF_RANGE.value
    # The pipeline's.
    BAD_JSON = "bad_json"
    BAD_BASE64 = "bad_base64"
    DUPLICATE_ID = "duplicate_id"
    MISSING_OWN_PACKET = "missing_own_packet"
    MISSING_PEER_PACKET = "missing_peer_packet"
    SHARE_MISMATCH = "share_mismatch"
    INVALID_PROOF = "invalid_proof"


#: What a reason means in a server run, where its name alone misleads: a client rejected at one
#: stage is missing from the packets of every later one.
REASON_NOTES = {
    RejectReason.MISSING_OWN_PACKET.value: "rejected here at an earlier stage",
    RejectReason.MISSING_PEER_PACKET.value: "rejected by the partner",
}


class RecordError(Exception):
    """A record the stage cannot use; counted and listed, never fatal to the batch."""

    def __init__(self, reason: RejectReason | Reason, detail: str = "") -> None:
        self.reason = RejectReason(reason.value)
        self.detail = detail
        super().__init__(f"{self.reason.value}: {detail}" if detail else self.reason.value)

    @classmethod
    def from_packet(cls, error: PacketError) -> RecordError:
        return cls(RejectReason(error.reason.value), error.detail)


class InputError(Exception):
    """An input or output location that cannot be used (missing, empty, a file where a folder belongs)."""


class SettingsMismatch(Exception):
    """The partner's records were made with other settings (seed, batch, n_data, keying or schedule)."""


class PublishError(Exception):
    """Aggregates that must not be published (mismatched, or too few clients)."""
