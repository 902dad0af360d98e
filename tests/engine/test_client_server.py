"""Our client and servers together: valid data verifies and sums, tampered proofs never do."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prio_processor.engine import codec, seal
from prio_processor.engine.client import Client, bits_from_uints
from prio_processor.engine.errors import PacketError, Reason
from prio_processor.engine.field import MODULUS
from prio_processor.engine.server import Schedule, TotalShare, final_totals, is_valid, uint_totals

from tests_support import Pair, vector_total_shares
from vectors import VECTORS, Case


def run(pair: Pair, packets: list[tuple[bytes, bytes]], schedule=Schedule.SEQUENTIAL):
    """(validity per packet, totals of the valid ones)."""
    opened = {"A": [pair.a.open(p[0]) for p in packets], "B": [pair.b.open(p[1]) for p in packets]}
    servers = {"A": pair.a, "B": pair.b}
    points = {s: servers[s].points(schedule) for s in servers}
    drawn = {s: [next(points[s]) for _ in packets] for s in servers}
    v1 = {s: servers[s].verify1(opened[s], drawn[s]) for s in servers}
    v2 = {s: servers[s].verify2(opened[s], drawn[s], v1[s], v1["B" if s == "A" else "A"]) for s in servers}
    valid = [is_valid(x, y) for x, y in zip(v2["A"], v2["B"])]
    totals = {}
    for s in servers:
        total = TotalShare(pair.config.n_data, s)
        keep = [p for p, ok in zip(opened[s], valid) if ok]
        if keep:
            total.add(servers[s].data_shares(keep))
        totals[s] = total
    return valid, final_totals(totals["A"], totals["B"])


@pytest.mark.parametrize("n_data", [1, 2, 3, 7, 8, 15, 100, 441])
@pytest.mark.parametrize("schedule", list(Schedule))
def test_round_trip(n_data, schedule):
    pair = Pair(n_data)
    rng = random.Random(n_data)
    vectors = [[rng.randint(0, 1) for _ in range(n_data)] for _ in range(6)]
    valid, totals = run(pair, Client(pair.config).encode_batch(vectors), schedule)
    assert all(valid)
    assert totals == [sum(col) for col in zip(*vectors)]


@pytest.mark.parametrize("n_data", [1, 100, 441, 2046])
def test_a_batch_at_one_point_verifies_as_each_packet_alone(n_data):
    """verify1 over a batch at one point (dot products, g in closed form) gives what each
    packet gives alone (the interpolation tree), at both servers and with invalid packets."""
    pair = Pair(n_data)
    rng = random.Random(n_data)
    vectors = [[rng.randint(0, 1) for _ in range(n_data)] for _ in range(4)]
    packets = Client(pair.config).encode_batch(vectors)
    for index, server in enumerate((pair.a, pair.b)):
        opened = [server.open(p[index]) for p in packets]
        opened[0].f0 = (opened[0].f0 + 1) % MODULUS  # a tampered proof changes nothing here
        point = next(server.points(Schedule.FIXED))
        alone = [server.verify1([p], [point])[0] for p in opened]
        assert server.verify1(opened, [point] * len(opened)) == alone


def test_client_rejects_bad_vectors():
    client = Client(Pair(4).config)
    bad_vectors: list[list[Any]] = [[0, 1, 2, 0], [0, 1, 0], [[0, 1], 0, 1, 0]]
    for bad in bad_vectors:
        with pytest.raises(ValueError):
            client.encode(bad)


def test_uint_encoding_and_totals():
    assert bits_from_uints([5, 0, 255], 8) == [0, 0, 0, 0, 0, 1, 0, 1] + [0] * 8 + [1] * 8
    with pytest.raises(ValueError):
        bits_from_uints([256], 8)
    pair = Pair(3 * 8)
    values = [[7, 200, 13], [255, 0, 1], [1, 2, 3]]
    valid, bit_totals = run(pair, Client(pair.config).encode_batch([bits_from_uints(v, 8) for v in values]))
    assert all(valid)
    assert uint_totals(bit_totals, 8) == [sum(col) for col in zip(*values)]


def test_uint_total_shares_match_libprio():
    """f_uint: folding the bit total shares gives libprio's uint total shares byte for byte."""
    case = Case(VECTORS / "prg-hashed" / "f_uint")
    prec = case.manifest["prec"]
    shares = vector_total_shares(case)
    for server in "AB":
        folded = shares[server].folded_uint(prec).to_bytes()
        assert base64.b64encode(folded).decode() == case.manifest[f"total_share_uint_{server}_b64"]
    folded_shares = [shares[s].folded_uint(prec) for s in "AB"]
    assert final_totals(*folded_shares) == case.manifest["expected_final_uint_totals"]


# -- tampering: every change to a valid packet's proof is caught ------------------

FIELDS_A = ["a", "b", "c", "f0", "g0", "h0", "data", "h"]
FIELDS_B = ["a", "b", "c", "f0", "g0", "h0", "seed"]


@pytest.fixture(scope="module")
def honest():
    pair = Pair(8)
    vectors = [[1, 0, 1, 1, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 0, 0], [1] * 8]
    return pair, Client(pair.config).encode_batch(vectors)


def _tamper(pair: Pair, packet: bytes, server: str, field_name: str, position: int, delta: int) -> bytes:
    private = pair.private_a if server == "A" else pair.private_b
    public = pair.config.public_key_a if server == "A" else pair.config.public_key_b
    cfg = pair.config
    opened = codec.read_client_packet(
        seal.decrypt(private, packet), cfg.batch_id, "AB".index(server), cfg.n_data, cfg.n_points
    )
    head = dict(zip(["a", "b", "c"], opened.triple), f0=opened.f0, g0=opened.g0, h0=opened.h0)
    if field_name in head:
        head[field_name] = (head[field_name] + delta) % MODULUS
    if server == "A":
        assert opened.data_rows is not None and opened.h_rows is not None
        data = [int.from_bytes(r.tobytes(), "big") for r in opened.data_rows]
        h = [int.from_bytes(r.tobytes(), "big") for r in opened.h_rows]
        if field_name == "data":
            data[position % len(data)] = (data[position % len(data)] + delta) % MODULUS
        if field_name == "h":
            h[position % len(h)] = (h[position % len(h)] + delta) % MODULUS
        body = codec.pack_elements(codec._rows_from_ints(data))
        body += codec.pack_elements(codec._rows_from_ints(h))
    else:
        assert opened.seed is not None
        seed = bytearray(opened.seed)
        if field_name == "seed":
            seed[position % 16] ^= 1 + delta % 255
        body = codec.pack_str(bytes(seed))
    triple = (head["a"], head["b"], head["c"])
    plain = codec.pack_client_packet(
        cfg.batch_id, triple, head["f0"], head["g0"], head["h0"], "AB".index(server), body
    )
    return seal.encrypt(public, plain)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from([("A", f) for f in FIELDS_A] + [("B", f) for f in FIELDS_B]),
    st.integers(0, 2),
    st.integers(0, 10_000),
    st.integers(1, MODULUS - 1),
    st.sampled_from(list(Schedule)),
)
def test_every_tampered_proof_is_rejected(honest, target, which, position, delta, schedule):
    pair, packets = honest
    server, field_name = target
    a, b = packets[which]
    tampered = (_tamper(pair, a, "A", field_name, position, delta), b) if server == "A" else (
        a, _tamper(pair, b, "B", field_name, position, delta))
    valid, _ = run(pair, [tampered], schedule)
    assert valid == [False]


def test_untampered_packets_still_pass(honest):
    pair, packets = honest
    same = [(_tamper(pair, a, "A", "data", 0, 0), _tamper(pair, b, "B", "a", 0, 0)) for a, b in packets]
    valid, _ = run(pair, same)
    assert valid == [True, True, True]


def test_firefox_ping_packets_are_libprio_envelopes():
    """A real browser's packets: right sizes for their batch, rejected cleanly without the keys."""
    ping = json.loads((VECTORS / "firefox-ping" / "fx-69.0a1.json").read_text())
    n_data = {"content.blocking_blocked_TESTONLY-0": 2046, "content.blocking_blocked_TESTONLY-1": 441}
    pair = Pair(1)
    for entry in ping["payload"]["prioData"]:
        batch_id = entry["encoding"].encode()
        a, b = (base64.b64decode(entry["prio"][k]) for k in "ab")
        head = len(codec.pack_str(batch_id)) + 1  # batch id, server id
        # B: six elements of 1..11 bytes plus a 16-byte seed.
        assert seal.OVERHEAD + head + 6 * 2 + 17 <= len(b) <= seal.OVERHEAD + head + 6 * 12 + 17
        n = n_data[entry["encoding"]]
        big_n = 1 << n.bit_length() if (n + 1) & n else n + 1
        items = 6 + n + big_n
        arrays = 2 * 3
        frame = seal.OVERHEAD + head + arrays
        assert frame + 2 * items <= len(a) <= frame + 12 * items
        for packet, server in ((a, pair.a), (b, pair.b)):
            with pytest.raises(PacketError) as info:
                server.open(packet)
            assert info.value.reason is Reason.DECRYPT_FAILED


@pytest.mark.slow
def test_largest_vector_libprio_allows():
    from prio_processor.engine.config import MAX_N_DATA

    assert MAX_N_DATA == 262143
    pair = Pair(MAX_N_DATA)
    vector = [i % 2 for i in range(MAX_N_DATA)]
    valid, totals = run(pair, Client(pair.config).encode_batch([vector]))
    assert valid == [True] and totals == vector
    with pytest.raises(ValueError):
        Pair(MAX_N_DATA + 1)
    with pytest.raises(ValueError):
        Pair(0)
