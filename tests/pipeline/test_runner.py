"""The stage runner without click: part files in, named outputs, rejects where asked, atomic writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from prio_processor.engine.server import Schedule
from prio_processor.pipeline import runner
from prio_processor.pipeline.errors import InputError, SettingsMismatch
from prio_processor.storage import location

from tests_support import vector_server
from vectors import Case, full_chain_cases, read_payloads

PEER = {"A": "B", "B": "A"}
CASE = next(c for c in full_chain_cases() if c.name == "prg-hashed/d_bad_input")


def _split_into_parts(case: Case, server: str, folder: Path) -> Path:
    """The case's shares as a Spark-style folder of two parts with a marker."""
    lines = case.raw_path(server).read_text().splitlines()
    folder.mkdir(parents=True)
    (folder / "part-00000.json").write_text("\n".join(lines[:4]) + "\n")
    (folder / "part-00001.json").write_text("\n".join(lines[4:]) + "\n")
    (folder / "_SUCCESS").write_text("")
    return folder


def test_chain_over_folders_reproduces_the_original(tmp_path):
    servers = {s: vector_server(CASE, s) for s in PEER}
    raw = {s: location(_split_into_parts(CASE, s, tmp_path / "raw" / s)) for s in PEER}
    out = location(tmp_path / "out")
    rejects = location(tmp_path / "rejects")
    tallies = {}
    for stage, prev in (("verify1", None), ("verify2", "verify1"), ("aggregate", "verify2")):
        for s in PEER:
            inputs = runner.Inputs(raw[s])
            if prev:
                inputs = runner.Inputs(raw[s], out.join(s, prev), out.join(PEER[s], prev))
            tallies[stage, s], _ = runner.run_stage(
                stage, servers[s], inputs, out.join(s, stage), rejects, schedule=Schedule.SEQUENTIAL
            )
    for s in PEER:
        for stage in ("verify1", "verify2"):
            folder = tmp_path / "out" / s / stage
            assert sorted(p.name for p in folder.iterdir()) == ["part-00000.json", "part-00001.json"]
            produced: dict[str, str] = {}
            for part in sorted(folder.iterdir()):
                produced.update(read_payloads(part))
            assert produced == read_payloads(CASE.intermediate(s, stage))
        counts = CASE.manifest["cli_counts"][s]
        for stage in ("verify1", "verify2", "aggregate"):
            assert (tallies[stage, s].errors, tallies[stage, s].total) == (
                counts[stage]["error"],
                counts[stage]["total"],
            )
            listed = (tmp_path / "rejects" / f"rejects-{stage}-{s}.ndjson").read_text().splitlines()
            assert len(listed) == counts[stage]["error"]
        assert (tmp_path / "out" / s / "aggregate" / "aggregate.ndjson").exists()
    config = CASE.config
    for s in PEER:
        _, record = runner.run_stage(
            "publish",
            (config, s),
            runner.Inputs(internal=out.join(s, "aggregate"), external=out.join(PEER[s], "aggregate")),
            out.join(s, "publish"),
        )
        assert record is not None
        assert record["payload"] == CASE.manifest["expected_published_payload"]
        assert json.loads((tmp_path / "out" / s / "publish" / "publish.ndjson").read_text()) == record


def test_missing_inputs_and_file_outputs_are_input_errors(tmp_path):
    server = vector_server(CASE, "A")
    with pytest.raises(InputError, match="does not exist"):
        runner.run_stage(
            "verify1", server, runner.Inputs(location(tmp_path / "nope")), location(tmp_path / "o")
        )
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "_SUCCESS").write_text("")
    with pytest.raises(InputError, match="holds no data files"):
        runner.run_stage(
            "verify1", server, runner.Inputs(location(tmp_path / "empty")), location(tmp_path / "o")
        )
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="is a file, expected a folder"):
        runner.run_stage(
            "verify1", server, runner.Inputs(location(CASE.raw_path("A"))), location(tmp_path / "file")
        )


def test_a_refused_stage_writes_nothing(tmp_path):
    """verify2 against a partner of another schedule: refused before any output or rejects file."""
    servers = {s: vector_server(CASE, s) for s in PEER}
    out = location(tmp_path / "out")
    for s, schedule in (("A", Schedule.SEQUENTIAL), ("B", Schedule.FIXED)):
        runner.run_stage(
            "verify1",
            servers[s],
            runner.Inputs(location(CASE.raw_path(s))),
            out.join(s, "verify1"),
            schedule=schedule,
        )
    inputs = runner.Inputs(location(CASE.raw_path("A")), out.join("A", "verify1"), out.join("B", "verify1"))
    with pytest.raises(SettingsMismatch, match="--evaluation-point differs"):
        runner.run_stage(
            "verify2", servers["A"], inputs, out.join("A", "verify2"), location(tmp_path / "rejects")
        )
    assert not (tmp_path / "out" / "A" / "verify2").exists() or not any(
        (tmp_path / "out" / "A" / "verify2").iterdir()
    )
    assert not (tmp_path / "rejects").exists() or not any((tmp_path / "rejects").iterdir())


def test_rerun_gives_the_same_files(tmp_path):
    server = vector_server(CASE, "A")
    raw = location(_split_into_parts(CASE, "A", tmp_path / "raw"))
    first = tmp_path / "first"
    runner.run_stage("verify1", server, runner.Inputs(raw), location(first), location(tmp_path / "r1"))
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    runner.run_stage("verify1", server, runner.Inputs(raw), location(first), location(tmp_path / "r1"))
    for part in copy.iterdir():
        assert (first / part.name).read_bytes() == part.read_bytes()
