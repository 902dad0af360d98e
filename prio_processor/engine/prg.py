"""libprio's pseudorandom generator: AES-128-CTR keystream and integer draws.

libprio draws an integer below `max` by reading as many bytes as `max - 1`
has, then one more byte that overwrites the first, and rejecting values
>= `max`. For every bound this module meets (p, and p minus a small lower
bound) that is 12 stream bytes per attempt: bytes 1..10 of the attempt are the
low bytes and byte 11 is the top byte.
"""

from __future__ import annotations

import enum
import hashlib

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from . import limbs
from .field import ELEMENT_BYTES, MODULUS

SEED_BYTES = 16
_ATTEMPT_BYTES = ELEMENT_BYTES + 1
_ZERO_IV = bytes(16)


class PrgKeying(str, enum.Enum):
    """How a 16-byte seed becomes the AES key of a PRG."""

    #: SHA-256(seed || batch_id)[:16]: libprio after July 2020, PyPI prio 1.1.
    HASHED = "hashed"
    #: The seed itself: libprio C releases up to 1.6.
    RAW = "raw"


def prg_key(seed: bytes, batch_id: bytes, keying: PrgKeying) -> bytes:
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a PRG seed has {SEED_BYTES} bytes, not {len(seed)}")
    if PrgKeying(keying) is PrgKeying.HASHED:
        return hashlib.sha256(seed + batch_id).digest()[:SEED_BYTES]
    return seed


def _draw_bounds(upper: int) -> None:
    # Every attempt is 12 bytes and unmasked only while upper - 1 has 11 bytes
    # whose top byte is 0x80.
    if not (1 << 87) < upper <= MODULUS:
        raise ValueError("draw bound outside the range this PRG supports")


class Prg:
    """One keystream; draws continue where the previous one stopped."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._position = 0
        self._encryptor = Cipher(algorithms.AES(key), modes.CTR(_ZERO_IV)).encryptor()

    @classmethod
    def from_seed(cls, seed: bytes, batch_id: bytes, keying: PrgKeying) -> "Prg":
        return cls(prg_key(seed, batch_id, keying))

    def read(self, count: int) -> bytes:
        self._position += count
        return self._encryptor.update(bytes(count))

    def draw(self, upper: int = MODULUS) -> int:
        """One uniform integer in [0, upper)."""
        _draw_bounds(upper)
        while True:
            block = self.read(_ATTEMPT_BYTES)
            value = int.from_bytes(block[ELEMENT_BYTES:] + block[1:ELEMENT_BYTES], "big")
            if value < upper:
                return value

    def draw_range(self, lower: int, upper: int = MODULUS) -> int:
        """One integer in [lower, upper), as libprio's PRG_get_int_range."""
        return lower + self.draw(upper - lower)

    def draw_elements(self, count: int) -> limbs.Limbs:
        """`count` uniform field elements as limbs, consuming exactly what libprio would."""
        parts = []
        have = 0
        while have < count:
            need = count - have
            # Half of all attempts succeed; ask for a little more than twice the need.
            attempts = 2 * need + 8 * int(need**0.5) + 16
            rows = np.frombuffer(self.read(attempts * _ATTEMPT_BYTES), dtype=np.uint8)
            rows = rows.reshape(attempts, _ATTEMPT_BYTES)
            values = np.empty((attempts, ELEMENT_BYTES), dtype=np.uint8)
            values[:, 0] = rows[:, ELEMENT_BYTES]
            values[:, 1:] = rows[:, 1:ELEMENT_BYTES]
            accepted = np.flatnonzero(limbs.below_modulus_bytes11(values))
            if len(accepted) > need:
                # Rewind: the stream must stop right after the last accepted attempt.
                surplus = attempts - int(accepted[need - 1]) - 1
                self._rewind(surplus * _ATTEMPT_BYTES)
                accepted = accepted[:need]
            parts.append(values[accepted])
            have += len(accepted)
        return limbs.from_bytes11(np.concatenate(parts))

    def _rewind(self, count: int) -> None:
        # The counter block is the big-endian block index (libprio: 128 counter bits).
        self._position -= count
        block, offset = divmod(self._position, 16)
        counter = block.to_bytes(16, "big")
        self._encryptor = Cipher(algorithms.AES(self._key), modes.CTR(counter)).encryptor()
        self._encryptor.update(bytes(offset))
