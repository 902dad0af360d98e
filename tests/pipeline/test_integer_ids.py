"""Shares with integer ids, as staging (and the original's Spark staging) writes them."""

from __future__ import annotations

import json
from pathlib import Path

from prio_processor.engine.server import Schedule

from tests_support import PEER, Pair, run_server_chain, tampered_shares, write_parts


def _raw(lines: dict[str, list[str]], tmp: Path, integer: bool) -> dict[str, Path]:
    """The shares with their ids c<k> renumbered k + 1, as integers or as strings."""
    raw = {}
    for s in PEER:
        renumbered = []
        for line in lines[s]:
            try:
                record = json.loads(line)
            except ValueError:
                renumbered.append(line)
                continue
            if record["id"].startswith("c"):
                number = int(record["id"][1:]) + 1
                record["id"] = number if integer else str(number)
            renumbered.append(json.dumps(record))
        raw[s] = tmp / s
        write_parts(renumbered, raw[s], 3)
    return raw


def test_integer_ids_join_and_come_out_as_their_digits_with_and_without_the_cache(tmp_path):
    pair = Pair(11)
    servers = {"A": pair.a, "B": pair.b}
    lines = tampered_shares(pair, 30, seed=5)
    as_strings = _raw(lines, tmp_path / "raw-strings", integer=False)
    as_integers = _raw(lines, tmp_path / "raw-integers", integer=True)
    assert '{"id": 1, ' in (as_integers["A"] / "part-00000.json").read_text()

    expected = run_server_chain(servers, as_strings, tmp_path / "strings", Schedule.FIXED)
    plain = run_server_chain(servers, as_integers, tmp_path / "plain", Schedule.FIXED)
    cached = run_server_chain(
        servers, as_integers, tmp_path / "cached", Schedule.FIXED, cache=tmp_path / "cache"
    )
    # The same bytes, but for the input folder that rejects of bad lines name.
    same = {name: data.replace(b"raw-strings", b"raw-integers") for name, data in expected.items()}
    assert plain == same
    assert cached == same
    [aggregate] = [json.loads(line) for line in plain["A/aggregate/aggregate.ndjson"].decode().splitlines()]
    assert aggregate["total"] > 20 and aggregate["error"] < 10
    verify2 = plain["A/verify2/part-00000.json"].decode()
    assert '"id": "1"' in verify2 and '"id": 1,' not in verify2
    rejects = plain["rejects/A/rejects-verify1-A.ndjson"].decode()
    # Only the line that is not JSON and the duplicates are rejected, as with string ids.
    assert "record needs" not in rejects
