"""Conditional writes and the run lock, on local folders and on a GCS API server (real client)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable

import pytest

from prio_processor.storage import StorageError, location
from prio_processor.storage.locations import Location
from prio_processor.storage.lock import Holder, LockHeld, LockLost, RunLock, check_conditional_writes

from tests_support import VENV_BIN


@pytest.fixture(params=["local", "gs", "s3"])
def place(request, tmp_path) -> Callable[[str], Location]:
    """A maker of fresh locations in a local folder, a bucket of the GCS API server or one of an
    S3 API server (If-None-Match / If-Match)."""
    if request.param == "local":
        return lambda name: location(tmp_path / uuid.uuid4().hex / name)
    if request.param == "s3":
        prefix = request.getfixturevalue("s3")(a_private=("a", "admin"))
        return lambda name: location(f"s3://a-private/{prefix}/{uuid.uuid4().hex}/{name}")
    bucket = request.getfixturevalue("gcs")()
    return lambda name: location(f"gs://{bucket}/{uuid.uuid4().hex}/{name}")


def test_conditional_writes(place):
    lock = place("_lock")
    assert lock.read_generation() is None
    first = lock.create_if_absent(b"one")
    assert first is not None
    assert lock.create_if_absent(b"two") is None
    assert lock.read_generation() == (b"one", first)
    second = lock.replace_if_generation(b"three", first)
    assert second is not None and second != first
    assert lock.replace_if_generation(b"four", first) is None
    assert lock.delete_if_generation(first) is False
    assert lock.read_generation() == (b"three", second)
    assert lock.delete_if_generation(second) is True
    assert lock.read_generation() is None
    assert lock.replace_if_generation(b"five", second) is None
    check_conditional_writes(place("_probe"))


def test_only_one_of_many_creates_wins(place):
    lock = place("_lock")
    won: list[str] = []

    def create(k: int) -> None:
        if lock.create_if_absent(f"run {k}".encode()) is not None:
            won.append(f"run {k}")

    threads = [threading.Thread(target=create, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1
    assert lock.read_generation()[0] == won[0].encode()


def test_a_store_that_ignores_preconditions_cannot_hold_a_lock(plain_gcs_emulator, monkeypatch):
    from google.cloud import storage

    from prio_processor.storage import locations

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", plain_gcs_emulator)
    locations._gcs_client.cache_clear()
    bucket = f"plain-{uuid.uuid4().hex[:12]}"
    storage.Client().create_bucket(bucket)
    try:
        with pytest.raises(StorageError, match="does not enforce conditional writes"):
            check_conditional_writes(location(f"gs://{bucket}/d/_probe"))
        result = subprocess.run(
            [
                str(VENV_BIN / "prio"),
                "bucket",
                "lock",
                f"gs://{bucket}/d/_process.lock",
                "--owner",
                "process A",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2
        [line] = result.stderr.splitlines()
        assert (
            f"gs://{bucket}/d/_process.lock.probe-" in line and "does not enforce conditional writes" in line
        )
        assert result.stdout == ""
    finally:
        locations._gcs_client.cache_clear()


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_the_run_lock(place):
    where = place("_process.lock")
    clock = Clock()
    first = RunLock(where, "process A", ttl=60, pid=101, clock=clock)
    assert first.take() is None
    holder = Holder.from_bytes(where.read_generation()[0])
    assert holder is not None and (holder.owner, holder.pid) == ("process A", 101)
    second = RunLock(where, "process A", ttl=60, pid=202, clock=clock)
    with pytest.raises(LockHeld, match=r"is held by process A \(host .*, pid 101, started .*, expires "):
        second.take()
    clock.now += 30
    first.renew()  # pushes the expiry on: still held after the first ttl
    clock.now += 45
    with pytest.raises(LockHeld, match="pid 101"):
        second.take()
    clock.now += 16  # expired: the first run stopped renewing (it was killed)
    warning = second.take()
    assert warning is not None and "took over the expired lock" in warning and "pid 101" in warning
    with pytest.raises(LockLost, match=r"now held by process A .*pid 202"):
        first.renew()
    assert first.release() is False  # not its lock any more: left alone
    now_held = Holder.from_bytes(where.read_generation()[0])
    assert now_held is not None and now_held.pid == 202
    assert second.release() is True
    assert where.read_generation() is None


def test_an_expired_lock_goes_to_one_run_only(place):
    """Two runs find the same expired lock: the replace at the generation both read lets one through."""
    where = place("_process.lock")
    clock = Clock()
    RunLock(where, "process A", ttl=5, pid=1, clock=clock).take()
    clock.now += 10
    _, generation = where.read_generation()
    contenders = [RunLock(where, "process A", ttl=5, pid=pid, clock=clock) for pid in (2, 3)]
    assert where.replace_if_generation(contenders[0]._ours().to_bytes(), generation) is not None
    assert where.replace_if_generation(contenders[1]._ours().to_bytes(), generation) is None
    with pytest.raises(LockHeld, match="pid 2"):
        contenders[1].take()


def test_an_unreadable_lock_is_not_taken(place):
    where = place("_process.lock")
    where.create_if_absent(b"{not json")
    with pytest.raises(LockHeld, match="holds no readable lock: delete it if no run is going on"):
        RunLock(where, "process A", ttl=5).take()


@pytest.mark.slow
def test_bucket_lock_holds_renews_and_releases(tmp_path):
    where = tmp_path / "d" / "_process.lock"
    prio = str(VENV_BIN / "prio")
    holder = subprocess.Popen(
        [prio, "bucket", "lock", str(where), "--owner", "process A", "--ttl", "3"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline() == f"locked {where}\n"
        expires = json.loads(where.read_text())["expires"]
        second = subprocess.run(
            [prio, "bucket", "lock", str(where), "--owner", "process A"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        assert second.returncode == 2
        assert second.stderr.startswith("Error: process A: another run is going on: ")
        assert f"pid {os.getpid()}" in second.stderr  # the run that holds it: the holder's parent
        deadline = time.monotonic() + 60
        while json.loads(where.read_text())["expires"] == expires:  # renewed every second (a third of 3 s)
            assert time.monotonic() < deadline
            time.sleep(0.2)
        holder.stdin.close()  # the run ended: the lock goes
        assert holder.wait(60) == 0
        assert not where.exists()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
