"""libprio's msgpack wire format for every packet type, byte for byte.

Field elements travel as msgpack *str* objects holding the minimal big-endian
bytes of the value (zero is one zero byte). Objects are written one after
another with no enclosing array. Element arrays are handled as (count, 11)
uint8 rows of big-endian bytes so that whole batches convert at once.
"""

from __future__ import annotations

import builtins
import re
import struct
from dataclasses import dataclass

import msgpack
import numpy as np

from . import field
from .errors import PacketError, Reason
from .field import ELEMENT_BYTES, MODULUS
from .limbs import below_modulus_bytes11
from .prg import SEED_BYTES

SERVER_A = 0
SERVER_B = 1


# --- writing ---------------------------------------------------------------

def _str_header(length: int) -> bytes:
    if length < 32:
        return bytes([0xA0 | length])
    if length < 1 << 8:
        return b"\xd9" + struct.pack(">B", length)
    if length < 1 << 16:
        return b"\xda" + struct.pack(">H", length)
    return b"\xdb" + struct.pack(">I", length)


def _array_header(count: int) -> bytes:
    if count < 16:
        return bytes([0x90 | count])
    if count < 1 << 16:
        return b"\xdc" + struct.pack(">H", count)
    return b"\xdd" + struct.pack(">I", count)


def _uint(value: int) -> bytes:
    if value < 128:
        return bytes([value])
    return msgpack.packb(value)


def pack_str(data: bytes) -> bytes:
    return _str_header(len(data)) + data


def pack_element(value: int) -> bytes:
    return pack_str(field.to_bytes(value))


def pack_elements(rows: np.ndarray) -> bytes:
    """An msgpack array of elements from (count, 11) big-endian rows of values < p."""
    count = len(rows)
    framed = np.empty((count, ELEMENT_BYTES + 1), dtype=np.uint8)
    framed[:, 1:] = rows
    nonzero = rows != 0
    leading = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), ELEMENT_BYTES - 1)
    leading = np.minimum(leading, ELEMENT_BYTES - 1)
    framed[:, 0] = 0xA0 | (ELEMENT_BYTES - leading)
    keep = np.arange(ELEMENT_BYTES + 1)[None, :] > leading[:, None]
    keep[:, 0] = True
    return _array_header(count) + framed[keep].tobytes()


def pack_client_packet(
    batch_id: bytes,
    triple: tuple[int, int, int],
    f0: int,
    g0: int,
    h0: int,
    server: int,
    body: bytes,
) -> bytes:
    """A client packet: `body` is the packed arrays (server A) or packed seed (server B)."""
    head = [pack_str(batch_id)] + [pack_element(v) for v in (*triple, f0, g0, h0)]
    return b"".join(head) + _uint(server) + body


def pack_verify1(d: int, e: int) -> bytes:
    return pack_element(d) + pack_element(e)


def pack_verify2(out: int) -> bytes:
    return pack_element(out)


def pack_total_share(server: int, rows: np.ndarray) -> bytes:
    return _uint(server) + pack_elements(rows)


# --- reading ---------------------------------------------------------------

class _Reader:
    """Reads the msgpack subset libprio writes, with libprio's type rules."""

    def __init__(self, data: bytes, position: int = 0) -> None:
        self.data = data
        self.position = position

    def _take(self, count: int) -> bytes:
        end = self.position + count
        if end > len(self.data):
            raise PacketError(Reason.MALFORMED, "truncated packet")
        chunk = self.data[self.position:end]
        self.position = end
        return chunk

    def _byte(self) -> int:
        return self._take(1)[0]

    def str(self) -> bytes:
        tag = self._byte()
        if 0xA0 <= tag <= 0xBF:
            length = tag & 0x1F
        elif tag == 0xD9:
            length = self._byte()
        elif tag == 0xDA:
            length = struct.unpack(">H", self._take(2))[0]
        elif tag == 0xDB:
            length = struct.unpack(">I", self._take(4))[0]
        else:
            raise PacketError(Reason.MALFORMED, f"expected a string, found msgpack type 0x{tag:02x}")
        return self._take(length)

    def uint(self) -> int:
        tag = self._byte()
        if tag < 0x80:
            return tag
        sizes = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
        if tag not in sizes:
            raise PacketError(
                Reason.MALFORMED, f"expected an unsigned integer, found msgpack type 0x{tag:02x}"
            )
        return int.from_bytes(self._take(sizes[tag]), "big")

    def array_header(self) -> int:
        tag = self._byte()
        if 0x90 <= tag <= 0x9F:
            return tag & 0x0F
        if tag == 0xDC:
            return struct.unpack(">H", self._take(2))[0]
        if tag == 0xDD:
            return struct.unpack(">I", self._take(4))[0]
        raise PacketError(Reason.MALFORMED, f"expected an array, found msgpack type 0x{tag:02x}")

    def skip_array(self) -> None:
        unpacker = msgpack.Unpacker(raw=True, max_buffer_size=max(len(self.data), 1024))
        unpacker.feed(memoryview(self.data)[self.position:])
        try:
            unpacker.skip()
        except Exception:
            raise PacketError(Reason.MALFORMED, "truncated packet") from None
        self.position += unpacker.tell()

    def element(self) -> int:
        value = int.from_bytes(self.str(), "big")
        if value >= MODULUS:
            raise PacketError(Reason.OUT_OF_RANGE, "field element is not below the modulus")
        return value

    # `builtins.str`: inside this class `str` names the method above.
    def elements(self, expected: int, what: builtins.str) -> np.ndarray:
        """An array of exactly `expected` elements as (expected, 11) rows."""
        return self.items(expected, what)[:, 1:]

    def items(self, expected: int, what: builtins.str) -> np.ndarray:
        """An array of exactly `expected` elements as (expected, 12) items: a long string's
        header byte, then the 11 big-endian bytes of the value (see `limbs.from_items12`)."""
        count = self.array_header()
        if count != expected:
            raise PacketError(Reason.WRONG_LENGTH, f"{what} has {count} elements, expected {expected}")
        fast = _fast_elements(self.data, self.position, count)
        if fast is None:
            values = [self.element() for _ in range(count)]
            return _items_from_ints(values)
        items, self.position = fast
        if not _below_modulus(items):
            raise PacketError(Reason.OUT_OF_RANGE, f"{what} holds an element not below the modulus")
        return items


def _below_modulus(items: np.ndarray) -> bool:
    """All items < p. Only a top byte of 0x80 or more can reach p, so check those items exactly."""
    high = np.flatnonzero(items[:, 1] >= MODULUS >> 80)
    return not len(high) or bool(below_modulus_bytes11(items[high, 1:]).all())


def _items_from_ints(values: list[int]) -> np.ndarray:
    buf = b"".join(_LONG_HEADER_BYTE + v.to_bytes(ELEMENT_BYTES, "big") for v in values)
    return np.frombuffer(buf, dtype=np.uint8).reshape(len(values), _ITEM_BYTES).copy()


def _rows_from_ints(values: list[int]) -> np.ndarray:
    return _items_from_ints(values)[:, 1:]


_LONG_HEADER = 0xA0 | ELEMENT_BYTES  # fixstr of 11 bytes: most elements
_ITEM_BYTES = ELEMENT_BYTES + 1


_RUN_WINDOW = 256
_NOT_LONG_HEADER = re.compile(b"[^" + re.escape(bytes([_LONG_HEADER])) + b"]")
_LONG_HEADER_BYTE = bytes([_LONG_HEADER])


def _fast_elements(data: bytes, start: int, count: int) -> tuple[np.ndarray, int] | None:
    """(count, 12) items of `count` fixstr elements starting at `start`, and the end offset.

    Elements are almost all 11 bytes (values below 2**80 are rare): runs of 12-byte items are
    found by searching their headers (taken as one strided byte string) for the first that
    is not a long item's. Each short item is padded to 12 bytes, so that the items joined are
    one (count, 12) array (whose header column is not part of the values). None when an item is not a fixstr
    of at most 11 bytes; the caller then reads the items with full type checks.
    """
    size = len(data)
    view = memoryview(data)
    pieces: list[bytes | memoryview] = []
    position, done = start, 0
    while done < count:
        fit = max(0, min(count - done, (size - position) // _ITEM_BYTES))
        run = 0
        while run < fit:  # headers a window at a time: a typical run is about 128 items
            begin = position + _ITEM_BYTES * run
            window = min(fit - run, _RUN_WINDOW)
            found = _NOT_LONG_HEADER.search(data[begin:begin + _ITEM_BYTES * window:_ITEM_BYTES])
            if found is not None:
                run += found.start()
                break
            run += window
        if run:
            pieces.append(view[position:position + _ITEM_BYTES * run])
            position += _ITEM_BYTES * run
            done += run
            if done == count:
                break
        # A short item (or something else) at `position`.
        if position >= size:
            return None
        tag = data[position]
        length = tag & 0x1F
        if not 0xA0 <= tag < _LONG_HEADER or position + 1 + length > size:
            return None
        value = data[position + 1:position + 1 + length]
        pieces.append(_LONG_HEADER_BYTE + bytes(ELEMENT_BYTES - length) + value)
        position += 1 + length
        done += 1
    items = np.frombuffer(b"".join(pieces), dtype=np.uint8).reshape(count, _ITEM_BYTES)
    return items, position


@dataclass
class ClientPacket:
    """A decoded client packet for one server."""

    triple: tuple[int, int, int]
    f0: int
    g0: int
    h0: int
    data_items: np.ndarray | None = None  # server A: (n_data, 12), see _Reader.items
    h_items: np.ndarray | None = None  # server A: (N, 12)
    seed: bytes | None = None  # server B

    @property
    def data_rows(self) -> np.ndarray | None:
        """Server A's data shares as (n_data, 11) big-endian rows."""
        return None if self.data_items is None else self.data_items[:, 1:]

    @property
    def h_rows(self) -> np.ndarray | None:
        """Server A's h points as (N, 11) big-endian rows."""
        return None if self.h_items is None else self.h_items[:, 1:]


#: The parts of server A's packet: data shares and h points.
BOTH_ARRAYS = frozenset({"data", "h"})


def read_client_packet(
    plaintext: bytes,
    batch_id: bytes,
    server: int,
    n_data: int,
    n_points: int,
    arrays: frozenset[str] = BOTH_ARRAYS,
) -> ClientPacket:
    """Decode and check a decrypted client packet as libprio's reader does.

    `arrays` names the element arrays of server A's packet to decode; a stage
    that needs only one skips the other (after verify1 has checked it whole).
    """
    reader = _Reader(plaintext)
    if reader.str() != batch_id:
        raise PacketError(Reason.WRONG_BATCH_ID, "packet belongs to another batch")
    a, b, c, f0, g0, h0 = (reader.element() for _ in range(6))
    for_server = reader.uint()
    if for_server not in (SERVER_A, SERVER_B):
        raise PacketError(Reason.MALFORMED, "unknown server id in packet")
    if for_server != server:
        raise PacketError(Reason.WRONG_SERVER, "packet is for the other server")
    packet = ClientPacket((a, b, c), f0, g0, h0)
    if server == SERVER_A:
        if "data" in arrays:
            packet.data_items = reader.items(n_data, "data shares")
        elif "h" in arrays:
            reader.skip_array()
        if "h" in arrays:
            packet.h_items = reader.items(n_points, "h points")
    else:
        seed = reader.str()
        if len(seed) != SEED_BYTES:
            raise PacketError(Reason.WRONG_LENGTH, f"seed has {len(seed)} bytes, expected {SEED_BYTES}")
        packet.seed = seed
    return packet


def _short_elements(data: bytes, count: int) -> list[int] | None:
    """The first `count` elements of `data` when each is a fixstr below the modulus (nearly
    every verification packet), else None: the reader then decides, with its checks."""
    values, position, size = [], 0, len(data)
    for _ in range(count):
        if position >= size:
            return None
        tag = data[position]
        end = position + 1 + (tag & 0x1F)
        if not 0xA0 <= tag <= _LONG_HEADER or end > size:
            return None
        value = int.from_bytes(data[position + 1:end], "big")
        if value >= MODULUS:
            return None
        values.append(value)
        position = end
    return values


def read_verify1(data: bytes) -> tuple[int, int]:
    fast = _short_elements(data, 2)
    if fast is not None:
        return fast[0], fast[1]
    reader = _Reader(data)
    return reader.element(), reader.element()


def read_verify2(data: bytes) -> int:
    fast = _short_elements(data, 1)
    if fast is not None:
        return fast[0]
    return _Reader(data).element()


@dataclass(frozen=True)
class Verify1:
    """A server's verify1 message: its shares of d = f(r) - a and e = g(r) - b."""

    d: int
    e: int

    def to_bytes(self) -> bytes:
        return pack_verify1(self.d, self.e)

    @classmethod
    def from_bytes(cls, data: bytes) -> Verify1:
        return cls(*read_verify1(data))


@dataclass(frozen=True)
class Verify2:
    """A server's verify2 message: its share of the proof output, zero when summed if valid."""

    out: int

    def to_bytes(self) -> bytes:
        return pack_verify2(self.out)

    @classmethod
    def from_bytes(cls, data: bytes) -> Verify2:
        return cls(read_verify2(data))


def read_total_share(data: bytes, n_data: int) -> tuple[int, np.ndarray]:
    """(server index, (n_data, 11) rows) of a total share."""
    reader = _Reader(data)
    server = reader.uint()
    if server not in (SERVER_A, SERVER_B):
        raise PacketError(Reason.MALFORMED, "unknown server id in total share")
    return server, reader.elements(n_data, "total share")
