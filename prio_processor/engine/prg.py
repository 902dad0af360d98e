"""libprio's pseudorandom generator: AES-128-CTR keystream and integer draws.

libprio draws an integer below `max` by reading as many bytes as `max - 1`
has, then one more byte that overwrites the first, and rejecting values
>= `max`. For every bound this module meets (p, and p minus a small lower
bound) that is 12 stream bytes per attempt: bytes 1..10 of the attempt are the
low bytes and byte 11 is the top byte.
"""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from . import limbs
from .config import SEED_BYTES, PrgKeying
from .field import ELEMENT_BYTES, MODULUS

_ATTEMPT_BYTES = ELEMENT_BYTES + 1
_P_LOW_80 = MODULUS & (2**80 - 1)
assert _P_LOW_80 < 1 << 24
_ZERO_IV = bytes(16)


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
    def from_seed(cls, seed: bytes, batch_id: bytes, keying: PrgKeying) -> Prg:
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
        """`count` uniform field elements as limbs (4, count), consuming exactly what libprio would."""
        parts = []
        have = 0
        while have < count:
            need = count - have
            attempts = _attempts_for(need)
            stream = np.frombuffer(self.read(attempts * _ATTEMPT_BYTES), dtype=np.uint8)
            accepted = np.flatnonzero(_accepted(stream.reshape(attempts, _ATTEMPT_BYTES)))
            if len(accepted) > need:
                # The stream must stop right after the last accepted attempt.
                self._rewind((attempts - int(accepted[need - 1]) - 1) * _ATTEMPT_BYTES)
                accepted = accepted[:need]
            parts.append(stream.reshape(attempts, _ATTEMPT_BYTES)[accepted])
            have += len(accepted)
        return _limbs_of_attempts(np.concatenate(parts))

    def _rewind(self, count: int) -> None:
        # The counter block is the big-endian block index (libprio: 128 counter bits).
        self._position -= count
        block, offset = divmod(self._position, 16)
        counter = block.to_bytes(16, "big")
        self._encryptor = Cipher(algorithms.AES(self._key), modes.CTR(counter)).encryptor()
        self._encryptor.update(bytes(offset))


def _attempts_for(need: int) -> int:
    # Half of all attempts succeed; ask for enough that a shortfall is very rare.
    return 2 * need + 8 * int(need**0.5) + 16


def _accepted(attempts: np.ndarray) -> np.ndarray:
    """Which 12-byte attempts (..., 12) draw a value below p."""
    top = attempts[..., ELEMENT_BYTES]
    ok = top < MODULUS >> 80
    edge = np.flatnonzero(top.reshape(-1) == MODULUS >> 80)
    if len(edge):  # top byte equal to p's: below p only if the other 80 bits are below p's
        flat = attempts.reshape(-1, _ATTEMPT_BYTES)[edge]
        # p's low 80 bits fit in the last three bytes: the seven before must be zero.
        low = flat[:, 8].astype(np.int64) << 16 | flat[:, 9].astype(np.int64) << 8 | flat[:, 10]
        ok.reshape(-1)[edge] = ~flat[:, 1:8].any(axis=1) & (low < _P_LOW_80)
    return ok


def _limbs_of_attempts(attempts: np.ndarray) -> limbs.Limbs:
    """Limbs of accepted attempts (count, 12): the value is byte 11, then bytes 1..10."""
    return limbs.from_attempt_words(np.ascontiguousarray(attempts).view(">u4").astype(np.uint32))


def expand_seeds(
    seeds: list[bytes], batch_id: bytes, keying: PrgKeying, count: int, skip: int = 0
) -> limbs.Limbs:
    """Elements `skip` to `count` of those drawn from each seed's PRG, as limbs
    (4, len(seeds), count - skip): the skipped ones are drawn, never converted."""
    attempts = _attempts_for(count)
    width = attempts * _ATTEMPT_BYTES
    zeros = bytes(width)
    out = np.empty((limbs.LIMBS, len(seeds), count - skip), dtype=np.int64)
    step = max(1, limbs.CHUNK_ELEMENTS * 8 // attempts)  # keep a chunk's keystream in cache
    for first in range(0, len(seeds), step):
        group = seeds[first:first + step]
        keystreams = np.empty((len(group), width), dtype=np.uint8)
        for row, seed in zip(keystreams, group):
            Prg.from_seed(seed, batch_id, keying)._encryptor.update_into(zeros, row.data)
        streams = keystreams.reshape(len(group), attempts, _ATTEMPT_BYTES)
        ok = _accepted(streams)
        rank = np.cumsum(ok, axis=1, dtype=np.int32)
        for k in range(len(group)):
            if rank[k, -1] < count:  # this stream needs more attempts: draw it on its own
                out[:, first + k] = Prg.from_seed(group[k], batch_id, keying).draw_elements(count)[:, skip:]
                ok[k] = False
        chosen = np.flatnonzero((ok & (rank > skip) & (rank <= count)).reshape(-1))
        full = [k for k in range(len(group)) if rank[k, -1] >= count]
        if full:
            words = streams.reshape(-1, _ATTEMPT_BYTES).view(">u4")[chosen].astype(np.uint32)
            values = limbs.from_attempt_words(words)
            out[:, [first + k for k in full]] = values.reshape(limbs.LIMBS, len(full), count - skip)
    return out
