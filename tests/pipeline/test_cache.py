"""verify2 and aggregate over verify1's private cache write exactly what they write from the shares."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from prio_processor.engine.server import Schedule, Server
from prio_processor.pipeline import cache, runner
from prio_processor.pipeline.errors import InputError
from prio_processor.storage import location

from tests_support import PEER, Pair, run_server_chain, tampered_shares, write_parts


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 3 records: frames, data rows and corrections cross many chunk borders."""
    monkeypatch.setattr(runner, "_chunk_size", lambda server: 3)


def _shares(pair: Pair, tmp: Path) -> dict[str, Path]:
    """Bad lines, duplicates, packets failing at one server, and two clients whose A shares were
    swapped: they open everywhere but their proofs fail, so aggregate corrects verify1's sums."""
    lines = tampered_shares(pair, 40, seed=11)
    first, second = (json.loads(lines["A"][k]) for k in (30, 31))
    first["payload"], second["payload"] = second["payload"], first["payload"]
    lines["A"][30], lines["A"][31] = json.dumps(first), json.dumps(second)
    raw = {}
    for s in PEER:
        raw[s] = tmp / "raw" / s
        write_parts(lines[s], raw[s], 4)
    return raw


def _chain(
    pair: Pair, raw: dict[str, Path], out: Path, schedule: Schedule, workers: int, kept: Path | None
) -> tuple[dict[str, bytes], list[str]]:
    """Every server stage of both servers: the files written (by relative path) and the notices."""
    notices: list[str] = []
    files = run_server_chain({"A": pair.a, "B": pair.b}, raw, out, schedule, workers, kept, notices.append)
    return files, notices


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("schedule", [Schedule.FIXED, Schedule.SEQUENTIAL])
def test_cached_chain_writes_what_the_shares_give(tmp_path, small_chunks, schedule, workers):
    pair = Pair(23)
    raw = _shares(pair, tmp_path)
    plain, _ = _chain(pair, raw, tmp_path / "plain", schedule, workers, None)
    cached, notices = _chain(pair, raw, tmp_path / "cached", schedule, workers, tmp_path / "cache")
    assert cached == plain
    rejects = plain["rejects/A/rejects-aggregate-A.ndjson"].decode()
    # The swapped pair; with sequential points, B's desync after A's failures fails most of the rest.
    assert (
        rejects.count("invalid_proof") == 2
        if schedule is Schedule.FIXED
        else rejects.count("invalid_proof") > 2
    )
    assert "duplicate_id" in plain["rejects/A/rejects-verify2-A.ndjson"].decode()
    if schedule is Schedule.FIXED:
        assert notices == []  # every stage used the cache, and it answered for every record
    else:
        # B skips the packets A could not open, so its verify2 draws differ from its verify1 draws:
        # the cache cannot answer and B's verify2 reads the shares; everything else used the cache.
        assert len(notices) == 1 and "stopped using the cache" in notices[0], notices
    for s in PEER:
        kept = sorted(p.name for p in (tmp_path / "cache" / s).iterdir())
        assert kept == ["_manifest.json"] + [f"cache-part-{k:05d}.json.rows" for k in range(4)]


def _verify1(
    pair: Pair, raw: dict[str, Path], tmp: Path, schedule: Schedule = Schedule.FIXED, kept=True
) -> None:
    """Both servers' verify1 into <tmp>/v1, keeping their caches in <tmp>/cache unless not `kept`."""
    for s, server in (("A", pair.a), ("B", pair.b)):
        runner.run_stage(
            "verify1",
            server,
            runner.Inputs(location(raw[s])),
            location(tmp / "v1" / s),
            schedule=schedule,
            cache=location(tmp / "cache" / s) if kept else None,
        )


def _verify2(
    pair: Pair,
    raw: dict[str, Path],
    tmp: Path,
    name: str,
    schedule: Schedule = Schedule.FIXED,
    kept: bool = True,
) -> tuple[bytes, list[str]]:
    notices: list[str] = []
    runner.run_stage(
        "verify2",
        pair.a,
        runner.Inputs(location(raw["A"]), location(tmp / "v1" / "A"), location(tmp / "v1" / "B")),
        location(tmp / name),
        schedule=schedule,
        cache=location(tmp / "cache" / "A") if kept else None,
        notice=notices.append,
    )
    return b"".join(p.read_bytes() for p in sorted((tmp / name).iterdir())), notices


def test_changed_input_is_read_not_taken_from_the_cache(tmp_path):
    pair = Pair(15)
    raw = _shares(pair, tmp_path)
    _verify1(pair, raw, tmp_path)
    part = raw["A"] / "part-00001.json"
    lines = part.read_text().splitlines()
    part.write_text("\n".join(lines[1:]) + "\n")  # a share fewer than verify1 read
    expected, _ = _verify2(pair, raw, tmp_path, "plain", kept=False)
    written, notices = _verify2(pair, raw, tmp_path, "cached")
    assert written == expected
    assert notices == [
        f"not using the cache in {tmp_path / 'cache' / 'A'}: --input is not the files verify1 "
        "read (they changed, or others were given); reading the shares"
    ]


def test_rewritten_input_with_the_same_bytes_is_read_again(tmp_path):
    pair = Pair(15)
    raw = _shares(pair, tmp_path)
    _verify1(pair, raw, tmp_path)
    part = raw["A"] / "part-00000.json"
    data = part.read_bytes()
    part.unlink()
    part.write_bytes(data)
    _, notices = _verify2(pair, raw, tmp_path, "cached")
    assert len(notices) == 1 and "--input is not the files verify1 read" in notices[0]


def test_damaged_cache_is_noticed_and_the_shares_are_read(tmp_path):
    pair = Pair(15)
    raw = _shares(pair, tmp_path)
    _verify1(pair, raw, tmp_path)
    rows = tmp_path / "cache" / "A" / "cache-part-00002.json.rows"
    rows.write_bytes(rows.read_bytes()[:-7])
    expected, _ = _verify2(pair, raw, tmp_path, "plain", kept=False)
    written, notices = _verify2(pair, raw, tmp_path, "cached")
    assert written == expected
    assert len(notices) == 1 and "stopped using the cache" in notices[0] and "part-00002.json" in notices[0]


def test_cache_of_other_settings_is_not_used(tmp_path):
    pair = Pair(15)
    raw = _shares(pair, tmp_path)
    _verify1(pair, raw, tmp_path, Schedule.FIXED)
    folder, parts = location(tmp_path / "cache" / "A"), location(raw["A"]).parts()
    assert cache.open_cache(folder, parts, pair.a, Schedule.FIXED)[0] is not None
    assert cache.open_cache(folder, parts, pair.a, None)[0] is not None  # aggregate takes either schedule
    found, why_not = cache.open_cache(folder, parts, pair.a, Schedule.SEQUENTIAL)
    assert found is None and why_not == "it was made with another --evaluation-point"
    other_seed = Server(pair.config, "A", pair.private_a, os.urandom(16))
    found, why_not = cache.open_cache(folder, parts, other_seed, Schedule.FIXED)
    assert found is None and "shared secret" in why_not
    found, why_not = cache.open_cache(folder, parts, pair.b, Schedule.FIXED)
    assert found is None and why_not == "it was made for another server, batch or n_data"


def test_missing_cache_is_noticed(tmp_path):
    pair = Pair(15)
    raw = _shares(pair, tmp_path)
    _verify1(pair, raw, tmp_path, kept=False)
    _, notices = _verify2(pair, raw, tmp_path, "out")
    assert len(notices) == 1 and "holds no finished cache from verify1" in notices[0]


def test_a_rerun_of_verify1_replaces_the_cache_whole(tmp_path):
    pair = Pair(15)
    raw = _shares(pair, tmp_path)
    _verify1(pair, raw, tmp_path)
    (raw["A"] / "part-00003.json").unlink()
    stale = tmp_path / "cache" / "A" / "cache-part-00003.json.rows"
    assert stale.exists()
    _verify1(pair, raw, tmp_path)
    assert not stale.exists()
    manifest = json.loads((tmp_path / "cache" / "A" / "_manifest.json").read_text())
    assert [Path(i["uri"]).name for i in manifest["inputs"]] == [f"part-{k:05d}.json" for k in range(3)]
    assert "mac" in manifest["prio_settings"]
    secret = base64.b64encode(pair.seed).decode()
    assert secret not in (tmp_path / "cache" / "A" / "_manifest.json").read_text()


@pytest.mark.parametrize("where", ["output", "input"])
def test_cache_needs_a_folder_of_its_own(tmp_path, where):
    pair = Pair(15)
    raw = _shares(pair, tmp_path)
    folder = tmp_path / "v1" / "A" if where == "output" else raw["A"]
    with pytest.raises(InputError, match=r"--cache .* must be a folder of its own"):
        runner.run_stage(
            "verify1",
            pair.a,
            runner.Inputs(location(raw["A"])),
            location(tmp_path / "v1" / "A"),
            schedule=Schedule.FIXED,
            cache=location(folder),
        )
