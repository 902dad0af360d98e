"""Vectorized arithmetic modulo p = 2**87 + 2**19 + 1 on numpy arrays.

An element is four signed 22-bit limbs in an int64 array whose first axis is
the limb axis: ``x[0] + x[1]*2**22 + x[2]*2**44 + x[3]*2**66``. Limbs stay
small enough that a whole schoolbook product, or the sum of two, fits in int64
before reduction. Reduction uses the special form of p:
2**88 = -(2**20 + 2) (mod p).

Results of `mul` and `reduce` are *loose*: every limb in [-2**18, 2**22 + 2**18).
`mul` accepts limbs up to 2**29 in size, so sums and differences of a few
loose values are valid inputs without another reduction; `canonical` brings a
value into [0, p).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

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
    shape = rows.shape[:-1]
    flat = rows.reshape(-1, rows.shape[-1])
    out = np.empty((LIMBS, len(flat)), dtype=np.int64)
    for start in range(0, len(flat), CHUNK_ELEMENTS):  # in cache-sized pieces
        out[:, start:start + CHUNK_ELEMENTS] = _from_bytes11(flat[start:start + CHUNK_ELEMENTS])
    return out.reshape((LIMBS,) + shape)


def _from_bytes11(rows: np.ndarray) -> Limbs:
    rows = np.ascontiguousarray(rows, dtype=np.uint8)
    lo = rows[:, 3:].copy().view(">u8")[:, 0].astype(np.uint64)
    hi = rows[:, 0].astype(np.int64) << 16 | rows[:, 1].astype(np.int64) << 8 | rows[:, 2]
    out = np.empty((LIMBS, len(rows)), dtype=np.int64)
    out[0] = (lo & np.uint64(MASK)).astype(np.int64)
    out[1] = ((lo >> np.uint64(22)) & np.uint64(MASK)).astype(np.int64)
    out[2] = (lo >> np.uint64(44)).astype(np.int64) | (hi & 3) << 20
    out[3] = hi >> 2
    return out


#: Bytes of an element as msgpack writes most of them: one header byte, then the 11
#: big-endian bytes of the value. Read as three big-endian 32-bit words, such items
#: convert to limbs with a few shifts and no copy of the bytes.
ITEM_BYTES = ELEMENT_BYTES + 1


def from_items12(items: np.ndarray) -> Limbs:
    """Limbs of 12-byte items (uint8, last axis of size 12): a byte that is ignored (a
    msgpack header), then an 11-byte big-endian value."""
    shape = items.shape[:-1]
    words = np.ascontiguousarray(items, dtype=np.uint8).reshape(-1, ITEM_BYTES).view(">u4")
    return _from_words(words).reshape((LIMBS,) + shape)


def from_item_arrays(arrays: Sequence[np.ndarray]) -> Limbs:
    """Limbs (4, B, n) of B arrays of n 12-byte items each (as `from_items12`): stacked and
    turned into native 32-bit words in one pass."""
    words = np.stack([np.ascontiguousarray(items).view(">u4") for items in arrays], dtype=np.uint32,
                     casting="equiv")
    return _from_words(words.reshape(-1, 3)).reshape(LIMBS, len(arrays), -1)


def _from_words(words: np.ndarray) -> Limbs:
    """Limbs (4, count) of items given as three 32-bit words each (count, 3), any byte order."""
    out = np.empty((LIMBS, len(words)), dtype=np.int64)
    for start in range(0, len(words), CHUNK_ELEMENTS):  # in cache-sized pieces
        chunk = words[start:start + CHUNK_ELEMENTS].astype(np.uint32, copy=False)
        high, middle, low = chunk[:, 0], chunk[:, 1], chunk[:, 2]  # value bits 64-87, 32-63, 0-31
        part = out[:, start:start + CHUNK_ELEMENTS]
        part[0] = low & MASK
        part[1] = low >> 22 | (middle & 0xFFF) << 10
        part[2] = middle >> 12 | (high & 0x3) << 20
        part[3] = (high & 0xFFFFFF) >> 2
    return out


def from_attempt_words(words: np.ndarray) -> Limbs:
    """Limbs of PRG attempts given as their three big-endian 32-bit words (uint32, last axis
    of size 3): the value is the attempt's byte 11, then its bytes 1 to 10 (libprio's order)."""
    first, middle, last = words[..., 0], words[..., 1], words[..., 2]  # bytes 0-3, 4-7, 8-11
    out = np.empty((LIMBS,) + words.shape[:-1], dtype=np.int64)
    # value bits 0-23: bytes 8-10; 24-55: bytes 4-7; 56-79: bytes 1-3; 80-87: byte 11.
    out[0] = last >> 8 & MASK
    out[1] = last >> 30 | (middle & 0xFFFFF) << 2
    out[2] = middle >> 20 | (first & 0x3FF) << 12
    out[3] = (first & 0xFFFFFF) >> 10 | (last & 0xFF) << 14
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


def _columns(a: Limbs, b: Limbs, out: Limbs | None = None) -> Limbs:
    """The seven column sums of the schoolbook product, added into `out` if given."""
    shape = np.broadcast_shapes(a.shape[1:], b.shape[1:])
    fresh = out is None
    columns = np.empty((7,) + shape, dtype=np.int64) if out is None else out
    tmp = np.empty(shape, dtype=np.int64)
    for i in range(LIMBS):
        for j in range(LIMBS):
            if fresh and (i == 0 or j == LIMBS - 1):
                np.multiply(a[i], b[j], out=columns[i + j])  # first product of its column
            else:
                np.multiply(a[i], b[j], out=tmp)
                columns[i + j] += tmp
    return columns


def _reduce_columns(c: Limbs) -> Limbs:
    """Reduce seven columns (each below 2**62 in size) to four loose limbs.

    Columns 4-6 (bits 88 and up) are split at 22 bits and folded down with
    2**88 = -FOLD; carries then run up once, the top folds once more, and two
    last carries leave limbs in [-2**18, 2**22 + 2**18).
    """
    high = c[4:7] >> LIMB_BITS
    low = c[4:7] & MASK
    r = c[:4]
    r[0] -= FOLD * low[0]
    r[1] -= FOLD * (high[0] + low[1])
    r[2] -= FOLD * (high[1] + low[2])
    r[3] -= FOLD * high[2]
    _carry(r, 3)
    top = r[3] >> LIMB_BITS
    r[3] &= MASK
    r[0] -= FOLD * top
    _carry(r, 2)
    return r


def mul(a: Limbs, b: Limbs) -> Limbs:
    """a * b, loosely reduced. Shapes broadcast after the limb axis; input limbs up to 2**29."""
    return _reduce_columns(_columns(a, b))


def mul_add(a: Limbs, b: Limbs, c: Limbs, d: Limbs) -> Limbs:
    """a * b + c * d with a single reduction."""
    return _reduce_columns(_columns(c, d, _columns(a, b)))


def reduce(x: Limbs) -> Limbs:
    """Loosely reduce limbs of any size below 2**61 (sums of many elements, say)."""
    c = np.zeros((7,) + x.shape[1:], dtype=np.int64)
    c[:LIMBS] = x
    return _reduce_columns(c)


def canonical(x: Limbs) -> Limbs:
    """The same values in [0, p), limbs in [0, 2**22)."""
    r = reduce(x)
    # Carry fully (limb 3 keeps the sign): the value is now in (-2**41, 2**88 + 2**41).
    _carry(r, 3)
    for _ in range(2):
        top = r[3] >> LIMB_BITS
        r[3] &= MASK
        r[0] -= FOLD * top
        _carry(r, 3)
    # Subtract floor(r / 2**87) * p, then add p back where that went negative.
    q = r[3] >> 21
    r[3] -= q << 21
    r[0] -= q * _P_LOW
    _carry(r, 3)
    negative = r[3] >> 63  # all ones where negative
    r[3] += negative & (1 << 21)
    r[0] += negative & _P_LOW
    _carry(r, 3)
    return r


#: Elements per limb row that one vectorized step works on: small enough that
#: the seven column rows stay in a core's cache.
CHUNK_ELEMENTS = 1 << 14


def batched(func: Callable[..., Limbs], *arrays: Limbs) -> Limbs:
    """func(*arrays) computed in slices of the batch axis (axis 1), for cache locality.

    Arrays whose batch axis has length 1 are broadcast to every slice.
    """
    batch = max(a.shape[1] for a in arrays)
    per_item = max(int(np.prod(a.shape[2:], dtype=np.int64)) for a in arrays)
    step = max(1, CHUNK_ELEMENTS // max(per_item, 1))
    if step >= batch:
        return func(*arrays)
    out: Limbs | None = None
    for start in range(0, batch, step):
        part = func(*[a[:, start:start + step] if a.shape[1] > 1 else a for a in arrays])
        if out is None:
            out = np.empty(part.shape[:1] + (batch,) + part.shape[2:], dtype=np.int64)
        out[:, start:start + step] = part
    assert out is not None  # step < batch, so the loop ran
    return out
