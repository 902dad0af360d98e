"""The prime field of libprio v1 and its roots of unity (scalar, Python ints)."""

from __future__ import annotations

MODULUS = 2**87 + 2**19 + 1
# A generator of the multiplicative subgroup of order 2**19 (libprio's config.h).
GENERATOR = 0x2597C14F48D5B65ED8DCCA
ROOTS_LOG2 = 19
ELEMENT_BYTES = 11
INV2 = (MODULUS + 1) // 2


def inv(x: int) -> int:
    """Multiplicative inverse modulo p (x must be non-zero mod p)."""
    return pow(x, -1, MODULUS)


def root_of_unity(order: int) -> int:
    """A primitive `order`-th root of unity, as libprio derives it."""
    if order < 1 or order > 1 << ROOTS_LOG2 or order & (order - 1):
        raise ValueError(f"no root of unity of order {order}")
    return pow(GENERATOR, (1 << ROOTS_LOG2) // order, MODULUS)


def powers(base: int, count: int) -> list[int]:
    """[1, base, base**2, ...] modulo p, `count` items."""
    out = [1] * count
    for i in range(1, count):
        out[i] = out[i - 1] * base % MODULUS
    return out


def next_power_of_two(n: int) -> int:
    """Smallest power of two >= n (libprio's util.h)."""
    return 1 << (n - 1).bit_length() if n > 1 else 1


def to_bytes(x: int) -> bytes:
    """Minimal big-endian bytes, zero as one zero byte (libprio's mp_int wire form)."""
    return x.to_bytes(max(1, (x.bit_length() + 7) // 8), "big")
