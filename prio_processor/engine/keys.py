"""Curve25519 key pairs in libprio's hex form (64 hex digits, exported upper-case)."""

from __future__ import annotations

# Raw bytes only: the serialization module (PEM, SSH, ...) costs every command start-up time.
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

KEY_BYTES = 32


class KeyFormatError(ValueError):
    """A key that is not 64 hexadecimal digits. The message never repeats the key."""


def _raw_from_hex(text: str | bytes, what: str) -> bytes:
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise KeyFormatError(f"{what} must be {2 * KEY_BYTES} hexadecimal digits") from None
    text = text.strip()
    if len(text) != 2 * KEY_BYTES:
        raise KeyFormatError(f"{what} must be {2 * KEY_BYTES} hexadecimal digits, got {len(text)} characters")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise KeyFormatError(f"{what} must be {2 * KEY_BYTES} hexadecimal digits") from None


def generate_keypair() -> tuple[X25519PrivateKey, X25519PublicKey]:
    private = X25519PrivateKey.generate()
    return private, private.public_key()


def private_key_from_hex(text: str | bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(_raw_from_hex(text, "a private key"))


def public_key_from_hex(text: str | bytes) -> X25519PublicKey:
    return X25519PublicKey.from_public_bytes(_raw_from_hex(text, "a public key"))


def private_key_to_hex(key: X25519PrivateKey) -> str:
    return key.private_bytes_raw().hex().upper()


def public_key_to_hex(key: X25519PublicKey) -> str:
    return public_key_bytes(key).hex().upper()


def public_key_bytes(key: X25519PublicKey) -> bytes:
    return key.public_bytes_raw()
