"""libprio's packet encryption: ephemeral X25519, X9.63 SHA-256 KDF, AES-128-GCM.

Wire form: ephemeral public key (32) || nonce (12) || ciphertext || tag (16).
The associated data is b"PrioPacket" || ephemeral public key || nonce.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import PacketError, Reason
from .keys import KEY_BYTES, public_key_bytes

AES_KEY_BYTES = 16
NONCE_BYTES = 12
TAG_BYTES = 16
OVERHEAD = KEY_BYTES + NONCE_BYTES + TAG_BYTES
_AAD_PREFIX = b"PrioPacket"


def _aes_key(shared_secret: bytes) -> bytes:
    # ANSI X9.63 KDF with SHA-256 and no shared info, as libprio derives its AES-128 key:
    # one hash block, SHA-256(Z || counter 1), is enough for 16 bytes.
    return hashlib.sha256(shared_secret + b"\x00\x00\x00\x01").digest()[:AES_KEY_BYTES]


def encrypt(recipient: X25519PublicKey, plaintext: bytes) -> bytes:
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = public_key_bytes(ephemeral.public_key())
    nonce = os.urandom(NONCE_BYTES)
    key = _aes_key(ephemeral.exchange(recipient))
    sealed = AESGCM(key).encrypt(nonce, plaintext, _AAD_PREFIX + ephemeral_public + nonce)
    return ephemeral_public + nonce + sealed


def decrypt(private_key: X25519PrivateKey, packet: bytes) -> bytes:
    """The plaintext, or PacketError(DECRYPT_FAILED)."""
    if len(packet) < OVERHEAD:
        raise PacketError(
            Reason.DECRYPT_FAILED, f"{len(packet)} bytes is shorter than the {OVERHEAD}-byte envelope"
        )
    ephemeral_public = packet[:KEY_BYTES]
    nonce = packet[KEY_BYTES : KEY_BYTES + NONCE_BYTES]
    try:
        peer = X25519PublicKey.from_public_bytes(ephemeral_public)
        key = _aes_key(private_key.exchange(peer))
        return AESGCM(key).decrypt(
            nonce, packet[KEY_BYTES + NONCE_BYTES :], _AAD_PREFIX + ephemeral_public + nonce
        )
    except InvalidTag:
        raise PacketError(
            Reason.DECRYPT_FAILED, "authentication failed (wrong key or altered bytes)"
        ) from None
    except ValueError:
        raise PacketError(Reason.DECRYPT_FAILED, "unusable ephemeral key") from None
