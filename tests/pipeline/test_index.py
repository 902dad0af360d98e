"""PacketIndex: a dict's semantics with bounded memory.

Run as a script to measure peak memory by hand:
    .venv/bin/python tests/pipeline/test_index.py index 1000000
prints how far, in KiB, the peak resident set size rose above the resident size
before loading and looking up that many verification packets (`dict` instead of
`index` for the plain dict).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prio_processor.pipeline.index import PacketIndex


def test_empty_index_has_nothing():
    with PacketIndex() as index:
        assert len(index) == 0
        assert index.get("a") is None
        assert "a" not in index
        with pytest.raises(KeyError):
            index["a"]


def test_entries_are_found_in_memory_and_on_disk():
    with PacketIndex(max_entries=3) as index:
        for i in range(10):
            index.add(f"id-{i}", f"payload-{i}", f"digest-{i}" if i % 2 else None)
        assert index.spilled
        assert len(index) == 10
        for i in range(10):
            assert index.get(f"id-{i}") == (f"payload-{i}", f"digest-{i}" if i % 2 else None)
            assert f"id-{i}" in index
        assert index.get("id-10") is None
        assert 7 not in index  # not an id at all


@pytest.mark.parametrize("max_entries", [1, 2, 4, 1000])
def test_later_duplicates_win_wherever_the_earlier_one_lives(max_entries):
    with PacketIndex(max_entries=max_entries) as index:
        index.add("x", "first", "d1")
        index.add("y", "other")
        index.add("z", "other")
        index.add("x", "second", None)
        assert index.get("x") == ("second", None)
        index.add("w", "other")
        index.add("x", "third", "d3")
        assert index.get("x") == ("third", "d3")
        assert len(index) == 4


def test_large_payloads_spill_before_the_entry_limit():
    with PacketIndex(max_entries=1000, max_bytes=10_000) as index:
        index.add("small", "p")
        assert not index.spilled
        index.add("big", "p" * 20_000)
        assert index.spilled
        assert index["big"] == ("p" * 20_000, None)
        assert index["small"] == ("p", None)


def test_a_closed_index_refuses_use():
    index = PacketIndex(max_entries=1)
    index.add("a", "p")
    index.add("b", "q")
    index.close()
    for use in (lambda: index.get("a"), lambda: index.add("c", "r"), lambda: len(index)):
        with pytest.raises(ValueError, match="closed"):
            use()
    index.close()  # closing twice is harmless


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        PacketIndex(max_entries=0)
    with pytest.raises(ValueError, match="positive"):
        PacketIndex(max_bytes=0)


_adds = st.lists(
    st.tuples(st.sampled_from("abcdefgh"), st.text(max_size=5), st.none() | st.text(max_size=5)),
    max_size=40,
)


@settings(max_examples=100, deadline=None)
@given(adds=_adds, max_entries=st.integers(1, 6))
def test_behaves_like_a_dict(adds, max_entries):
    model: dict[str, tuple[str, str | None]] = {}
    with PacketIndex(max_entries=max_entries) as index:
        for i, (id, payload, digest) in enumerate(adds):
            index.add(id, payload, digest)
            model[id] = payload, digest
            if i % 3 == 0:
                assert len(index) == len(model)
        assert len(index) == len(model)
        for id in "abcdefgh":
            assert index.get(id) == model.get(id)
            assert (id in index) == (id in model)


# --- Peak memory, measured in a fresh interpreter -------------------------------------------------

def _entry(i: int) -> tuple[str, str, str]:
    """A verification packet record the size of n_data 1's (uuid id, 32 base64 characters, digest)."""
    digest = hashlib.sha256(i.to_bytes(8, "big")).digest()
    return str(uuid.UUID(bytes=digest[:16])), base64.b64encode(digest[8:32]).decode(), digest[16:].hex()


def _entries(count: int, step: int = 1) -> Iterator[tuple[str, str, str]]:
    return map(_entry, range(0, count, step))


def _reset_peak_resident() -> None:
    """Starts the peak resident size (VmHWM) over from the current one.

    Not getrusage's ru_maxrss: in a process forked from a big one (a pytest worker) and
    exec'ed, that keeps the parent's peak, and it keeps the peak of this process's imports.
    """
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def _status_kib(field: str) -> int:
    """A size from /proc/self/status, in KiB: VmRSS now, or VmHWM its peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


def _measure(kind: str, count: int) -> dict:
    """Loads `count` packets into a PacketIndex or a dict, looks them up, reports memory."""
    _reset_peak_resident()
    before = _status_kib("VmRSS")
    spilled = False
    temp_names: list[str] = []
    if kind == "index":
        with PacketIndex() as index:
            for entry in _entries(count):
                index.add(*entry)
            # Every 7th: lookups all over the database, in less time than all of them.
            assert all(index.get(id) == (payload, digest) for id, payload, digest in _entries(count, 7))
            assert len(index) == count
            spilled = index.spilled
            temp = os.environ.get("SQLITE_TMPDIR")
            temp_names = sorted(os.listdir(temp)) if temp else []
    else:
        table: dict[str, tuple[str, str]] = {}
        for id, payload, digest in _entries(count):
            table[id] = payload, digest
        assert all(table[id] == (payload, digest) for id, payload, digest in _entries(count, 7))
    after = _status_kib("VmHWM")
    return {"growth_kib": after - before, "spilled": spilled, "temp_names": temp_names}


def _measure_in_subprocess(kind: str, count: int, temp: Path) -> dict:
    env = {**os.environ, "SQLITE_TMPDIR": str(temp)}
    result = subprocess.run([sys.executable, __file__, kind, str(count)], env=env,
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


@pytest.mark.slow
def test_memory_stays_bounded_where_a_dict_grows(tmp_path):
    count = 250_000
    indexed = _measure_in_subprocess("index", count, tmp_path)
    plain = _measure_in_subprocess("dict", count, tmp_path)
    assert indexed["spilled"]
    # The database file has no name while it is in use, and nothing is left afterwards.
    assert indexed["temp_names"] == []
    assert list(tmp_path.iterdir()) == []
    # A dict of 250,000 packets takes about 100 MB; the index keeps DEFAULT_MAX_ENTRIES
    # (about 20 MB) plus SQLite's 16 MB page cache.
    assert plain["growth_kib"] > 80_000
    assert indexed["growth_kib"] < 60_000
    assert indexed["growth_kib"] < plain["growth_kib"] / 2


if __name__ == "__main__":
    print(json.dumps(_measure(sys.argv[1], int(sys.argv[2]))))
