"""One run at a time: a lock object that only one process can create, renewed while it runs.

The lock is a small JSON object {owner, host, pid, started, expires} written with the
store's create-if-absent (see `Location.create_if_absent`), so of two runs that start
together exactly one gets it. The holder renews it (a replace at the generation it last
wrote) well before `expires`; a run that finds the lock expired (its holder was killed)
takes it over, again with a replace at the generation it read, so of two runs taking
over the same expired lock only one succeeds. A holder whose renewal is refused has lost
the lock and must stop.

All of this holds only if the store enforces the conditions: `check_conditional_writes`
tries them first and refuses a store that would let a second create succeed.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from .locations import Location, StorageError, location


class LockHeld(Exception):
    """Another run holds the lock (the message names it)."""


class LockLost(Exception):
    """The lock was taken by another run (this one was paused past its expiry, say)."""


def _timestamp(seconds: float, precise: bool = False) -> str:
    pattern = "%Y-%m-%dT%H:%M:%S.%fZ" if precise else "%Y-%m-%dT%H:%M:%SZ"
    return datetime.fromtimestamp(seconds, UTC).strftime(pattern)


def _seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, and until when."""

    owner: str
    host: str
    pid: int
    started: str
    expires: str

    def describe(self) -> str:
        when = f"started {self.started}, expires {self.expires}"
        return f"{self.owner} (host {self.host}, pid {self.pid}, {when})"

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Holder | None:
        """The holder a lock object names, or None if it is not one."""
        try:
            found = json.loads(data)
            holder = cls(**found)
            _seconds(holder.expires)
        except (ValueError, TypeError):
            return None
        if not isinstance(holder.pid, int) or not all(
            isinstance(v, str) for v in (holder.owner, holder.host, holder.started, holder.expires)
        ):
            return None
        return holder


def check_conditional_writes(probe: Location) -> None:
    """Raise StorageError unless the store of `probe` (an unused name) refuses a second
    create-if-absent, and a replace and a delete at a generation that is no longer current."""
    refuses = f"{probe.uri}'s store does not enforce conditional writes"
    first = probe.create_if_absent(b"probe")
    if first is None:
        raise StorageError(f"{refuses}: {probe.uri} exists already")
    latest = first
    try:
        if probe.create_if_absent(b"again") is not None:
            raise StorageError(f"{refuses} (a second create-if-absent succeeded): it cannot hold a lock")
        second = probe.replace_if_generation(b"replaced", first)
        if second is None:
            raise StorageError(f"{refuses} (a replace at the current generation was refused)")
        latest = second
        if probe.replace_if_generation(b"stale", first) is not None:
            raise StorageError(f"{refuses} (a replace at an old generation succeeded): it cannot hold a lock")
        if probe.delete_if_generation(first):
            raise StorageError(f"{refuses} (a delete at an old generation succeeded): it cannot hold a lock")
    finally:
        if not probe.delete_if_generation(latest):
            probe.delete()


class RunLock:
    """The lock object at `where`, taken for `owner` for `ttl` seconds at a time."""

    def __init__(
        self,
        where: Location,
        owner: str,
        ttl: float,
        pid: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.where = where
        self.ttl = ttl
        self._clock = clock
        pid = os.getpid() if pid is None else pid
        # To the microsecond: what tells this run's lock from another's of the same process.
        self._holder = Holder(owner, socket.gethostname(), pid, _timestamp(clock(), precise=True), "")
        self.generation: str | None = None

    def check_store(self) -> None:
        """Raise StorageError unless the lock's store enforces conditional writes, probed with
        an unused name beside the lock (in the same bucket and folder)."""
        parent, _, _ = self.where.uri.rstrip("/").rpartition("/")
        probe = f"{self.where.name}.probe-{uuid.uuid4().hex[:12]}"
        check_conditional_writes(location(f"{parent}/{probe}" if parent else probe))

    def _ours(self) -> Holder:
        expires = _timestamp(self._clock() + self.ttl)
        return Holder(self._holder.owner, self._holder.host, self._holder.pid, self._holder.started, expires)

    def _is_ours(self, holder: Holder | None) -> bool:
        mine = self._holder
        return holder is not None and (holder.owner, holder.host, holder.pid, holder.started) == (
            mine.owner,
            mine.host,
            mine.pid,
            mine.started,
        )

    def take(self) -> str | None:
        """Take the lock: None, or a warning when it took over an expired one. Raises LockHeld."""
        for _attempt in range(5):
            ours = self._ours()
            self.generation = self.where.create_if_absent(ours.to_bytes())
            if self.generation is not None:
                return None
            found = self.where.read_generation()
            if found is None:  # released in the meantime: try again
                continue
            data, generation = found
            holder = Holder.from_bytes(data)
            if self._is_ours(holder):  # our create went through, and only its answer was lost
                self.generation = generation
                return None
            if holder is None:
                raise LockHeld(f"{self.where.uri} holds no readable lock: delete it if no run is going on")
            if _seconds(holder.expires) > self._clock():
                raise LockHeld(f"{self.where.uri} is held by {holder.describe()}")
            self.generation = self.where.replace_if_generation(ours.to_bytes(), generation)
            if self.generation is not None:
                return f"took over the expired lock {self.where.uri} of {holder.describe()}"
        raise LockHeld(f"{self.where.uri} keeps changing hands: another run is taking it")

    def renew(self) -> None:
        """Push the expiry `ttl` seconds on. Raises LockLost if another run took the lock."""
        if self.generation is None:
            raise LockLost(f"{self.where.uri} is not held")
        renewed = self.where.replace_if_generation(self._ours().to_bytes(), self.generation)
        if renewed is None:
            found = self.where.read_generation()
            holder = None if found is None else Holder.from_bytes(found[0])
            now = "nobody" if holder is None else holder.describe()
            self.generation = None
            raise LockLost(f"lost the lock {self.where.uri}: it is now held by {now}")
        self.generation = renewed

    def release(self) -> bool:
        """Delete the lock if it is still ours; whether it was."""
        if self.generation is None:
            return False
        generation, self.generation = self.generation, None
        return self.where.delete_if_generation(generation)
