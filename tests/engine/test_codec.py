"""Every malformed client packet is one PacketError with a specific reason, never anything else."""

from __future__ import annotations

import random

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prio_processor.engine import codec, seal
from prio_processor.engine.errors import PacketError, Reason
from prio_processor.engine.field import MODULUS

N_DATA, N_POINTS = 8, 16


def _elements(values: list[int]) -> bytes:
    minimal = [v.to_bytes(max(1, (v.bit_length() + 7) // 8), "big") for v in values]
    return msgpack.packb(minimal, use_bin_type=False)


def _plain_a(batch=b"test-batch", server=0, data=None, h=None, head=None) -> bytes:
    data = [random.randrange(MODULUS) for _ in range(N_DATA)] if data is None else data
    h = [random.randrange(MODULUS) for _ in range(N_POINTS)] if h is None else h
    head = [1, 2, 3, 4, 5, 6] if head is None else head
    body = _elements(data) + _elements(h)
    a, b, c, f0, g0, h0 = head
    return codec.pack_client_packet(batch, (a, b, c), f0, g0, h0, server, body)


def _open(pair, plaintext: bytes, server: str = "A"):
    target = pair.a if server == "A" else pair.b
    key = pair.config.public_key_a if server == "A" else pair.config.public_key_b
    return target.open(seal.encrypt(key, plaintext))


def test_wellformed_packet_opens(pair8):
    data = [0, 1, 2, MODULUS - 1, 5, 6, 7, 256]
    packet = _open(pair8, _plain_a(data=data))
    assert [int.from_bytes(r.tobytes(), "big") for r in packet.data_rows] == data
    assert packet.triple == (1, 2, 3) and (packet.f0, packet.g0, packet.h0) == (4, 5, 6)


@pytest.mark.parametrize(
    "plaintext,reason",
    [
        (b"", Reason.MALFORMED),
        (b"\xc1\xc1\xc1", Reason.MALFORMED),
        (_plain_a()[:-5], Reason.MALFORMED),
        (_plain_a(batch=b"other-batch"), Reason.WRONG_BATCH_ID),
        (_plain_a(server=1), Reason.WRONG_SERVER),
        (_plain_a(server=7), Reason.MALFORMED),
        (_plain_a(data=[1] * (N_DATA + 1)), Reason.WRONG_LENGTH),
        (_plain_a(h=[1] * (N_POINTS - 1)), Reason.WRONG_LENGTH),
        (_plain_a(data=[MODULUS] + [0] * (N_DATA - 1)), Reason.OUT_OF_RANGE),
        (_plain_a(h=[0] * (N_POINTS - 1) + [2**88 - 1]), Reason.OUT_OF_RANGE),
        (_plain_a(head=[1, 2, MODULUS, 4, 5, 6]), Reason.OUT_OF_RANGE),
        # A bin object where libprio wants a str.
        (codec.pack_str(b"test-batch") + b"\xc4\x01\x01" + _plain_a()[11:], Reason.MALFORMED),
    ],
    ids=["empty", "garbage", "truncated", "batch-id", "other-server", "unknown-server", "data-length",
         "h-length", "data-range", "h-range", "triple-range", "bin-type"],
)
def test_malformed_packets(pair8, plaintext, reason):
    with pytest.raises(PacketError) as info:
        _open(pair8, plaintext)
    assert info.value.reason is reason


def test_noncanonical_but_valid_encodings_are_read_as_libprio_does(pair8):
    """str8 items and leading zero bytes are legal msgpack strs; libprio accepts them."""
    data = [5] * N_DATA
    items = [b"\xd9\x01\x05"] + [b"\xa2\x00\x05"] * (N_DATA - 1)
    body = b"\x98" + b"".join(items) + _elements([0] * N_POINTS)
    packet = _open(pair8, codec.pack_client_packet(b"test-batch", (1, 2, 3), 4, 5, 6, 0, body))
    assert [int.from_bytes(r.tobytes(), "big") for r in packet.data_rows] == data


def test_server_b_seed_length(pair8):
    good = codec.pack_client_packet(b"test-batch", (1, 2, 3), 4, 5, 6, 1, codec.pack_str(bytes(16)))
    assert _open(pair8, good, "B").seed == bytes(16)
    bad = codec.pack_client_packet(b"test-batch", (1, 2, 3), 4, 5, 6, 1, codec.pack_str(bytes(15)))
    with pytest.raises(PacketError) as info:
        _open(pair8, bad, "B")
    assert info.value.reason is Reason.WRONG_LENGTH


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_random_plaintexts_raise_only_packet_errors(pair8, blob):
    try:
        _open(pair8, blob)
    except PacketError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_packets_raise_only_packet_errors(pair8, data):
    plain = bytearray(_plain_a())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(plain) - 1))
        plain[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(plain)))
    try:
        _open(pair8, bytes(plain[:cut]))
    except PacketError:
        pass


def test_serialization_of_elements_is_minimal():
    rows = codec._rows_from_ints([0, 1, 255, 256, MODULUS - 1])
    packed = codec.pack_elements(rows)
    expected = [b"\x00", b"\x01", b"\xff", b"\x01\x00", (MODULUS - 1).to_bytes(11, "big")]
    assert packed == msgpack.packb(expected, use_bin_type=False)


def _outcome(read):
    try:
        return read()
    except PacketError as exc:
        return exc.reason, exc.detail


def _items(values: list[tuple[int, int, int]]) -> bytes:
    """msgpack strings: (value, bytes it takes, header kind 0 fixstr / 1 str8 / 2 bin8)."""
    out = b""
    for value, width, kind in values:
        body = value.to_bytes(max(width, (value.bit_length() + 7) // 8), "big")
        out += [bytes([0xA0 | min(len(body), 31)]), bytes([0xD9, len(body)]), bytes([0xC4, len(body)])][
            kind
        ] + body
    return out


_ITEM = st.tuples(
    st.one_of(st.integers(0, MODULUS - 1), st.integers(MODULUS, 2**88 - 1), st.integers(0, 255)),
    st.integers(0, 13),
    st.sampled_from([0, 0, 0, 1, 2]),
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.lists(_ITEM, max_size=3).map(_items), st.binary(max_size=40)), st.integers(0, 40))
def test_verification_packets_read_as_the_full_reader_reads_them(blob, cut):
    """The fast path for plain short strings gives the reader's values and errors exactly."""
    blob = blob[:cut] if cut < len(blob) else blob

    def reader(count: int):
        read = codec._Reader(blob)
        return tuple(read.element() for _ in range(count))

    assert _outcome(lambda: codec.read_verify1(blob)) == _outcome(lambda: reader(2))
    assert _outcome(lambda: (codec.read_verify2(blob),)) == _outcome(lambda: reader(1))
