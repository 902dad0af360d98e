"""The Prio client: encode bit vectors into a pair of encrypted packets.

Packets are byte-compatible with libprio's PrioClient_encode: server B gets a
seed from which it re-expands its shares; server A gets the data shares, the h
points on the odd 2N-th roots, shares of f(1), g(1), h(1) and a Beaver triple.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from . import codec, limbs, poly, seal
from .codec import SERVER_A, SERVER_B
from .config import Config
from .field import MODULUS
from .prg import SEED_BYTES, PrgKeying, expand_seeds

_CHUNK_ELEMENTS = 1 << 17


def _random_element() -> int:
    import secrets  # only clients draw secrets: server stages start without it

    return secrets.randbelow(MODULUS)


def _share(value: int) -> tuple[int, int]:
    """Additive shares (A, B) of a value, A's uniformly random (libprio's share_int)."""
    share_a = _random_element()
    return share_a, (value - share_a) % MODULUS


def _beaver_triples() -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    a1, b1, a2, b2, c2 = (_random_element() for _ in range(5))
    c1 = ((a1 + a2) * (b1 + b2) - c2) % MODULUS
    return (a1, b1, c1), (a2, b2, c2)


@lru_cache(maxsize=16)
def _coset_constants(n_data: int, n_points: int) -> tuple[limbs.Limbs, limbs.Limbs]:
    """Odd-root values of the interpolants of e_0 and of the indicator of 1..n_data.

    g's points are f's minus that indicator, with g(1) in place of f(1), so by
    linearity g's odd-root values follow from f's without another transform.
    """
    unit = limbs.zeros((2, n_points))
    unit[0, 0, 0] = 1
    unit[0, 1, 1:n_data + 1] = 1
    values = poly.coset_evaluations(unit)
    return values[:, 0], values[:, 1]


def bits_from_uints(values: Sequence[int], prec: int) -> list[int]:
    """libprio's unsigned-integer encoding: each value as `prec` bits, most significant first."""
    if prec < 1:
        raise ValueError("precision must be at least one bit")
    bits: list[int] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << prec:
            raise ValueError(f"{value!r} is not an unsigned integer of {prec} bits")
        bits.extend((value >> (prec - 1 - k)) & 1 for k in range(prec))
    return bits


class Client:
    """Encodes batches of bit vectors for one configuration."""

    def __init__(self, config: Config, keying: PrgKeying = PrgKeying.HASHED) -> None:
        self.config = config
        self.keying = PrgKeying(keying)

    def encode(self, bits: Sequence[int]) -> tuple[bytes, bytes]:
        """Encrypted packets (for A, for B) of one bit vector."""
        return self.encode_batch([bits])[0]

    def encode_batch(self, vectors: Sequence[Sequence[int]]) -> list[tuple[bytes, bytes]]:
        """Encrypted packets (for A, for B) of each bit vector."""
        # Chunks keep the limb arrays of one pass at a few megabytes.
        step = max(1, _CHUNK_ELEMENTS // self.config.n_points)
        return [
            packet
            for start in range(0, len(vectors), step)
            for packet in self._encode_chunk(vectors[start:start + step])
        ]

    def _encode_chunk(self, vectors: Sequence[Sequence[int]]) -> list[tuple[bytes, bytes]]:
        cfg = self.config
        n, big_n = cfg.n_data, cfg.n_points
        count = len(vectors)
        if count == 0:
            return []
        try:
            x = np.array(vectors, dtype=np.int64)
        except (TypeError, ValueError):
            raise ValueError("every vector must be a list of 0/1 values of the same length") from None
        if x.shape != (count, n):
            raise ValueError(f"every vector must have exactly {n} entries")
        if ((x != 0) & (x != 1)).any():
            raise ValueError("vector entries must be 0 or 1")

        seeds = [os.urandom(SEED_BYTES) for _ in range(count)]
        # B's data shares come first from its PRG, then its h shares.
        drawn = expand_seeds(seeds, cfg.batch_id, self.keying, n + big_n)
        data_a = drawn[..., :n].copy()
        data_a *= -1
        data_a[0] += x

        f0 = [_random_element() for _ in range(count)]
        g0 = [_random_element() for _ in range(count)]
        f = limbs.zeros((count, big_n))
        f[:, :, 0] = limbs.from_ints(f0)
        f[0, :, 1:n + 1] = x
        f_odd = poly.coset_evaluations(f)
        e0_odd, indicator_odd = _coset_constants(n, big_n)
        g_shift = limbs.from_ints((g - f_) for g, f_ in zip(g0, f0))[:, :, None]
        g_odd = limbs.mul(g_shift, e0_odd[:, None, :]) + f_odd - indicator_odd[:, None, :]
        h_odd = limbs.mul(f_odd, g_odd)
        h_a = h_odd - drawn[..., n:]

        data_rows = limbs.to_bytes11(data_a)
        h_rows = limbs.to_bytes11(h_a)
        packets = []
        for k in range(count):
            triple_a, triple_b = _beaver_triples()
            f0_a, f0_b = _share(f0[k])
            g0_a, g0_b = _share(g0[k])
            h0_a, h0_b = _share(f0[k] * g0[k] % MODULUS)
            body_a = codec.pack_elements(data_rows[k]) + codec.pack_elements(h_rows[k])
            plain_a = codec.pack_client_packet(cfg.batch_id, triple_a, f0_a, g0_a, h0_a, SERVER_A, body_a)
            plain_b = codec.pack_client_packet(
                cfg.batch_id, triple_b, f0_b, g0_b, h0_b, SERVER_B, codec.pack_str(seeds[k])
            )
            packets.append((seal.encrypt(cfg.public_key_a, plain_a), seal.encrypt(cfg.public_key_b, plain_b)))
        return packets
