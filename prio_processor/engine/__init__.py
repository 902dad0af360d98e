"""The Prio v1 engine, wire-compatible with libprio 1.x.

Layers, each usable alone: `field` and `limbs` (arithmetic modulo
p = 2**87 + 2**19 + 1), `poly` (roots of unity, transforms, evaluation at a
point), `prg` (libprio's AES-CTR generator), `keys` and `seal` (X25519 keys,
packet encryption), `codec` (libprio's msgpack wire format), then `client`
and `server`.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import Client, bits_from_uints
    from .codec import Verify2
    from .config import MAX_N_DATA, Config
    from .errors import PacketError, Reason
    from .keys import (
        KeyFormatError,
        generate_keypair,
        private_key_from_hex,
        private_key_to_hex,
        public_key_from_hex,
        public_key_to_hex,
    )
    from .prg import PrgKeying
    from .server import (
        Schedule,
        Server,
        TotalShare,
        Verify1,
        final_totals,
        is_valid,
        server_index,
        uint_totals,
    )

# Loaded on first use: commands that only read configuration (`prio batches`) or a
# small layer (`engine.config`) do not pay for numpy and the whole engine.
_HOMES = {
    "client": ("Client", "bits_from_uints"),
    "codec": ("Verify2",),
    "config": ("MAX_N_DATA", "Config"),
    "errors": ("PacketError", "Reason"),
    "keys": (
        "KeyFormatError",
        "generate_keypair",
        "private_key_from_hex",
        "private_key_to_hex",
        "public_key_from_hex",
        "public_key_to_hex",
    ),
    "prg": ("PrgKeying",),
    "server": (
        "Schedule",
        "Server",
        "TotalShare",
        "Verify1",
        "final_totals",
        "is_valid",
        "server_index",
        "uint_totals",
    ),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)


__all__ = [
    "MAX_N_DATA",
    "Client",
    "Config",
    "KeyFormatError",
    "PacketError",
    "PrgKeying",
    "Reason",
    "Schedule",
    "Server",
    "TotalShare",
    "Verify1",
    "Verify2",
    "bits_from_uints",
    "final_totals",
    "generate_keypair",
    "is_valid",
    "private_key_from_hex",
    "private_key_to_hex",
    "public_key_from_hex",
    "public_key_to_hex",
    "server_index",
    "uint_totals",
]
