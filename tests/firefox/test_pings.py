"""Generated Firefox-shaped pings and the check of the database against what they planted."""

from __future__ import annotations

import json

from prio_processor.dataconfig import Batch
from prio_processor.engine import keys
from prio_processor.firefox import pings, staging
from prio_processor.storage import location

DATE = "2019-06-26"
CONFIG = [Batch("m.one-0", 3), Batch("m.one-1", 2), Batch("m.two-0", 4)]


def _rows(expected: dict) -> list[dict]:
    rows = []
    for metric, counts in expected["counts"].items():
        for index, count in enumerate(counts):
            error = sum(n for b, n in expected["errors"].items() if b.startswith(metric + "-"))
            rows.append(
                {
                    "batch_id": metric,
                    "index": index,
                    "aggregate": count,
                    "id": f"{metric}-rec",
                    "error": error,
                }
            )
    return rows


def test_generated_pings_stage_as_planned_and_the_check_can_fail(tmp_path):
    _, public_a = keys.generate_keypair()
    _, public_b = keys.generate_keypair()
    sink = location(tmp_path / "sink")
    expected = pings.generate(CONFIG, public_a, public_b, sink, DATE, n_pings=5)
    assert json.loads((tmp_path / "sink" / "expected.json").read_text()) == expected
    assert set(expected["counts"]) == {"m.one", "m.two"}
    assert (
        len(expected["counts"]["m.one"]) == 5 and expected["counts"]["m.one"][0] == 3
    )  # 5 pings, 2 not counted
    assert expected["errors"] == {"m.one-0": 1}

    summary = staging.stage(
        staging.file_pings(sink, DATE, "gcs"), location(tmp_path / "out"), DATE, {b.batch_id for b in CONFIG}
    )
    assert summary.pings == 5 + 4 and summary.duplicates == 1  # 5 pings, a duplicate, 3 bad lines
    assert dict(summary.rejects) == expected["staging_rejects"]
    assert dict(summary.entries) == {"m.one-0": 4, "m.one-1": 5, "m.two-0": 5}

    rows = _rows(expected)
    assert pings.check(expected, rows) == []
    rows[1]["aggregate"] += 1
    rows[-1]["error"] = 3
    problems = pings.check(expected, rows)
    want = rows[1]["aggregate"] - 1
    assert problems == [
        f"metric m.one, origin index 1: {want + 1} != expected {want}",
        "metric m.two: 3 errors, expected 0",
    ]
    assert "metric m.two: no rows" in pings.check(expected, [r for r in rows if r["batch_id"] != "m.two"])
