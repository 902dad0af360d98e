"""Vectorized field arithmetic agrees with Python integers modulo p."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from prio_processor.engine import limbs
from prio_processor.engine.field import MODULUS

edge_values = st.sampled_from([0, 1, MODULUS - 1, 2**87, 2**66 - 1])
elements = st.lists(st.integers(0, MODULUS - 1) | edge_values, min_size=1, max_size=40)


@given(elements, elements)
def test_mul_and_mul_add(xs, ys):
    ys = (ys * len(xs))[: len(xs)]
    a, b = limbs.from_ints(xs), limbs.from_ints(ys)
    assert limbs.to_ints(limbs.mul(a, b)) == [x * y % MODULUS for x, y in zip(xs, ys)]
    # Sums and differences of normalized values are valid inputs, and mul_add reduces once.
    got = limbs.to_ints(limbs.mul_add(a + b, a - b, limbs.mul(a, b), b - a))
    assert got == [((x + y) * (x - y) + x * y * (y - x)) % MODULUS for x, y in zip(xs, ys)]


@given(elements)
def test_bytes_round_trip(xs):
    rows = limbs.to_bytes11(limbs.from_ints(xs))
    assert [int.from_bytes(r.tobytes(), "big") for r in rows] == xs
    assert limbs.to_ints(limbs.from_bytes11(rows)) == xs
    assert limbs.below_modulus_bytes11(rows).all()


@settings(deadline=None)
@given(elements, st.integers(0, 255))
def test_items_and_prg_attempts_read_as_their_values(xs, header):
    """12-byte msgpack items (header byte first) and PRG attempts (value byte 11, then 1 to 10)."""
    rows = limbs.to_bytes11(limbs.from_ints(xs))
    items = np.concatenate([np.full((len(xs), 1), header, dtype=np.uint8), rows], axis=1)
    assert limbs.to_ints(limbs.from_items12(items)) == xs
    attempts = np.concatenate([items[:, :1], rows[:, 1:], rows[:, :1]], axis=1)
    words = attempts.view(">u4").astype(np.uint32)
    assert limbs.to_ints(limbs.from_attempt_words(words)) == xs


@given(st.integers(MODULUS, 2**88 - 1))
def test_range_check_rejects_values_from_p_up(value):
    row = np.frombuffer(value.to_bytes(11, "big"), dtype=np.uint8)[None, :]
    assert not limbs.below_modulus_bytes11(row)[0]


@settings(max_examples=30)
@given(st.lists(elements, min_size=1, max_size=5))
def test_reduce_of_sums(groups):
    width = len(groups[0])
    rows = [(g * width)[:width] for g in groups]
    stacked = limbs.from_ints(sum(rows, [])).reshape(limbs.LIMBS, len(rows), width)
    assert limbs.to_ints(limbs.reduce(stacked.sum(axis=1))) == [sum(col) % MODULUS for col in zip(*rows)]


def test_canonical_of_boundary_values():
    # Values just around p and 2p after normalization land in [0, p).
    near = [MODULUS - 1, MODULUS, MODULUS + 1, 2 * MODULUS - 1, 2**88 - 1, 0]
    x = np.zeros((limbs.LIMBS, len(near)), dtype=np.int64)
    for j, v in enumerate(near):
        for i in range(limbs.LIMBS):
            x[i, j] = (v >> (22 * i)) & limbs.MASK if i < 3 else v >> 66
    assert limbs.to_ints(x) == [v % MODULUS for v in near]


@settings(max_examples=25)
@given(st.lists(st.integers(0, MODULUS - 1), min_size=8, max_size=8), st.integers(0, MODULUS - 1))
def test_long_chains_of_loose_values_stay_exact(xs, s):
    """Tree-style merges reuse loose outputs as inputs, level after level."""
    a = limbs.from_ints(xs)
    expected = list(xs)
    factor = limbs.from_ints([s])
    for _ in range(40):
        left, right = a[:, :4], a[:, 4:]
        merged = limbs.mul_add(factor, left + right, left, left - right)
        a = np.concatenate([merged, limbs.mul(merged, merged - left)], axis=1)
        el, er = expected[:4], expected[4:]
        m = [(s * (x + y) + x * (x - y)) % MODULUS for x, y in zip(el, er)]
        expected = m + [v * (v - x) % MODULUS for v, x in zip(m, el)]
        assert np.abs(a).max() < 2**23
    assert limbs.to_ints(a) == expected
