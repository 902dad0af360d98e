"""Keys in libprio's hex form and the packet envelope."""

from __future__ import annotations

import pytest

from prio_processor.engine import keys, seal
from prio_processor.engine.errors import PacketError, Reason

from vectors import cases


@pytest.mark.parametrize("case", cases(), ids=lambda c: c.name)
def test_vector_keys_import_and_export(case):
    for server in "AB":
        pair = case.keys(server)
        private = keys.private_key_from_hex(pair["private_key"].lower())
        assert keys.private_key_to_hex(private) == pair["private_key"]
        assert keys.public_key_to_hex(private.public_key()) == pair["public_key"]


@pytest.mark.parametrize("text", ["", "00" * 31, "zz" * 32, "00" * 33, b"\xff" * 64])
def test_bad_key_hex_is_a_clear_error(text):
    with pytest.raises(keys.KeyFormatError) as info:
        keys.public_key_from_hex(text)
    assert "hexadecimal" in str(info.value)


def test_seal_round_trip_and_failures():
    private, public = keys.generate_keypair()
    packet = seal.encrypt(public, b"hello prio")
    assert len(packet) == len(b"hello prio") + seal.OVERHEAD
    assert seal.decrypt(private, packet) == b"hello prio"
    other, _ = keys.generate_keypair()
    for bad, who in [(packet, other), (packet[:-1], private), (packet[:10], private),
                     (packet[:50] + bytes([packet[50] ^ 1]) + packet[51:], private)]:
        with pytest.raises(PacketError) as info:
            seal.decrypt(who, bad)
        assert info.value.reason is Reason.DECRYPT_FAILED


@pytest.mark.parametrize("secret", [bytes(32), b"\xff" * 32, bytes(range(32))])
def test_packet_key_is_the_x963_kdf_of_the_shared_secret(secret):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF

    expected = X963KDF(algorithm=hashes.SHA256(), length=16, sharedinfo=None).derive(secret)
    assert seal._aes_key(secret) == expected
