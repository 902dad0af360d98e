"""Faults across hosts: server A, server B and the admin as separate compose projects sharing
only the storage host's network (`scripts/deploy-integrate up`), with a server killed, cut
off or restarted, or the storage restarted, in the middle of a day.

Each test asserts what was published (`prio integration check` against what the admin planted)
and that nothing wrong was published. Days are small (one batch of 10 or 400 clients) and the
lock's and the waits' settings short, so that the four take a few minutes; every wait follows
observed progress (a marker, a lock object, a container's log) under a generous bound.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "deploy-integrate"
ONE_BATCH = [{"batch_id": "test-0", "n_data": 10}]
#: Longest a container may go without printing a line (a loaded 2-core machine is slow).
QUIET_S = 240
#: Longest any one wait of these tests may take, however busy the containers are.
BOUND_S = 900
#: Seconds for one request to the storage host (reached from here at its address on the network).
HTTP_TIMEOUT_S = 5

T = TypeVar("T")


def _docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {result.stderr}")
    return result.stdout


def _expires(lock: dict[str, Any]) -> float:
    return datetime.fromisoformat(lock["expires"].replace("Z", "+00:00")).timestamp()


def _generate(n_rows: int, n_partitions: int) -> list[str]:
    """The admin compose project's arguments that plant test shares for both servers (bin/generate)."""
    return ["run", "--rm", "-T", "generate", "bin/generate", "--n-rows", str(n_rows), "--n-drop-batch", "0",
            "--n-partitions", str(n_partitions)]


class Day:
    """One date on the storage project and three role projects set up in `folder`."""

    def __init__(self, folder: Path, name: str, data_config: list[dict[str, Any]], **settings: str) -> None:
        self.folder = folder
        config = folder.parent / "data-config.json"
        config.write_text(json.dumps(data_config))
        env = {
            **os.environ,
            "COMPOSE_PROJECT_NAME": f"prio-fault-{name}-{os.getpid()}",
            "DATA_CONFIG": str(config),
            **settings,
        }
        result = subprocess.run(
            [str(SCRIPT), "up", str(folder)], env=env, capture_output=True, text=True, timeout=BOUND_S
        )
        assert result.returncode == 0, result.stderr
        state = dict(line.split("=", 1) for line in (folder / "deploy.env").read_text().split())
        self.prefix, self.network, self.storage = state["prefix"], state["network"], state["storage"]
        self.key = {s: (folder / f"public-key-{s.lower()}").read_text().strip() for s in "AB"}
        admin_env = (folder / "admin" / ".env").read_text()
        date = re.search(r"^SUBMISSION_DATE=(.+)$", admin_env, re.M)
        assert date is not None
        self.date = date.group(1)
        self._url = ""

    # ------------------------------------------------------------ roles

    def compose(self, role: str, *args: str, timeout: float = BOUND_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.folder / role / "compose"), *args], capture_output=True, text=True, timeout=timeout
        )

    def set(self, server: str, **settings: str) -> None:
        """Change settings in server's .env (before its container is created)."""
        env = self.folder / f"server-{server.lower()}" / ".env"
        lines = [line for line in env.read_text().splitlines() if line.split("=", 1)[0] not in settings]
        env.write_text("\n".join([*lines, *(f"{k}={v}" for k, v in settings.items())]) + "\n")

    def plant(self, n_rows: int, n_partitions: int = 1) -> subprocess.CompletedProcess[str]:
        """The admin's test shares for both servers (bin/generate)."""
        return self.compose("admin", *_generate(n_rows, n_partitions))

    def start(self, server: str) -> str:
        """Start server's bin/process in its project's container; the container's id."""
        role = f"server-{server.lower()}"
        result = self.compose(role, "up", "--detach", "--no-deps", "process")
        assert result.returncode == 0, result.stderr
        container = self.compose(role, "ps", "-q", "process").stdout.strip()
        assert container, result.stderr
        return container

    def check(self, n_rows: int) -> subprocess.CompletedProcess[str]:
        """Both servers' published counts against what the admin planted (exit 0 only if right)."""
        published = [
            f"--published-{s}=gs://{s.lower()}-private/{self.root(s)}/processed/publish" for s in "AB"
        ]
        return self.compose(
            "admin",
            "run",
            "--rm",
            "-T",
            "generate",
            "prio",
            "integration",
            "check",
            "--data-config",
            "gs://ingest/config/data-config.json",
            "--n-rows",
            str(n_rows),
            "--n-drop-batch",
            "0",
            *published,
        )

    def root(self, server: str) -> str:
        """Where server's data of the day lies in its buckets (under its partner's key)."""
        partner = "B" if server == "A" else "A"
        return f"data/v1/{self.key[partner]}/test-app/{self.date}"

    def marker(self, server: str, stage: str) -> tuple[str, str]:
        """The _SUCCESS marker of the packets server shared for stage (in its partner's shared bucket)."""
        partner = "b" if server == "A" else "a"
        return (
            f"{partner}-shared",
            f"data/v1/{self.key[server]}/test-app/{self.date}/intermediate/external/{stage}/_SUCCESS",
        )

    # ---------------------------------------------------------- storage

    def url(self, refresh: bool = False) -> str:
        if refresh or not self._url:
            address = _docker(
                "inspect",
                "--format",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                self.storage,
            ).strip()
            self._url = f"http://{address}:9023"
        return self._url

    def _get(self, path: str) -> bytes | None:
        """A GET on the storage host; None for 404. Raises OSError when it cannot be reached."""
        for attempt in range(2):
            try:
                with urllib.request.urlopen(
                    self.url(refresh=attempt > 0) + path, timeout=HTTP_TIMEOUT_S
                ) as answer:
                    return bytes(answer.read())
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return None
                raise
            except OSError:
                if attempt:
                    raise  # a restarted container may have another address: looked up once more
        raise AssertionError("unreachable")

    def items(self, bucket: str, prefix: str) -> dict[str, dict[str, Any]]:
        """The objects under prefix, by name: their metadata."""
        found = self._get(f"/storage/v1/b/{bucket}/o?prefix={urllib.parse.quote(prefix, safe='')}")
        assert found is not None, f"no bucket {bucket}"
        return {item["name"]: item for item in json.loads(found).get("items", [])}

    def names(self, bucket: str, prefix: str) -> list[str]:
        return sorted(self.items(bucket, prefix))

    def read(self, bucket: str, name: str) -> bytes | None:
        return self._get(f"/download/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}?alt=media")

    def lock(self, server: str) -> dict[str, Any] | None:
        data = self.read(f"{server.lower()}-private", f"{self.root(server)}/_process.lock")
        return None if data is None else dict(json.loads(data))

    def down(self) -> None:
        subprocess.run([str(SCRIPT), "down", str(self.folder)], capture_output=True, timeout=BOUND_S)


@pytest.fixture
def day(tmp_path: Path) -> Iterator[Callable[..., Day]]:
    made: list[Day] = []

    def make(name: str, data_config: list[dict[str, Any]] = ONE_BATCH, **settings: str) -> Day:
        made.append(Day(tmp_path / "deploy", name, data_config, **settings))
        return made[-1]

    yield make
    for one in made:
        one.down()
        # Everything it started is gone.
        assert _docker("network", "ls", "-q", "--filter", f"name=^{one.network}$") == ""
        assert _docker("ps", "-aq", "--filter", f"name=^{one.prefix}-") == ""
        assert _docker("volume", "ls", "-q", "--filter", f"name=^{one.prefix}-") == ""


def logs(container: str) -> str:
    """What the container printed (bin/process logs on stderr)."""
    result = subprocess.run(["docker", "logs", container], capture_output=True, text=True, timeout=60)
    return result.stdout + result.stderr


def running(container: str) -> bool:
    return _docker("inspect", "--format", "{{.State.Running}}", container).strip() == "true"


def finish(container: str) -> int:
    """The container's exit status, once it exits; it may take as long as it keeps printing lines
    (QUIET_S between two), at most BOUND_S."""
    start = last = time.monotonic()
    seen = ""
    while running(container):
        now = time.monotonic()
        text = logs(container)
        if text != seen:
            seen, last = text, now
        assert now - last < QUIET_S, f"{container[:12]} printed nothing for {QUIET_S} s:\n{text[-3000:]}"
        assert now - start < BOUND_S, f"{container[:12]} still running after {BOUND_S} s:\n{text[-3000:]}"
        time.sleep(1)
    return int(_docker("inspect", "--format", "{{.State.ExitCode}}", container).strip())


def until(what: str, probe: Callable[[], T | None], watch: tuple[str, ...] = (), bound: float = BOUND_S) -> T:
    """Poll `probe` until it answers (not None); fails when a container of `watch` exits first,
    or after `bound` seconds."""
    start = time.monotonic()
    while True:
        try:
            found = probe()
        except OSError:  # the storage host restarting
            found = None
        if found is not None:
            return found
        for container in watch:
            assert running(container), f"{container[:12]} exited before {what}:\n{logs(container)[-3000:]}"
        assert time.monotonic() - start < bound, f"no {what} after {bound} s"
        time.sleep(0.2)


# ------------------------------------------------------------------------------ the lock


def test_server_killed_holding_the_lock_blocks_a_second_start_until_it_expires(day):
    # The lock expires 40 s after its last renewal (renewed every 13 s): long enough for a
    # second container to start and reach the lock on a loaded machine.
    today = day("lock", LOCK_TTL="40")
    assert today.plant(10).returncode == 0
    first = today.start("A")
    held = until("server A's lock", lambda: today.lock("A"), watch=(first,))
    _docker("kill", first)
    hostname = _docker("inspect", "--format", "{{.Config.Hostname}}", first).strip()
    assert held["owner"] == "process A" and held["host"] == hostname, held

    # A second start before the lock expires: exit 2 at once, one line naming the holder.
    second = today.compose("server-a", "run", "--rm", "-T", "process")
    refused_at = time.time()
    lock = today.lock("A")
    assert lock is not None and refused_at < _expires(lock), (
        "the lock expired before the second start: inconclusive"
    )
    assert second.returncode == 2, second.stderr
    said = [line for line in second.stderr.splitlines() if "another run is going on" in line]
    assert len(said) == 1, second.stderr
    assert f"is held by process A (host {hostname}, pid {lock['pid']}, started {lock['started']}" in said[0]
    assert "Traceback" not in second.stderr
    assert today.names("a-private", f"{today.root('A')}/processed/") == []

    # After expiry (the killed run never renews it) the next start takes it over and the day
    # completes with B.
    until(
        "the lock's expiry",
        lambda: True if time.time() > _expires(lock) + 1 else None,
        bound=_expires(lock) - time.time() + 60,
    )
    _docker("start", first)
    partner = today.start("B")
    assert finish(first) == 0, logs(first)[-5000:]
    assert finish(partner) == 0, logs(partner)[-5000:]
    taken = [line for line in logs(first).splitlines() if "took over the expired lock" in line]
    assert len(taken) == 1 and f"of process A (host {hostname}, pid {lock['pid']}" in taken[0], logs(first)
    checked = today.check(10)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "both servers published the expected counts" in checked.stdout


# ------------------------------------------------------------------ a server killed mid-day


def test_server_b_killed_between_its_shares_restarts_and_takes_over_its_own_lock(day):
    # A waits for each marker up to 1+1.3+...+1.3^14 = 167 s (15 waits): long enough for B's
    # lock to expire (20 s) and B to redo its day up to verify2 on a loaded machine.
    today = day("kill", LOCK_TTL="20", RETRY_LIMIT="14", RETRY_DELAY="1", RETRY_BACKOFF_EXPONENT="1.3")
    assert today.plant(10).returncode == 0
    # B first: once it has shared verify1 it waits for A's, which comes only when A starts; so
    # the kill falls between B's verify1 and verify2 markers whatever the machine's speed.
    b = today.start("B")
    until("B's verify1 marker", lambda: today.read(*today.marker("B", "verify1")), watch=(b,))
    _docker("kill", b)
    assert today.read(*today.marker("B", "verify2")) is None
    lock = today.lock("B")
    assert lock is not None and lock["owner"] == "process B", lock
    hostname = _docker("inspect", "--format", "{{.Config.Hostname}}", b).strip()
    assert lock["host"] == hostname, lock

    a = today.start("A")
    # A takes B's verify1 (the same inputs: its stamp matches) and waits for B's verify2.
    until("A waiting for B's verify2", lambda: "verify2/_SUCCESS (wait 2 of" in logs(a) or None, watch=(a,))
    until(
        "B's lock to expire",
        lambda: True if time.time() > _expires(lock) + 1 else None,
        watch=(a,),
        bound=_expires(lock) - time.time() + 60,
    )
    _docker("start", b)
    assert finish(b) == 0, logs(b)[-5000:]
    assert finish(a) == 0, logs(a)[-5000:]

    log_a, log_b = logs(a), logs(b)
    waits = re.findall(r"waiting [0-9.]+s for \S+/verify2/_SUCCESS \(wait (\d+) of (\d+)", log_a)
    assert waits and all(int(n) <= int(limit) for n, limit in waits), log_a
    assert "Reached the maximum number of retries" not in log_a
    taken = [line for line in log_b.splitlines() if "took over the expired lock" in line]
    assert len(taken) == 1, log_b
    assert f"of process B (host {hostname}, pid {lock['pid']}, started {lock['started']}" in taken[0]
    checked = today.check(10)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "both servers published the expected counts" in checked.stdout
    assert "Traceback" not in log_a + log_b


# ------------------------------------------------------------- a server cut off the storage

A_BUDGET_S = 20  # RETRY_LIMIT 9, RETRY_DELAY 2, RETRY_BACKOFF_EXPONENT 1: ten waits of 2 s


def test_server_b_cut_off_longer_than_a_waits_then_both_rerun(day):
    today = day("net", LOCK_TTL="60")
    today.set("A", RETRY_LIMIT="9", RETRY_DELAY="2", RETRY_BACKOFF_EXPONENT="1")
    today.set("B", RETRY_LIMIT="14", RETRY_DELAY="1", RETRY_BACKOFF_EXPONENT="1.3")
    assert today.plant(10).returncode == 0
    b = today.start("B")
    until("B's verify1 marker", lambda: today.read(*today.marker("B", "verify1")), watch=(b,))
    _docker("network", "disconnect", today.network, b)
    cut = time.monotonic()

    a = today.start("A")
    assert finish(a) != 0
    assert time.monotonic() - cut > A_BUDGET_S
    lines = logs(a).strip().splitlines()
    waited = f"gs://a-shared/{today.marker('B', 'verify2')[1]}"
    # One line says what A waited for, the last one; the log shows keys by their first 8 digits.
    short = waited.replace(today.key["B"], today.key["B"][:8] + "…")
    assert lines[-1].endswith(
        f"process A: wait: Reached the maximum number of retries waiting for {short}."
    ), lines[-5:]
    assert sum("Reached the maximum" in line for line in lines) == 1
    assert "Traceback" not in logs(a)
    assert today.names("a-private", f"{today.root('A')}/processed/") == []
    assert today.names("b-private", f"{today.root('B')}/processed/") == []

    # Back on the network, B is stopped (it releases its lock), then both run the day again.
    _docker("network", "connect", today.network, b)
    _docker("stop", "--time", "60", b, timeout=120)
    assert today.lock("B") is None, logs(b)[-3000:]
    _docker("start", a)
    _docker("start", b)
    assert finish(a) == 0, logs(a)[-5000:]
    assert finish(b) == 0, logs(b)[-5000:]
    checked = today.check(10)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "both servers published the expected counts" in checked.stdout
    assert "Traceback" not in logs(a) + logs(b)


# ------------------------------------------------------------------ the storage restarted


def _whole_parts(today: Day, bucket: str, folder: str) -> int:
    """The clients in the parts of a raw shares folder, each part read and checked whole."""
    clients = 0
    for name in today.names(bucket, folder):
        if "/part-" not in name:
            continue  # _SUCCESS
        data = today.read(bucket, name)
        assert data is not None, name
        assert data.endswith(b"\n"), f"{name} is cut short"
        rows = [json.loads(line) for line in data.splitlines()]
        assert all({"id", "payload"} <= set(row) for row in rows), name
        clients += len(rows)
    return clients


def _instant(timestamp: str) -> float:
    """Seconds since the epoch of an RFC 3339 time in UTC (docker's nanoseconds cut to micro)."""
    whole, _, fraction = timestamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{whole}.{(fraction or '0')[:6]}+00:00").timestamp()


def test_storage_restarted_during_an_upload_keeps_no_partial_object_and_a_rerun_completes(day):
    today = day("storage", RETRY_LIMIT="14", RETRY_DELAY="1", RETRY_BACKOFF_EXPONENT="1.3")
    raw = {s: f"{today.root(s)}/raw/shares/" for s in "AB"}
    # The admin hands each server its shares in 100 parts (and 100 of rejects), one upload each.
    n_rows = 400
    generate = _generate(n_rows, n_partitions=100)
    admin = subprocess.Popen(
        [str(today.folder / "admin" / "compose"), *generate],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        before = until(
            "the hand-over to A under way",
            lambda: found if len(found := today.items("a-private", raw["A"])) >= 3 else None,
            bound=BOUND_S,
        )
        _docker("restart", today.storage)
        output, _ = admin.communicate(timeout=BOUND_S)
    finally:
        if admin.poll() is None:
            admin.kill()
    assert "Traceback" not in output
    # When the storage went down (the old process ended) and came back.
    state = json.loads(_docker("inspect", "--format", "{{json .State}}", today.storage))
    down, back = _instant(state["FinishedAt"]), _instant(state["StartedAt"])

    # The storage is back with what it held (its volume).
    until("the storage back", lambda: today.items("a-private", raw["A"]), bound=120)
    after = {s: today.items(f"{s.lower()}-private", raw[s]) for s in "AB"}
    assert set(before) <= set(after["A"])
    made = sorted(_instant(item["timeCreated"]) for items in after.values() for item in items.values())
    seen = (
        f"admin exit {admin.returncode}; storage down {down:.3f}, back {back:.3f}; objects made "
        f"{sum(m < down for m in made)} before, {sum(m > back for m in made)} after\n{output}"
    )
    # The restart fell inside the hand-over: objects were made before it, and the hand-over
    # either failed or went on making them after.
    assert made[0] < down and (admin.returncode != 0 or made[-1] > back), seen
    # Nothing cut short: every part is whole; a folder with its _SUCCESS holds every client.
    for s in "AB":
        clients = _whole_parts(today, f"{s.lower()}-private", raw[s])
        if f"{raw[s]}_SUCCESS" in after[s]:
            assert clients == 2 * n_rows, (s, clients)  # test-0 and the planted bad-id batch
    if admin.returncode != 0:
        # The storage's client gave up on an upload (the GCS API server answers a resumed
        # upload that the restart cut with 400): it said so in a line, and no _SUCCESS.
        assert re.search(r"upload for [AB]: .*cannot write gs://[ab]-private/", output), seen
        assert not all(f"{raw[s]}_SUCCESS" in after[s] for s in "AB")
    else:
        # The client sent the upload in flight again, whole, once the storage was back.
        assert all(f"{raw[s]}_SUCCESS" in after[s] for s in "AB"), seen
    # The admin's re-run completes the hand-over (in one part per batch: the servers then read
    # 2 objects, not 200, which saves minutes on a loaded machine).
    rerun = today.compose("admin", *generate[:-1], "1")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert all(f"{raw[s]}_SUCCESS" in today.names(f"{s.lower()}-private", raw[s]) for s in "AB")

    # The day then runs through, and both servers publish every client's counts.
    a, b = today.start("A"), today.start("B")
    assert finish(a) == 0, logs(a)[-5000:]
    assert finish(b) == 0, logs(b)[-5000:]
    checked = today.check(n_rows)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "both servers published the expected counts" in checked.stdout
    assert "Traceback" not in logs(a) + logs(b)
