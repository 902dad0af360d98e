"""The integration check names the batch and index of every mismatch."""

from __future__ import annotations

import json

from prio_processor import integration
from prio_processor.storage import location

BATCHES = [integration.Batch("b-0", 6), integration.Batch("b-1", 4), integration.Batch("b-2", 3)]


def _publish(root, server, batch, payload):
    folder = root / server / f"batch_id={batch}"
    folder.mkdir(parents=True)
    (folder / "publish.ndjson").write_text(json.dumps({"payload": payload}) + "\n")


def test_expected_counts_and_dropped_batches():
    assert integration.payload(6) == [1, 0, 0, 1, 0, 1]
    assert integration.expected_counts(BATCHES[0], 10) == [9, 0, 0, 9, 0, 9]
    assert [b.batch_id for b in integration.kept_batches(BATCHES, 1)] == ["b-0", "b-1"]


def test_check_reports_batch_and_index(tmp_path):
    for server in "AB":
        _publish(tmp_path, server, "b-0", [9, 0, 0, 9, 0, 9])
        _publish(tmp_path, server, "b-1", [9, 0, 0, 9] if server == "A" else [9, 0, 1, 9])
    a, b = location(tmp_path / "A"), location(tmp_path / "B")
    problems = integration.check(BATCHES, a, b, n_rows=10, n_drop_batch=1)
    assert problems == ["batch b-1: server B, index 2: 1 != expected 0"]
    _publish(tmp_path, "A", "b-2", [1, 1, 1])
    problems = integration.check(BATCHES, a, b, n_rows=10, n_drop_batch=1)
    assert "batch b-2: server A published a batch that had no data" in problems
    assert integration.check(BATCHES[:1], a, b, n_rows=10) == []
