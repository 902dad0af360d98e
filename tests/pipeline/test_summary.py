"""The run summary: each client once under its first reason, FAILED batches, likely causes."""

from __future__ import annotations

import json
from collections import Counter

from prio_processor import summary
from prio_processor.dataconfig import Batch
from prio_processor.storage import location


def test_a_client_counts_once_under_the_first_stage_that_rejected_it():
    verify1 = [{"id": "a", "reason": "wrong_length"}, {"id": None, "reason": "bad_json"}]
    verify2 = [{"id": "a", "reason": "missing_own_packet"}, {"id": "b", "reason": "invalid_proof"}]
    aggregate = [{"id": "a", "reason": "missing_own_packet"}, {"id": "b", "reason": "missing_own_packet"}]
    assert summary.first_reasons([verify1, verify2, aggregate]) == Counter(
        {"wrong_length": 1, "bad_json": 1, "invalid_proof": 1}
    )


def test_a_settings_mismatch_without_stamps_is_called_out_with_its_likely_causes():
    """A partner running the original stamps nothing: every proof fails, and the summary says why."""
    batch = summary.BatchSummary(
        "b", had_data=True, published=location("/p/publish.ndjson"), total=50, errors=50,
        reasons=Counter({"invalid_proof": 50}),
    )
    assert batch.failed
    first, cause = batch.lines()
    assert first == (
        "batch b: FAILED: 0 valid, 50 errors of 50 total (invalid_proof: 50), published /p/publish.ndjson"
    )
    assert cause.startswith("batch b: likely cause: the partner's settings likely differ: EVALUATION_POINT")
    assert "a partner running the original writes no stamps" in cause


def test_a_few_rejects_are_not_blamed_on_settings_and_a_batch_without_data_is_not_failed():
    batch = summary.BatchSummary(
        "b", had_data=True, published=location("/p/publish.ndjson"), total=50, errors=2,
        reasons=Counter({"invalid_proof": 2}),
    )
    assert not batch.failed and batch.likely_cause() is None
    skipped = summary.BatchSummary("c", had_data=False)
    assert not skipped.failed and skipped.lines() == ["batch c: skipped, no data"]
    assert summary.closing_line([batch, skipped]) == (
        "2 batches: 1 published, 0 FAILED, 1 skipped for lack of data"
    )


def test_summarize_reads_the_buckets(tmp_path):
    raw, rejects, published = (tmp_path / name for name in ("raw", "rejects", "published"))
    (raw / "batch_id=x").mkdir(parents=True)
    (raw / "batch_id=x" / "part-0.ndjson").write_text("{}\n")
    (rejects / "verify1" / "batch_id=x").mkdir(parents=True)
    (rejects / "verify1" / "batch_id=x" / "rejects-verify1-A.ndjson").write_text(
        json.dumps({"id": "1", "reason": "decrypt_failed"}) + "\n"
    )
    (published / "batch_id=x").mkdir(parents=True)
    (published / "batch_id=x" / "publish.ndjson").write_text(json.dumps({"total": 3, "error": 1}) + "\n")
    [x, y] = summary.summarize(
        [Batch("x", 3), Batch("y", 3)], location(raw), location(rejects), location(published), {"y": 7}
    )
    assert (x.valid, x.reasons, x.failed) == (2, Counter({"decrypt_failed": 1}), False)
    assert (y.had_data, y.failed) == (False, False)
    assert summary.parse_totals("x=3 y=unknown z=12") == {"x": 3, "z": 12}
