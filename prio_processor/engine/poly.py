"""Polynomials through roots of unity, over batches of packets.

Values live on the N-th roots of unity w**j (natural order on the last axis).

* `coset_evaluations`: from values on the N-th roots to values on the odd
  2N-th roots (the client's h points), with two radix-2 transforms.
* `tree_numerators` and `evaluate_at`: the value at a point r per packet in
  O(N) without inversions. Pairing the residue classes j and j + N/2 gives
  (s - t)(s + t) products with s = r**k and t a root of unity, so
  sum_j y_j / (r - w**j) = A / (r**N - 1) with A folded in log N halving steps,
  two products per merged pair.
* `lagrange_weights`: the Lagrange basis at one point, for batches whose
  packets share the point (computed once, then a dot product per packet).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from . import field, limbs
from .field import MODULUS


@cache
def _twiddles(size: int, inverse: bool = False) -> np.ndarray:
    """Limbs of w**0 .. w**(size/2 - 1) for a primitive `size`-th root w."""
    root = field.root_of_unity(size)
    if inverse:
        root = field.inv(root)
    return limbs.from_ints(field.powers(root, size // 2))


def _bit_reverse(count: int) -> np.ndarray:
    bits = count.bit_length() - 1
    idx = np.arange(count)
    out = np.zeros(count, dtype=np.int64)
    for b in range(bits):
        out |= ((idx >> b) & 1) << (bits - 1 - b)
    return out


def _dif_step(u: limbs.Limbs, v: limbs.Limbs, w: limbs.Limbs) -> limbs.Limbs:
    return np.stack([limbs.reduce(u + v), limbs.mul(u - v, w)], axis=-2)


def _dit_step(u: limbs.Limbs, v: limbs.Limbs, w: limbs.Limbs) -> limbs.Limbs:
    v = limbs.mul(v, w)
    return np.stack([limbs.reduce(u + v), limbs.reduce(u - v)], axis=-2)


def _transform(x: limbs.Limbs, inverse: bool, decimate_in_frequency: bool) -> limbs.Limbs:
    """DFT along the last axis (batch on axis 1). In frequency: natural order in,
    bit-reversed order out; in time: bit-reversed in, natural out."""
    n = x.shape[-1]
    batch = x.shape[1:-1]
    sizes = [n >> k for k in range(n.bit_length() - 1)]
    for size in (sizes if decimate_in_frequency else sizes[::-1]):
        half = size // 2
        view = x.reshape((limbs.LIMBS,) + batch + (n // size, 2, half))
        w = _twiddles(size, inverse).reshape((limbs.LIMBS,) + (1,) * (len(batch) + 1) + (half,))
        step = _dif_step if decimate_in_frequency else _dit_step
        x = limbs.batched(step, view[..., 0, :], view[..., 1, :], w).reshape(x.shape)
    return x


@cache
def _coset_twist(n: int) -> np.ndarray:
    """w2**bitrev(i) / n, the factors between the two transforms (w2: 2n-th root)."""
    w2 = field.root_of_unity(2 * n)
    scale = field.inv(n)
    order = _bit_reverse(n)
    return limbs.from_ints(pow(w2, int(k), MODULUS) * scale for k in order)


def coset_evaluations(values: limbs.Limbs) -> limbs.Limbs:
    """Values on the odd 2N-th roots w2**(2k+1), k = 0..N-1, of the polynomials
    through `values` on the N-th roots (last axis has length N)."""
    n = values.shape[-1]
    if n == 1:
        return limbs.reduce(values.copy())
    coefficients = _transform(values, inverse=True, decimate_in_frequency=True)  # bit-reversed order
    twist = _coset_twist(n).reshape((limbs.LIMBS,) + (1,) * (values.ndim - 2) + (n,))
    twisted = limbs.batched(limbs.mul, coefficients, twist)
    return _transform(twisted, inverse=False, decimate_in_frequency=False)


def _merge(s: limbs.Limbs, left: limbs.Limbs, right: limbs.Limbs, t: limbs.Limbs) -> limbs.Limbs:
    return limbs.mul_add(s, left + right, t, left - right)


def tree_numerators(values: limbs.Limbs, s_powers: limbs.Limbs) -> limbs.Limbs:
    """A with sum_j y_j / (r - w**j) = A / (r**N - 1), one A per row.

    `values`: limbs (4, ..., N). `s_powers`: limbs (4, ..., log2 N) holding
    r, r**2, r**4, ..., r**(N/2) for each row.
    """
    acc = values
    n = values.shape[-1]
    level = 0
    half = n // 2
    while half >= 1:
        # Merging classes c and c + half: denominators s - t and s + t,
        # s = r**(n / (2 half)), t = w_(2 half)**c.
        s = s_powers[..., level][..., None]
        t = _twiddles(2 * half).reshape((limbs.LIMBS,) + (1,) * (values.ndim - 2) + (half,))
        acc = limbs.batched(_merge, s, acc[..., :half], acc[..., half:], t)
        half //= 2
        level += 1
    return acc[..., 0]


def square_chain(points: list[int], count: int) -> list[list[int]]:
    """For each point r: [r, r**2, r**4, ...] with `count` items."""
    out = []
    for r in points:
        chain = [r % MODULUS]
        for _ in range(count - 1):
            chain.append(chain[-1] * chain[-1] % MODULUS)
        out.append(chain)
    return out


def lagrange_weights(point: int, n: int) -> list[int]:
    """L_j(point) for the Lagrange basis on the n-th roots of unity."""
    roots = field.powers(field.root_of_unity(n), n)
    r = point % MODULUS
    vanishing = (pow(r, n, MODULUS) - 1) % MODULUS
    if vanishing == 0:
        return [int(r == x) for x in roots]
    # Batch inversion of (r - w**j).
    diffs = [(r - x) % MODULUS for x in roots]
    prefix = [1] * (n + 1)
    for j, d in enumerate(diffs):
        prefix[j + 1] = prefix[j] * d % MODULUS
    inv_all = field.inv(prefix[n])
    scale = vanishing * field.inv(n) % MODULUS
    weights = [0] * n
    for j in range(n - 1, -1, -1):
        inv_d = inv_all * prefix[j] % MODULUS
        inv_all = inv_all * diffs[j] % MODULUS
        weights[j] = scale * roots[j] % MODULUS * inv_d % MODULUS
    return weights


#: Dot products up to this long take canonical weights as three 30-bit limbs: 12 limb
#: products instead of 16, each sum still below 2**63 (2**22 x 2**30 x 2**11).
_WIDE_MAX_LENGTH = 1 << 11
_WIDE_BITS = 30
_VALUE_LIMBS = range(limbs.LIMBS)


def _wide_weights(weights: limbs.Limbs) -> list[np.ndarray] | None:
    """Canonical weights (4, N), limbs in [0, 2**22), as three 30-bit limbs; None otherwise."""
    if weights.shape[-1] > _WIDE_MAX_LENGTH or weights.min() < 0 or weights.max() > limbs.MASK:
        return None
    l0, l1, l2, l3 = weights
    return [l0 | (l1 & 0xFF) << 22, l1 >> 8 | (l2 & 0xFFFF) << 14, l2 >> 16 | l3 << 6]


def dot(values: limbs.Limbs, weights: limbs.Limbs) -> list[int]:
    """sum_j values[..., j] * weights[j] mod p per row; values (4, B, N), weights (4, N).

    Limbs must be at most 2**22 in size, so each of the 16 limb matrix-vector
    products stays below 2**63 for N <= 2**19 (12 products with 30-bit weight
    limbs for N <= 2**11).
    """
    rows = values.shape[1]
    totals = [0] * rows
    wide = _wide_weights(weights)
    # (value limb, shift of its product with a weight limb, that weight limb)
    if wide is not None:
        shifted = [(i, limbs.LIMB_BITS * i + _WIDE_BITS * j, w)
                   for i in _VALUE_LIMBS for j, w in enumerate(wide)]
    else:
        shifted = [(i, limbs.LIMB_BITS * (i + j), weights[j]) for i in _VALUE_LIMBS for j in _VALUE_LIMBS]
    for i, shift, weight in shifted:
        column = (values[i] @ weight).tolist()
        totals = [t + (c << shift) for t, c in zip(totals, column)]
    return [t % MODULUS for t in totals]
