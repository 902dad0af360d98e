"""Published totals mapped to origins: the original's mapping, and errors where it dropped or cut."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

from click.testing import CliRunner

from prio_processor.dataconfig import Batch
from prio_processor.firefox import indexing
from prio_processor.firefox.commands import entry_point
from prio_processor.storage import location

from tests_support import VENV_BIN, script_env

DATE = "2019-06-26"
ORIGINS = [{"name": ch, "hash": f"h-{ch}", "index": i} for i, ch in enumerate("abcde")]
CONFIG = [Batch("test-0", 3), Batch("test-1", 2)]
CONTENT = Path(__file__).resolve().parents[2] / "config" / "content.json"


def publish(folder: Path, batch_id: str, payload: list[int], error: int = 0, total: int = 10) -> None:
    target = folder / f"batch_id={batch_id}"
    target.mkdir(parents=True)
    record = {
        "id": str(uuid.uuid4()),
        "timestamp": "2019-06-26T10:00:00",
        "payload": payload,
        "error": error,
        "total": total,
    }
    (target / "publish.ndjson").write_text(json.dumps(record) + "\n")


def test_original_mapping(tmp_path):
    publish(tmp_path, "test-0", [10, 11, 12], error=1, total=7)
    publish(tmp_path, "test-1", [13, 14])
    result = indexing.index(location(tmp_path), CONFIG, ORIGINS, DATE)
    assert result.errors == []
    assert [(r["batch_id"], r["origin"], r["hash"], r["index"], r["aggregate"]) for r in result.rows] == [
        ("test", "a", "h-a", 0, 10),
        ("test", "b", "h-b", 1, 11),
        ("test", "c", "h-c", 2, 12),
        ("test", "d", "h-d", 3, 13),
        ("test", "e", "h-e", 4, 14),
    ]
    assert {(r["error"], r["total"]) for r in result.rows[:3]} == {(1, 7)}
    assert {r["submission_date"] for r in result.rows} == {DATE}
    assert set(result.rows[0]) == {
        "id",
        "timestamp",
        "batch_id",
        "origin",
        "hash",
        "index",
        "aggregate",
        "error",
        "total",
        "submission_date",
    }


def test_hyphenated_metric_names_split_at_the_last_hyphen(tmp_path):
    config = [Batch("content.blocking-x-0", 2), Batch("content.blocking-x-1", 3)]
    publish(tmp_path, "content.blocking-x-1", [7, 8, 9])
    rows = indexing.index(location(tmp_path), config, ORIGINS, DATE).rows
    assert [(r["batch_id"], r["index"], r["aggregate"]) for r in rows] == [
        ("content.blocking-x", 2, 7),
        ("content.blocking-x", 3, 8),
        ("content.blocking-x", 4, 9),
    ]


def test_unknown_batch_and_too_long_vectors_are_named_errors(tmp_path):
    publish(tmp_path, "test-0", [1, 2, 3])
    publish(tmp_path, "other-0", [1])
    publish(tmp_path, "long-0", [1, 2])
    publish(tmp_path, "long-1", [1, 2, 3, 4])
    publish(tmp_path, "short-0", [1])
    config = CONFIG + [Batch("long-0", 2), Batch("long-1", 4), Batch("short-0", 2)]
    result = indexing.index(location(tmp_path), config, ORIGINS, DATE)
    reasons = {e.batch_id: e.reason for e in result.errors}
    assert reasons == {"other-0": "unknown_batch", "long-1": "too_long", "short-0": "wrong_length"}
    assert all(e.batch_id in e.detail for e in result.errors)
    assert {r["batch_id"] for r in result.rows} == {"test", "long"}
    assert len(result.rows) == 3 + 2


def test_index_command(tmp_path):
    published = tmp_path / "bucket" / DATE / "processed" / "publish"
    publish(published, "content.blocking_blocked-0", list(range(2046)), error=2, total=40)
    publish(published, "content.blocking_blocked-1", list(range(2046, 2046 + 441)))
    publish(published, "missing-0", [1, 2])
    (published / "_SUCCESS").write_text("")
    out = tmp_path / "indexed"
    listed = tmp_path / "rejects.ndjson"
    args = ["index", "--input", str(published), "--output", str(out), "--config", str(CONTENT)]
    result = CliRunner().invoke(entry_point, [*args, "--rejects", str(listed)])
    assert result.exit_code == 0, result.output
    assert result.stdout == "1 errors out of 3 total\n"
    assert f"index {DATE}: unknown_batch: batch missing-0 is not in the data config" in result.stderr
    assert f"index {DATE}: 2487 rows for 2 batches" in result.stderr
    rows = [json.loads(line) for line in (out / "part-00000.json").read_text().splitlines()]
    assert len(rows) == 2487
    assert all(r["index"] == r["aggregate"] for r in rows)
    assert rows[-1]["origin"] == "__UNKNOWN__" and rows[0]["origin"] == "PAGELOAD"
    assert {r["submission_date"] for r in rows} == {DATE}
    rejects = [json.loads(line) for line in listed.read_text().splitlines()]
    assert [(r["batch_id"], r["reason"]) for r in rejects] == [("missing-0", "unknown_batch")]
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "part-00000.json"]

    # A re-run replaces the output; rejects inside it are refused before anything is written.
    again = CliRunner().invoke(entry_point, [*args, "--rejects", str(out)])
    assert again.exit_code == 2 and again.stderr.count("\n") == 1
    assert "--rejects must not be inside --output" in again.stderr
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "part-00000.json"]


def test_index_as_the_original_insert_calls_it(tmp_path):
    """The original's bin/insert: `index --input DATA --output OUT --config C --origins O` on a
    temporary folder of batch_id=*/part-*.json as Spark wrote them, no --date and no date in the path:
    the rows are those of a dated run without submission_date, as the original's were."""
    data = tmp_path / "data-Xb3"
    for batch_id, payload in (("test-0", [10, 11, 12]), ("test-1", [13, 14])):
        folder = data / f"batch_id={batch_id}"
        folder.mkdir(parents=True)
        record = {"id": batch_id, "timestamp": f"{DATE}T10:00:00", "payload": payload, "error": 0, "total": 9}
        (folder / f"part-00000-{uuid.uuid4()}-c000.json").write_text(json.dumps(record) + "\n")
        (folder / "_SUCCESS").write_text("")
    config, origins = tmp_path / "config.json", tmp_path / "origins.json"
    config.write_text(json.dumps([{"batch_id": b.batch_id, "n_data": b.n_data} for b in CONFIG]))
    origins.write_text(json.dumps(ORIGINS))
    out = tmp_path / "data-Yq1"
    command = [str(VENV_BIN / "prio-processor"), "index", "--input", str(data), "--output", str(out)]
    result = subprocess.run(
        [*command, "--config", str(config), "--origins", str(origins)],
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "0 errors out of 2 total\n"
    assert "index (no submission date): 5 rows for 2 batches" in result.stderr
    rows = [json.loads(line) for line in (out / "part-00000.json").read_text().splitlines()]
    dated = indexing.index(location(data), CONFIG, ORIGINS, DATE).rows
    assert rows == [{k: v for k, v in row.items() if k != "submission_date"} for row in dated]
    assert [(r["origin"], r["aggregate"]) for r in rows] == list(zip("abcde", [10, 11, 12, 13, 14]))
    assert all("submission_date" not in r for r in rows)

    # A date in the path, or --date, still dates the rows.
    in_dated_path = tmp_path / DATE / "processed" / "publish"
    shutil.copytree(data, in_dated_path)
    for extra_args, source in (([], in_dated_path), (["--date", "2019-07-01"], data)):
        args = ["index", "--input", str(source), "--output", str(out), "--config", str(config)]
        ran = CliRunner().invoke(entry_point, [*args, "--origins", str(origins), *extra_args])
        assert ran.exit_code == 0, ran.output
        written = (out / "part-00000.json").read_text().splitlines()
        dates = {json.loads(line)["submission_date"] for line in written}
        assert dates == {extra_args[-1] if extra_args else DATE}
