"""An id -> (payload, digest) index of verification packets with bounded memory.

verify2 and aggregate join every share with both servers' packets of the
previous stage by id. A dict of all packets grows without bound with the batch
(about 0.9 KB per packet in a stage); PacketIndex keeps the newest entries in a
dict and moves them, in bulk, to a private SQLite database on disk when the
dict is full. Lookups check the dict first, so later duplicates win wherever
the earlier one lives.

The database is SQLite's private temporary database (an empty file name): SQLite
creates it in the temporary folder and unlinks it at once, so it holds no name
other processes could open and it disappears with the process, even one that is
killed.
"""

from __future__ import annotations

import sqlite3
from types import TracebackType

Entry = tuple[str, str | None]

#: Entries kept in memory before spilling; at ~0.4 KB each a few tens of MB.
DEFAULT_MAX_ENTRIES = 50_000
#: Bytes of ids, payloads and digests kept in memory before spilling, so that
#: a few very large payloads cannot exhaust memory under the entry limit.
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
# Rough per-entry cost of the dict slot, tuple and string headers.
_ENTRY_OVERHEAD = 250
# SQLite's page cache for the spilled entries (negative: KiB).
_CACHE_KIB = 16 * 1024


class PacketIndex:
    """id -> (payload, digest or None); later additions of an id replace earlier ones."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be positive")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._recent: dict[str, Entry] = {}
        self._recent_bytes = 0
        self._db: sqlite3.Connection | None = None
        self._spilled = 0  # rows in the database
        self._length: int | None = 0  # cached len(); None when unknown
        self._closed = False

    def add(self, id: str, payload: str, digest: str | None = None) -> None:
        self._check_open()
        if self._length is not None and id not in self._recent:
            # A new id in memory may still be a duplicate of one on disk: count lazily then.
            self._length = self._length + 1 if self._db is None else None
        previous = self._recent.get(id)
        if previous is not None:
            self._recent_bytes -= _size(id, previous)
        entry = (payload, digest)
        self._recent[id] = entry
        self._recent_bytes += _size(id, entry)
        if len(self._recent) >= self._max_entries or self._recent_bytes >= self._max_bytes:
            self._spill()

    def get(self, id: str) -> Entry | None:
        self._check_open()
        entry = self._recent.get(id)
        if entry is not None or self._db is None:
            return entry
        row = self._db.execute("SELECT payload, digest FROM packets WHERE id = ?", (id,)).fetchone()
        return None if row is None else (row[0], row[1])

    def __getitem__(self, id: str) -> Entry:
        entry = self.get(id)
        if entry is None:
            raise KeyError(id)
        return entry

    def __contains__(self, id: object) -> bool:
        return isinstance(id, str) and self.get(id) is not None

    def __len__(self) -> int:
        self._check_open()
        if self._length is None:
            # Only entries in memory that the database does not hold yet are new ids.
            self._length = self._spilled + sum(1 for id in self._recent if not self._in_database(id))
        return self._length

    @property
    def spilled(self) -> bool:
        """Whether some entries live on disk."""
        return self._db is not None

    def close(self) -> None:
        """Frees the memory and deletes the database; the index is unusable afterwards."""
        self._closed = True
        self._recent.clear()
        self._recent_bytes = 0
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> PacketIndex:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _spill(self) -> None:
        db = self._database()
        with db:
            db.executemany(
                "INSERT OR REPLACE INTO packets (id, payload, digest) VALUES (?, ?, ?)",
                ((id, payload, digest) for id, (payload, digest) in self._recent.items()),
            )
        self._spilled = db.execute("SELECT COUNT(*) FROM packets").fetchone()[0]
        self._length = self._spilled
        self._recent.clear()
        self._recent_bytes = 0

    def _database(self) -> sqlite3.Connection:
        if self._db is None:
            # "" is a private temporary database, unlinked by SQLite as soon as it is created.
            db = sqlite3.connect("")
            # Nothing here must survive a crash: no journal, no syncs.
            db.execute("PRAGMA journal_mode = OFF")
            db.execute("PRAGMA synchronous = OFF")
            db.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
            db.execute(
                "CREATE TABLE packets (id TEXT PRIMARY KEY, payload TEXT NOT NULL, digest TEXT) WITHOUT ROWID"
            )
            self._db = db
        return self._db

    def _in_database(self, id: str) -> bool:
        return self._db is not None and self._db.execute(
            "SELECT 1 FROM packets WHERE id = ?", (id,)).fetchone() is not None

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the packet index is closed")


def _size(id: str, entry: Entry) -> int:
    payload, digest = entry
    return _ENTRY_OVERHEAD + len(id) + len(payload) + (len(digest) if digest is not None else 0)
