"""Staging prio pings: the real Firefox ping, bad input, re-runs, unlinkable ids, gs:// paths."""

from __future__ import annotations

import base64
import copy
import json
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from prio_processor.firefox import staging
from prio_processor.firefox.commands import entry_point
from prio_processor.storage import StorageError, location

DATA = Path(__file__).parent / "data"
DATE = "2019-06-26"
NEXT_DATE = "2019-06-27"
BATCHES = ("content.blocking_blocked_TESTONLY-0", "content.blocking_blocked_TESTONLY-1")


@pytest.fixture(scope="module")
def real_ping() -> dict:
    """A prio ping from Firefox 69 Nightly: its two encodings appear three times each."""
    return json.loads((DATA / "fx-69.0a1.json").read_text())


def message(ping: dict | str) -> dict:
    text = ping if isinstance(ping, str) else json.dumps(ping)
    return {"attributeMap": {"document_type": "prio"}, "payload": base64.b64encode(text.encode()).decode()}


def write_sink(root: Path, date: str, hour: str, name: str, lines: list) -> None:
    folder = root / date / hour / "telemetry" / "prio" / "4"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / name).open("w") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")


def with_id(ping: dict, ping_id: str | None = None) -> dict:
    copied = copy.deepcopy(ping)
    copied["id"] = ping_id or str(uuid.uuid4())
    return copied


def read_folder(folder: Path) -> list[dict]:
    return [
        json.loads(line)
        for part in sorted(folder.glob("part-*.json"))
        for line in part.read_text().splitlines()
    ]


def run(*args: str) -> str:
    """Staging's stderr; its stdout must be the count line alone."""
    result = CliRunner().invoke(entry_point, ["staging", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"\d+ errors out of \d+ total\n", result.stdout), result.stdout
    return result.stderr


def test_real_ping_ids_batches_and_share_sizes(tmp_path, real_ping):
    sink, out = tmp_path / "sink", tmp_path / "out"
    write_sink(sink, DATE, "00", "part-0.ndjson", [message(real_ping)])
    output = run("--date", DATE, "--input", str(sink), "--output", str(out))
    day = out / f"submission_date={DATE}"
    assert (out / "_SUCCESS").is_file()
    expected_sizes = {
        (e["encoding"], len(base64.b64decode(e["prio"]["a"])), len(base64.b64decode(e["prio"]["b"])))
        for e in real_ping["payload"]["prioData"]
    }
    sizes = set()
    for batch_id in BATCHES:
        a = read_folder(day / "server_id=a" / f"batch_id={batch_id}")
        b = read_folder(day / "server_id=b" / f"batch_id={batch_id}")
        assert [r["id"] for r in a] == [r["id"] for r in b]
        assert sorted(r["id"] for r in a) == [1, 2, 3]
        assert all(set(r) == {"id", "payload"} for r in a + b)
        for ra, rb in zip(a, b):
            size_a, size_b = len(base64.b64decode(ra["payload"])), len(base64.b64decode(rb["payload"]))
            assert size_b == 187 and size_a > 10_000
            sizes.add((batch_id, size_a, size_b))
    assert sizes == expected_sizes
    assert [p.name for p in (day / "server_id=b" / f"batch_id={BATCHES[0]}").iterdir()] == ["part-00000.json"]
    # Outputs hold only shares and markers; without --rejects, rejects are only counted.
    assert {p.name for p in day.iterdir()} == {"server_id=a", "server_id=b"}
    assert {p.name for p in out.iterdir()} == {"_SUCCESS", f"submission_date={DATE}"}
    assert f"staging {DATE}: 1 pings read, 0 duplicate ping ids dropped, 6 entries written in 2 batches" in (
        output
    )
    assert f"staging {DATE}: batch {BATCHES[0]}: 3 entries" in output


def test_bad_input_is_counted_and_listed_without_payloads(tmp_path, real_ping):
    sink, out = tmp_path / "sink", tmp_path / "out"
    good = with_id(real_ping, "good")
    no_b = with_id(real_ping, "no-b")
    del no_b["payload"]["prioData"][0]["prio"]["b"]
    unknown = with_id(real_ping, "unknown")
    unknown["payload"]["prioData"][1]["encoding"] = "not-in-config-0"
    odd_encoding = with_id(real_ping, "odd")
    odd_encoding["payload"]["prioData"][2]["encoding"] = "../escape"
    no_data = with_id(real_ping, "no-data")
    del no_data["payload"]["prioData"]
    lines = [
        message(good),
        message(good),
        message(no_b),
        message(unknown),
        message(odd_encoding),
        message(no_data),
        "{truncated",
        {"payload": "@@@"},
        message("[1, 2]"),
        message("[" * 100_000),
        message({"id": "", "payload": {}}),
    ]
    write_sink(sink, DATE, "00", "part-0.ndjson", lines[:5])
    write_sink(sink, DATE, "13", "part-1.ndjson", lines[5:])
    config = tmp_path / "config.json"
    config.write_text(json.dumps([{"batch_id": b, "n_data": 1} for b in BATCHES]))
    result = CliRunner().invoke(
        entry_point,
        ["staging", "--date", DATE, "--input", str(sink), "--output", str(out), "--config", str(config)],
        env={"REJECTS": str(tmp_path / "rejects")},
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "9 errors out of 11 total\n"
    output = result.stderr

    rejects_file = tmp_path / "rejects" / "rejects-staging.ndjson"
    rejects = [json.loads(line) for line in rejects_file.read_text().splitlines()]
    reasons = Counter(r["reason"] for r in rejects)
    assert reasons == {
        "missing_share": 1,
        "unknown_encoding": 1,
        "bad_encoding": 1,
        "bad_ping": 4,
        "bad_json": 1,
        "bad_base64": 1,
    }
    listed = {
        (r["id"], r.get("entry"))
        for r in rejects
        if r["reason"] in ("missing_share", "unknown_encoding", "bad_encoding")
    }
    assert listed == {("no-b", 0), ("unknown", 1), ("odd", 2)}
    shares = {e["prio"][s] for e in real_ping["payload"]["prioData"] for s in "ab"}
    assert not any(share in rejects_file.read_text() for share in shares)
    assert "1 duplicate ping ids dropped" in output
    assert (
        "rejected bad_base64: 1, bad_encoding: 1, bad_json: 1, bad_ping: 4, missing_share: 1, "
        "unknown_encoding: 1" in output
    )
    # good (6) + no-b (5) + unknown (5) + odd (5) entries, split over the two batch ids
    day = out / f"submission_date={DATE}"
    counts = {b: len(read_folder(day / "server_id=a" / f"batch_id={b}")) for b in BATCHES}
    assert sum(counts.values()) == 21
    assert not (day / "server_id=a" / "batch_id=not-in-config-0").exists()


def test_json_source_and_rerun_replaces_that_date_only(tmp_path, real_ping):
    exports, out = tmp_path / "exports", tmp_path / "out"
    for date, n in ((DATE, 2), (NEXT_DATE, 1)):
        folder = exports / date / "nested"
        folder.mkdir(parents=True)
        (folder / "pings.ndjson").write_text("".join(json.dumps(with_id(real_ping)) + "\n" for _ in range(n)))
    for date in (DATE, NEXT_DATE):
        run("--date", date, "--input", str(exports), "--output", str(out), "--source", "json")
    stale = out / f"submission_date={DATE}" / "server_id=a" / "batch_id=stale-0"
    stale.mkdir()
    (stale / "part-00000.json").write_text("{}\n")
    run("--date", DATE, "--input", str(exports), "--output", str(out), "--source", "json")
    assert not stale.exists()
    for date, n in ((DATE, 2), (NEXT_DATE, 1)):
        a = read_folder(out / f"submission_date={date}" / "server_id=a" / f"batch_id={BATCHES[0]}")
        assert sorted(r["id"] for r in a) == list(range(1, 3 * n + 1))


def _staging_error(tmp_path: Path, *extra: str) -> str:
    """The one line staging prints on stderr for a configuration error (exit status 2)."""
    args = ["staging", "--input", str(tmp_path / "sink"), "--output", str(tmp_path / "out"), *extra]
    result = CliRunner().invoke(entry_point, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: "), result.stderr
    return result.stderr


def test_configuration_errors_are_one_line(tmp_path, real_ping):
    (tmp_path / "sink").mkdir()
    assert f"no pings for {DATE}" in _staging_error(tmp_path, "--date", DATE)
    assert "--date '2019-02-30' is not a date as YYYY-MM-DD" in _staging_error(
        tmp_path, "--date", "2019-02-30"
    )
    config = tmp_path / "config.json"
    config.write_text(json.dumps([{"batch_id": "../x-0", "n_data": 1}]))
    assert "batch_id '../x-0' is not allowed" in _staging_error(
        tmp_path, "--date", DATE, "--config", str(config)
    )
    write_sink(tmp_path / "sink", DATE, "00", "part-0.ndjson", [message(real_ping)])
    inside = str(tmp_path / "out" / "rejects.ndjson")
    assert "--rejects must not be inside --output" in _staging_error(
        tmp_path, "--date", DATE, "--rejects", inside
    )
    assert not (tmp_path / "out").exists()


def _linked_pairs(day: Path) -> int:
    """How many pings have the same id in both batches."""
    by_payload = {}
    for batch_id in ("m-0", "m-1"):
        for record in read_folder(day / "server_id=a" / f"batch_id={batch_id}"):
            by_payload[record["payload"]] = record["id"]
    return sum(by_payload[f"a0-{k}"] == by_payload[f"a1-{k}"] for k in range(200))


def synthetic_ping(k: int) -> dict:
    entries = [
        {"encoding": f"m-{part}", "prio": {"a": f"a{part}-{k}", "b": f"b{part}-{k}"}} for part in (0, 1)
    ]
    return {"id": f"ping-{k}", "payload": {"prioData": entries}}


DEFAULT_PART_BYTES = staging.PART_BYTES


@pytest.mark.parametrize("part_bytes", [DEFAULT_PART_BYTES, 2000])
def test_ids_and_order_do_not_link_entries_across_batches(tmp_path, monkeypatch, part_bytes):
    monkeypatch.setattr(staging, "PART_BYTES", part_bytes)
    sink, out = tmp_path / "sink", tmp_path / "out"
    write_sink(sink, DATE, "00", "part-0.ndjson", [message(synthetic_ping(k)) for k in range(200)])
    run("--date", DATE, "--input", str(sink), "--output", str(out))
    day = out / f"submission_date={DATE}"
    for part in (0, 1):
        folder_a = day / "server_id=a" / f"batch_id=m-{part}"
        folder_b = day / "server_id=b" / f"batch_id=m-{part}"
        parts = sorted(p.name for p in folder_a.glob("part-*"))
        assert all(re.fullmatch(r"part-\d{5}\.json", name) for name in parts), parts
        assert parts == sorted(p.name for p in folder_b.glob("part-*"))
        assert (len(parts) > 1) == (part_bytes < DEFAULT_PART_BYTES)
        a, b = read_folder(folder_a), read_folder(folder_b)
        assert sorted(r["id"] for r in a) == list(range(1, 201))
        # A's and B's share of one entry keep one id; every entry is there once.
        assert all(ra["id"] == rb["id"] and ra["payload"][2:] == rb["payload"][2:] for ra, rb in zip(a, b))
        assert sorted(r["payload"] for r in a) == sorted(f"a{part}-{k}" for k in range(200))
        # The order is not the arrival order.
        assert [r["payload"] for r in a] != [f"a{part}-{k}" for k in range(200)]
    # With 200 pings, a random matching links about one pair; a row number in arrival order links all 200.
    assert _linked_pairs(day) < 20


def test_staging_on_gcs(gcs, real_ping, tmp_path):
    bucket = gcs()
    sink = location(f"gs://{bucket}/sink")
    for number, hour in enumerate(("00", "01")):
        lines = [json.dumps(message(with_id(real_ping))) for _ in range(2)]
        target = sink.join(DATE, hour, "telemetry", "prio", "4", f"part-{number}.ndjson")
        target.write_bytes(("\n".join(lines) + "\n").encode())
    sink.join(DATE, "00", "telemetry", "prio", "4", "_SUCCESS").write_bytes(b"")
    bad = json.dumps(message(json.dumps({"id": "no-payload"})))
    sink.join(DATE, "01", "telemetry", "prio", "4", "part-9.ndjson").write_bytes((bad + "\n").encode())
    rejects = f"gs://{bucket}/listed/staging.ndjson"
    output = run(
        "--date", DATE, "--input", sink.uri, "--output", f"gs://{bucket}/staged", "--rejects", rejects
    )
    assert "5 pings read" in output and "24 entries written in 2 batches" in output
    listed = [json.loads(line) for line in location(rejects).read_bytes().decode().splitlines()]
    assert listed == [
        {"id": "no-payload", "reason": "bad_ping", "detail": "ping has no payload.prioData list"}
    ]
    staged = location(f"gs://{bucket}/staged")
    names = {name for name, _ in staged.walk()}
    assert not any("rejects" in name for name in names)
    assert "_SUCCESS" in names
    assert f"submission_date={DATE}/server_id=b/_SUCCESS" in names
    part = staged.join(
        f"submission_date={DATE}", "server_id=b", f"batch_id={BATCHES[1]}", "part-00000.json"
    )
    records = [json.loads(line) for line in part.read_bytes().decode().splitlines()]
    assert sorted(r["id"] for r in records) == list(range(1, 13))

    # A re-run replaces the day's objects: a batch no longer sent is gone, nothing hidden is left.
    only_first = with_id(real_ping)
    entries = only_first["payload"]["prioData"]
    only_first["payload"]["prioData"] = [e for e in entries if e["encoding"] == BATCHES[0]]
    for name, _ in sink.join(DATE).walk():
        sink.join(DATE, name).delete()
    sink.join(DATE, "02", "telemetry", "prio", "4", "part-0.ndjson").write_bytes(
        (json.dumps(message(only_first)) + "\n").encode()
    )
    run("--date", DATE, "--input", sink.uri, "--output", f"gs://{bucket}/staged")
    day = f"submission_date={DATE}"
    assert {name for name, _ in staged.walk()} == {
        "_SUCCESS",
        *(f"{day}/server_id={s}/_SUCCESS" for s in "ab"),
        *(f"{day}/server_id={s}/batch_id={BATCHES[0]}/part-00000.json" for s in "ab"),
    }


def _day_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "encoding, shown",
    [
        ("m\x000", r"'m\x000'"),
        ("x" * 300, "(300 characters)"),
        ("m 0", "'m 0'"),
        ("", "''"),
        (".hidden", "'.hidden'"),
        ("a/b", "'a/b'"),
        (7, "not a string"),
        (None, "missing"),
    ],
)
def test_bad_encodings_without_a_config_are_counted_rejects(tmp_path, encoding, shown):
    """Encodings that cannot name a batch folder are rejects with their reason, the other entries are
    staged and the date is complete (a NUL byte gave a traceback; 300 characters exited 2 after
    deleting the date's previous output)."""
    sink, out = tmp_path / "sink", tmp_path / "out"
    write_sink(sink, DATE, "00", "part-0.ndjson", [message(synthetic_ping(k)) for k in range(3)])
    run("--date", DATE, "--input", str(sink), "--output", str(out))
    bad = synthetic_ping(3)
    bad["payload"]["prioData"][1]["encoding"] = encoding
    write_sink(sink, DATE, "01", "part-0.ndjson", [message(bad)])
    result = CliRunner().invoke(
        entry_point,
        ["staging", "--date", DATE, "--input", str(sink), "--output", str(out)],
        env={"REJECTS": str(tmp_path / "rejects.ndjson")},
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "1 errors out of 4 total\n"
    assert "rejected bad_encoding: 1" in result.stderr
    [reject] = [json.loads(line) for line in (tmp_path / "rejects.ndjson").read_text().splitlines()]
    assert reject["id"] == "ping-3" and reject["reason"] == "bad_encoding" and reject["entry"] == 1
    assert shown in reject["detail"] and "\x00" not in reject["detail"]
    day = out / f"submission_date={DATE}"
    assert (out / "_SUCCESS").is_file()
    assert all((day / f"server_id={s}" / "_SUCCESS").is_file() for s in "ab")
    assert {p.name for p in (day / "server_id=a").iterdir()} == {"_SUCCESS", "batch_id=m-0", "batch_id=m-1"}
    assert len(read_folder(day / "server_id=b" / "batch_id=m-0")) == 4
    assert len(read_folder(day / "server_id=b" / "batch_id=m-1")) == 3
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_failed_read_leaves_the_previous_day_as_it_was(tmp_path):
    """The new day replaces the old one only once it is complete: a source that fails part way
    (an unreadable bucket, a broken BigQuery stream) leaves the old day, its markers and the other
    dates untouched, and no hidden leftovers."""
    out = location(tmp_path / "out")
    staging.stage([synthetic_ping(k) for k in range(5)], out, DATE)
    staging.stage([synthetic_ping(k) for k in range(2)], out, NEXT_DATE)
    before = _day_files(tmp_path / "out")

    def failing() -> Iterator[dict]:
        yield synthetic_ping(10)
        yield synthetic_ping(11)
        raise StorageError("cannot read gs://sink/2019-06-26/01/part-3.ndjson: connection reset")

    with pytest.raises(StorageError, match="connection reset"):
        staging.stage(failing(), out, DATE)
    assert _day_files(tmp_path / "out") == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "_SUCCESS", f"submission_date={DATE}", f"submission_date={NEXT_DATE}"
    ]


def test_a_rerun_replaces_the_day_whole_and_clears_a_killed_run_leftovers(tmp_path):
    out = tmp_path / "out"
    staging.stage([synthetic_ping(k) for k in range(5)], location(out), DATE)
    day = out / f"submission_date={DATE}"
    # What a run killed while writing its new day leaves: a hidden folder, which no reader lists.
    leftover = out / f".submission_date={DATE}.0123abcd.tmp" / "server_id=a" / "batch_id=m-0"
    leftover.mkdir(parents=True)
    (leftover / "part-00000.json").write_text('{"id": 1, "payload": "x"}\n')
    staging.stage([synthetic_ping(k) for k in range(7, 9)], location(out), DATE)
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", f"submission_date={DATE}"]
    payloads = sorted(r["payload"] for r in read_folder(day / "server_id=a" / "batch_id=m-0"))
    assert payloads == ["a0-7", "a0-8"]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_the_new_day_takes_the_old_ones_place(tmp_path, monkeypatch, exchange):
    """With the kernel's atomic exchange, and with two renames where a file system lacks it."""
    if not exchange:
        monkeypatch.setattr(staging, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    staging.stage([synthetic_ping(k) for k in range(3)], location(out), DATE)
    inode = (out / f"submission_date={DATE}").stat().st_ino
    staging.stage([synthetic_ping(k) for k in range(10, 12)], location(out), DATE)
    day = out / f"submission_date={DATE}"
    assert day.stat().st_ino != inode
    payloads = sorted(r["payload"] for r in read_folder(day / "server_id=b" / "batch_id=m-1"))
    assert payloads == ["b1-10", "b1-11"]
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", f"submission_date={DATE}"]
