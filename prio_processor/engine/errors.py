"""The one exception type for unusable packets, with a machine-readable reason."""

from __future__ import annotations

import enum


class Reason(str, enum.Enum):
    """Why a record was rejected. The values appear in rejects files and summaries."""

    BAD_JSON = "bad_json"
    BAD_BASE64 = "bad_base64"
    DECRYPT_FAILED = "decrypt_failed"
    MALFORMED = "malformed"
    WRONG_BATCH_ID = "wrong_batch_id"
    WRONG_SERVER = "wrong_server"
    WRONG_LENGTH = "wrong_length"
    OUT_OF_RANGE = "out_of_range"
    DUPLICATE_ID = "duplicate_id"
    MISSING_OWN_PACKET = "missing_own_packet"
    MISSING_PEER_PACKET = "missing_peer_packet"
    SHARE_MISMATCH = "share_mismatch"
    INVALID_PROOF = "invalid_proof"


class PacketError(Exception):
    """A packet (client share or verification packet) that cannot be used.

    `reason` says why, as a `Reason`; the message never contains key material
    or packet contents.
    """

    def __init__(self, reason: Reason, detail: str = "") -> None:
        self.reason = Reason(reason)
        self.detail = detail
        super().__init__(f"{self.reason.value}: {detail}" if detail else self.reason.value)
