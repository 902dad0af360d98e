"""verify1's cache on Spark: what verify2 and aggregate need of each share, so that they do not
read, decrypt and decode the shares again (as `prio --cache`, pipeline/cache.py).

The cache is a folder of Parquet files of small rows, which Spark joins with the
verification packets as it would join the shares:

* a "row" per input record (in verify1's reading of --input): its id, the input
  position that orders repeated ids, and a msgpack body with what the later
  stages decide with (reject reasons, share digest, other fields) and what
  verify2 computes with (Beaver triple share, evaluation point, h at it);
* a "sum" per chunk verify1 ran: the sum of the data shares of the packets it
  evaluated. aggregate adds up these sums, then takes back out the few shares it
  does not accept and adds those it accepts that verify1 did not evaluate,
  opening just those shares again from --input.

`_manifest.json`, written last by the driver, ties the rows to the exact --input
files (as `prio`'s cache does) and this server's settings.

Nothing in it is taken on faith: it is authenticated with the key `prio`'s cache
uses (only this server can derive it: pipeline.cache.cache_key). Every row
carries a MAC over the manifest's digest of the inputs, its unique sequence
number, its id, position and body; the manifest's MAC covers the number of rows
and the sum, modulo 2^256, of a secret value per sequence number (HMAC of that
number), so that rows dropped, repeated or taken from another cache are noticed
without the stage ever holding all sequence numbers. A row or manifest that does
not authenticate is treated as a damaged cache: the stage reads the shares
instead, with the same outputs.

The cache holds this server's shares of client data in clear: it belongs in the
server's private storage only, never in a bucket the partner reads.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import msgpack

from ..engine.server import Schedule, Server
from ..pipeline.cache import MANIFEST, cache_key, check_manifest, inputs_digest, manifest, manifest_mac
from ..storage import Location

FORMAT = "spark/1"
#: The Parquet columns of a cache row.
COLUMNS = ("kind", "key", "file", "block", "row", "seq", "body", "mac")
DDL = ("kind string, key string, file string, block long, row long, seq long, body binary, "
       "mac binary")
_MODULUS = 1 << 256


@dataclass(frozen=True)
class Keyed:
    """What a task needs to make or check cache rows: the key and the inputs' digest."""

    key: bytes
    inputs_digest: str

    def __repr__(self) -> str:  # the key stays out of logs and task descriptions
        return f"Keyed(inputs_digest={self.inputs_digest!r})"

    def mac(self, kind: str, key: str | None, file: str | None, block: int | None, row: int | None,
            seq: int, body: bytes) -> bytes:
        # msgpack of a list is self-delimiting: no two rows encode alike.
        bound = msgpack.packb(["row", self.inputs_digest, kind, key, file, block, row, seq])
        return hmac.new(self.key, bound + body, hashlib.sha256).digest()

    def position(self, seq: int) -> int:
        """The secret value of a sequence number, summed over all rows (see the module's description)."""
        digest = hmac.new(self.key, b"position" + seq.to_bytes(8, "big"), hashlib.sha256).digest()
        return int.from_bytes(digest, "big")


class Seen:
    """Rows a task made or checked: their number and the sum of their sequence numbers' values."""

    def __init__(self, keyed: Keyed) -> None:
        self.keyed = keyed
        self.count = 0
        self.total = 0

    def add(self, seq: int) -> None:
        self.count += 1
        self.total = (self.total + self.keyed.position(seq)) % _MODULUS

    def row(self) -> dict[str, Any]:
        """A result row for the driver (kind "positions")."""
        return {"kind": "positions", "count": self.count, "payload": f"{self.total:064x}"}


def add_positions(payloads: list[tuple[int, str]]) -> tuple[int, str]:
    """The count and sum of every task's "positions" row."""
    count, total = 0, 0
    for n, payload in payloads:
        count += n
        total = (total + int(payload, 16)) % _MODULUS
    return count, f"{total:064x}"


def keyed(server: Server, parts: list[Location]) -> Keyed:
    inputs = [{"uri": part.uri, "version": part.version()} for part in parts]
    return Keyed(cache_key(server), inputs_digest(inputs))


def write_manifest(folder: Location, server: Server, parts: list[Location], rows: int, positions: str,
                   repeated: bool) -> None:
    """The manifest, written once the rows are in place: it vouches for exactly those rows."""
    found = manifest(server, Schedule.FIXED, parts)
    found.update(format=FORMAT, rows=rows, positions=positions, repeated=repeated)
    found["mac"] = manifest_mac(cache_key(server), found)
    folder.join(MANIFEST).write_bytes(json.dumps(found, indent=1).encode())


def forget(folder: Location) -> None:
    """An earlier manifest must not vouch for rows this run replaces: it goes first."""
    folder.join(MANIFEST).delete()


@dataclass(frozen=True)
class Found:
    """A cache whose manifest matches this stage's inputs and settings."""

    keyed: Keyed
    rows: int
    positions: str
    repeated: bool  # some id occurs more than once in --input


def open_manifest(folder: Location, parts: list[Location], server: Server) -> tuple[Found | None, str]:
    """The cache verify1 made from exactly `parts` with this server's settings, or (None, why not)."""
    found, key, why_not = check_manifest(folder, parts, server, FORMAT, Schedule.FIXED)
    if found is None:
        return None, why_not
    rows, positions, repeated = found.get("rows"), found.get("positions"), found.get("repeated")
    if not (type(rows) is int and isinstance(positions, str) and isinstance(repeated, bool)):
        return None, "its manifest does not count the rows"
    return Found(Keyed(key, inputs_digest(found["inputs"])), rows, positions, repeated), ""
