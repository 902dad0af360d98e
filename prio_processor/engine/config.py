"""A batch's configuration: vector length, the servers' public keys, batch id; and the
settings both servers must share (PRG keying, evaluation-point schedule). Free of numpy,
so that front ends can validate options without loading the engine."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from .field import ROOTS_LOG2, next_power_of_two

#: Bytes of a PRG seed (and of the servers' shared seed).
SEED_BYTES = 16


class PrgKeying(str, enum.Enum):
    """How a 16-byte seed becomes the AES key of a PRG."""

    #: SHA-256(seed || batch_id)[:16]: libprio after July 2020, PyPI prio 1.1.
    HASHED = "hashed"
    #: The seed itself: libprio C releases up to 1.6.
    RAW = "raw"


class Schedule(str, enum.Enum):
    """Which evaluation point each packet is verified at."""

    #: One server PRG stream per stage; each packet that opens draws the next
    #: point, in input order (the original command line).
    SEQUENTIAL = "sequential"
    #: Every packet uses the first draw (the original Spark pipeline).
    FIXED = "fixed"


#: libprio's limit: n_data + 1 points, doubled, must fit the 2**19 roots of unity.
MAX_N_DATA = (1 << (ROOTS_LOG2 - 1)) - 1


@dataclass(frozen=True)
class Config:
    n_data: int
    public_key_a: X25519PublicKey
    public_key_b: X25519PublicKey
    batch_id: bytes

    def __post_init__(self) -> None:
        if isinstance(self.n_data, bool) or not isinstance(self.n_data, int):
            raise ValueError("n_data must be an integer")
        if not 1 <= self.n_data <= MAX_N_DATA:
            raise ValueError(f"n_data must be between 1 and {MAX_N_DATA}, got {self.n_data}")
        if isinstance(self.batch_id, str):
            object.__setattr__(self, "batch_id", self.batch_id.encode("utf-8"))

    @property
    def n_points(self) -> int:
        """N: the number of points per proof polynomial (n_data + 1 rounded up to a power of two)."""
        return next_power_of_two(self.n_data + 1)
