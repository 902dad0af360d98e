"""Vectorized arithmetic modulo p = 2**87 + 2**19 + 1 on numpy arrays.

An element is four signed 22-bit limbs in an int64 array whose first axis is
the limb axis: ``x[0] + x[1]*2**22 + x[2]*2**44 + x[3]*2**66``. Limb products
stay below 2**48, so a whole schoolbook product, or the sum of two, fits in
int64 before reduction. Reduction uses the special form of p:
2**88 = -(2**20 + 2) (mod p).

Results of `mul` and `reduce` are *normalized*: limbs 0-2 in [0, 2**22), limb 3
in [-1, 2**22), value in (-2**48, 2**88). Sums and differences of two
normalized values are valid `mul` inputs (every limb below 2**24 in size);
`canonical` brings a value into [0, p).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .field import ELEMENT_BYTES, MODULUS

LIMB_BITS = 22
LIMBS = 4
MASK = (1 << LIMB_BITS) - 1
FOLD = (1 << 20) + 2  # 2**88 = -FOLD (mod p)
_P_LOW = (1 << 19) + 1  # p = 2**87 + _P_LOW; bit 87 is bit 21 of limb 3
_P_HI_BYTES = MODULUS >> 64
_P_LO_BYTES = MODULUS & (2**64 - 1)

Limbs = np.ndarray


def zeros(shape: Sequence[int] | int) -> Limbs:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return np.zeros((LIMBS,) + shape, dtype=np.int64)


def from_ints(values: Iterable[int]) -> Limbs:
    """Limbs of Python ints (reduced mod p first), one element per value."""
    vals = [v % MODULUS for v in values]
    out = np.empty((LIMBS, len(vals)), dtype=np.int64)
    for i in range(LIMBS):
        shift = LIMB_BITS * i
        out[i] = [(v >> shift) & MASK for v in vals]
    return out


def to_ints(x: Limbs) -> list[int]:
    """Python ints in [0, p) of a limb array, flattened in C order."""
    c = canonical(x).reshape(LIMBS, -1).tolist()
    return [a | b << 22 | c_ << 44 | d << 66 for a, b, c_, d in zip(*c)]


def from_bytes11(rows: np.ndarray) -> Limbs:
    """Limbs of 11-byte big-endian rows (uint8, last axis of size 11)."""
    rows = np.ascontiguousarray(rows, dtype=np.uint8)
    lo = rows[..., 3:].copy().view(">u8")[..., 0].astype(np.uint64)
    hi = (
        rows[..., 0].astype(np.int64) << 16
        | rows[..., 1].astype(np.int64) << 8
        | rows[..., 2].astype(np.int64)
    )
    out = np.empty((LIMBS,) + lo.shape, dtype=np.int64)
    out[0] = (lo & np.uint64(MASK)).astype(np.int64)
    out[1] = ((lo >> np.uint64(22)) & np.uint64(MASK)).astype(np.int64)
    out[2] = (lo >> np.uint64(44)).astype(np.int64) | (hi & 3) << 20
    out[3] = hi >> 2
    return out


def below_modulus_bytes11(rows: np.ndarray) -> np.ndarray:
    """Boolean mask: which 11-byte big-endian rows encode a value < p."""
    rows = np.ascontiguousarray(rows, dtype=np.uint8)
    lo = rows[..., 3:].copy().view(">u8")[..., 0]
    hi = (
        rows[..., 0].astype(np.int64) << 16
        | rows[..., 1].astype(np.int64) << 8
        | rows[..., 2].astype(np.int64)
    )
    return (hi < _P_HI_BYTES) | ((hi == _P_HI_BYTES) & (lo < np.uint64(_P_LO_BYTES)))


def to_bytes11(x: Limbs) -> np.ndarray:
    """11-byte big-endian rows (uint8) of the canonical values of `x`."""
    c = canonical(x)
    lo = (
        c[0].astype(np.uint64)
        | c[1].astype(np.uint64) << np.uint64(22)
        | (c[2] & ((1 << 20) - 1)).astype(np.uint64) << np.uint64(44)
    )
    hi = c[2] >> 20 | c[3] << 2
    out = np.empty(lo.shape + (ELEMENT_BYTES,), dtype=np.uint8)
    out[..., 0] = hi >> 16
    out[..., 1] = (hi >> 8) & 0xFF
    out[..., 2] = hi & 0xFF
    out[..., 3:] = lo.astype(">u8")[..., None].view(np.uint8)
    return out


def _carry(x: Limbs, count: int) -> None:
    """Propagate carries in place through limbs 0..count-1 into limb `count`."""
    for i in range(count):
        carry = x[i] >> LIMB_BITS
        x[i] &= MASK
        x[i + 1] += carry


def _columns(a: Limbs, b: Limbs) -> Limbs:
    """The seven column sums of the schoolbook product (no reduction)."""
    a0, a1, a2, a3 = a
    b0, b1, b2, b3 = b
    shape = np.broadcast_shapes(a0.shape, b0.shape)
    c = np.empty((8,) + shape, dtype=np.int64)
    np.multiply(a0, b0, out=c[0])
    np.multiply(a0, b1, out=c[1])
    c[1] += a1 * b0
    np.multiply(a0, b2, out=c[2])
    c[2] += a1 * b1
    c[2] += a2 * b0
    np.multiply(a0, b3, out=c[3])
    c[3] += a1 * b2
    c[3] += a2 * b1
    c[3] += a3 * b0
    np.multiply(a1, b3, out=c[4])
    c[4] += a2 * b2
    c[4] += a3 * b1
    np.multiply(a2, b3, out=c[5])
    c[5] += a3 * b2
    np.multiply(a3, b3, out=c[6])
    c[7] = 0
    return c


def _reduce_columns(c: Limbs) -> Limbs:
    """Normalize an 8-column product (columns below 2**62 in size)."""
    _carry(c, 7)
    r = c[:4]
    r -= FOLD * c[4:]
    # The value is now below 2**115 in size; fold what lies above bit 88 once more.
    top = np.zeros_like(r[0])
    for i in range(3):
        carry = r[i] >> LIMB_BITS
        r[i] &= MASK
        r[i + 1] += carry
    top = r[3] >> LIMB_BITS
    r[3] &= MASK
    r[0] -= FOLD * top
    for i in range(3):
        carry = r[i] >> LIMB_BITS
        r[i] &= MASK
        r[i + 1] += carry
    return r


def mul(a: Limbs, b: Limbs) -> Limbs:
    """a * b, normalized. Shapes broadcast after the limb axis."""
    return _reduce_columns(_columns(a, b))


def mul_add(a: Limbs, b: Limbs, c: Limbs, d: Limbs) -> Limbs:
    """a * b + c * d with a single reduction."""
    cols = _columns(a, b)
    cols += _columns(c, d)
    return _reduce_columns(cols)


def reduce(x: Limbs) -> Limbs:
    """Normalize limbs of any size below 2**61 (sums of many elements, say)."""
    c = np.zeros((8,) + x.shape[1:], dtype=np.int64)
    c[:LIMBS] = x
    return _reduce_columns(c)


def canonical(x: Limbs) -> Limbs:
    """The same values in [0, p), limbs in [0, 2**22)."""
    r = reduce(x)
    # r is in (-2**48, 2**88); subtract floor(r / 2**87) * p, then fix the sign.
    q = r[3] >> 21
    r[3] -= q << 21
    r[0] -= q * _P_LOW
    _carry(r, 3)
    negative = r[3] >> 63  # all ones where negative
    r[3] += negative & (1 << 21)
    r[0] += negative & _P_LOW
    _carry(r, 3)
    return r


def scalar(value: int) -> Limbs:
    """One element as limbs of shape (4,)."""
    return from_ints([value])[:, 0]


def sum_axis(x: Limbs, axis: int) -> Limbs:
    """Sum over a batch axis (axis counts batch axes, limb axis excluded)."""
    total = np.zeros(x.shape[1:axis + 1] + x.shape[axis + 2:], dtype=np.int64)
    total = x.sum(axis=axis + 1)
    return reduce(total)
