"""The PRG draws as libprio does, in both keyings."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from prio_processor.engine import limbs, prg
from prio_processor.engine.field import MODULUS
from prio_processor.engine.prg import Prg, PrgKeying, prg_key


def test_keyings():
    seed = bytes(range(16))
    assert prg_key(seed, b"batch", PrgKeying.RAW) == seed
    assert prg_key(seed, b"batch", PrgKeying.HASHED) == hashlib.sha256(seed + b"batch").digest()[:16]
    with pytest.raises(ValueError):
        prg_key(b"short", b"batch", PrgKeying.RAW)


def test_draw_reads_twelve_bytes_and_moves_the_last_to_the_front():
    key = bytes(16)
    stream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(12 * 64))
    expected = []
    for i in range(64):
        block = stream[12 * i: 12 * i + 12]
        value = int.from_bytes(block[11:] + block[1:11], "big")
        if value < MODULUS:
            expected.append(value)
    prg = Prg(key)
    assert [prg.draw() for _ in expected] == expected


@pytest.mark.parametrize("count", [1, 7, 1000])
def test_vectorized_draws_match_scalar_draws_and_stop_in_place(count):
    key = b"k" * 16
    scalar = Prg(key)
    expected = [scalar.draw() for _ in range(count)] + [scalar.draw_range(5)]
    batch = Prg(key)
    assert limbs.to_ints(batch.draw_elements(count)) + [batch.draw_range(5)] == expected


@pytest.mark.parametrize("keying", list(PrgKeying))
def test_expanding_many_seeds_at_once(monkeypatch, keying):
    from prio_processor.engine import prg as prg_module

    seeds = [bytes([i]) * 16 for i in range(40)]
    expected = [limbs.to_ints(Prg.from_seed(s, b"batch", keying).draw_elements(50)) for s in seeds]
    got = prg_module.expand_seeds(seeds, b"batch", keying, 50)
    assert [limbs.to_ints(got[:, i]) for i in range(len(seeds))] == expected
    # Streams that run short of accepted draws take the one-by-one path.
    monkeypatch.setattr(prg_module, "_attempts_for", lambda need: need + 2)
    got = prg_module.expand_seeds(seeds, b"batch", keying, 50)
    assert [limbs.to_ints(got[:, i]) for i in range(len(seeds))] == expected


def test_attempts_at_the_modulus_edge_are_judged_exactly():
    """Attempts whose top byte equals p's are below p only if their other 80 bits are below p's:
    the vectorized judgement agrees with the value's own comparison."""
    rng = np.random.default_rng(7)
    attempts = rng.integers(0, 256, size=(4000, 12), dtype=np.uint8)
    attempts[:, 11] = rng.choice([0x7F, 0x80, 0x80, 0x81], size=4000)
    zeroed = rng.random(4000) < 0.5  # many with bytes 1..7 zero, so the low bytes decide
    attempts[zeroed, 1:8] = 0
    few = np.flatnonzero(zeroed)[:1000]
    attempts[few, 8] = rng.choice([0x07, 0x08, 0x09], size=len(few))
    values = [int(row[11]) << 80 | int.from_bytes(row[1:11].tobytes(), "big") for row in attempts]
    assert prg._accepted(attempts).tolist() == [v < MODULUS for v in values]
    assert any(v < MODULUS and row[11] == 0x80 for v, row in zip(values, attempts))
