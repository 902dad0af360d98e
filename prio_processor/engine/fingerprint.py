"""A keyed fingerprint of the settings both servers of a batch must share.

Servers that disagree on the shared seed, the batch id, n_data, the PRG keying or
the evaluation schedule reject every packet, or worse, publish zeros. Each
server stamps its verification packets and aggregates with an HMAC-SHA256 of
those settings keyed with the shared seed, so the partner can refuse a mismatch
at once. The MAC reveals nothing about the seed: under the hashed keying
SHA-256(seed || batch id)[:16] is itself the servers' PRG key, so the MAC is
keyed, and domain-separated by a fixed label, never a plain hash of the seed.
"""

from __future__ import annotations

import hashlib
import hmac

_LABEL = b"prio-processor/settings-fingerprint/v1"
#: Hex digits kept: 128 bits tell configurations apart with no practical chance of collision.
MAC_HEX_DIGITS = 32


def _field(value: bytes) -> bytes:
    """Length-prefixed, so that no two lists of fields encode alike."""
    return len(value).to_bytes(4, "big") + value


def settings_mac(seed: bytes, batch_id: bytes, n_data: int, keying: str, schedule: str) -> str:
    """The fingerprint as hex; `schedule` is "" for stages it does not apply to."""
    message = b"".join(
        _field(v) for v in (_LABEL, batch_id, str(n_data).encode(), keying.encode(), schedule.encode())
    )
    return hmac.new(seed, message, hashlib.sha256).hexdigest()[:MAC_HEX_DIGITS]


def same_mac(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("ascii", "replace"), b.encode("ascii", "replace"))
