"""Roots-of-unity polynomial tools against naive Lagrange interpolation."""

from __future__ import annotations

import random

import pytest

from prio_processor.engine import field, limbs, poly
from prio_processor.engine.field import MODULUS


def lagrange(ys: list[int], xs: list[int], r: int) -> int:
    total = 0
    for j, y in enumerate(ys):
        num = den = 1
        for k, x in enumerate(xs):
            if k != j:
                num = num * (r - x) % MODULUS
                den = den * (xs[j] - x) % MODULUS
        total += y * num * pow(den, -1, MODULUS)
    return total % MODULUS


SIZES = [2, 4, 8, 16, 32]


@pytest.mark.parametrize("n", SIZES)
def test_coset_evaluations(n):
    rng = random.Random(n)
    ys = [[rng.randrange(MODULUS) for _ in range(n)] for _ in range(3)]
    roots = field.powers(field.root_of_unity(n), n)
    w2 = field.root_of_unity(2 * n)
    got = limbs.to_ints(poly.coset_evaluations(limbs.from_ints(sum(ys, [])).reshape(4, 3, n)))
    assert got == [lagrange(y, roots, pow(w2, 2 * k + 1, MODULUS)) for y in ys for k in range(n)]


@pytest.mark.parametrize("n", SIZES)
def test_tree_numerators_and_weights(n):
    rng = random.Random(100 + n)
    ys = [[rng.randrange(MODULUS) for _ in range(n)] for _ in range(3)]
    points = [rng.randrange(MODULUS) for _ in range(3)]
    roots = field.powers(field.root_of_unity(n), n)
    log_n = n.bit_length() - 1
    chains = limbs.from_ints(sum(poly.square_chain(points, log_n), [])).reshape(4, 3, log_n)
    numerators = limbs.to_ints(poly.tree_numerators(limbs.from_ints(sum(ys, [])).reshape(4, 3, n), chains))
    for y, r, a in zip(ys, points, numerators):
        expected = lagrange(y, roots, r)
        # sum_j y_j / (r - w^j) = A / (r^n - 1)  =>  f(r) = (r A - (r^n - 1) sum y) / n
        assert (r * a - (pow(r, n, MODULUS) - 1) * sum(y)) * field.inv(n) % MODULUS == expected
        assert sum(w * v for w, v in zip(poly.lagrange_weights(r, n), y)) % MODULUS == expected
    weights = limbs.from_ints(poly.lagrange_weights(points[0], n))
    dotted = poly.dot(limbs.from_ints(sum(ys, [])).reshape(4, 3, n), weights)
    assert dotted == [lagrange(y, roots, points[0]) for y in ys]


def test_weights_at_a_root_of_unity():
    roots = field.powers(field.root_of_unity(8), 8)
    assert poly.lagrange_weights(roots[3], 8) == [int(j == 3) for j in range(8)]


def test_roots_of_unity_orders():
    assert pow(field.GENERATOR, 2**19, MODULUS) == 1 and pow(field.GENERATOR, 2**18, MODULUS) != 1
    with pytest.raises(ValueError):
        field.root_of_unity(3)


@pytest.mark.parametrize("n,big_n", [(1, 2), (5, 8), (7, 8), (20, 32), (100, 128)])
def test_closed_form_basis_sums(n, big_n):
    """g(r) from f(r): L_0(r) and the sum of L_1..L_n(r), at random points and at roots of unity."""
    from prio_processor.engine.server import _lagrange_basis_at

    rng = random.Random(n)
    roots = field.powers(field.root_of_unity(big_n), big_n)
    for r in [rng.randrange(n + 2, MODULUS) for _ in range(5)] + roots[1:]:
        weights = poly.lagrange_weights(r, big_n)
        expected = (weights[0], sum(weights[1:n + 1]) % MODULUS)
        assert _lagrange_basis_at(r, n, big_n, shared=False, indicator=True) == expected
        assert _lagrange_basis_at(r, n, big_n, shared=True, indicator=True) == expected
        assert _lagrange_basis_at(r, n, big_n, shared=False, indicator=False) == (expected[0], 0)
