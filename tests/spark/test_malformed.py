"""Bad input never fails a prio-spark job: every record is counted, rejects are listed as by `prio`."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from prio_processor.cli import entry_point as prio_cli

from .support import Chain, payloads, read_folder
from vectors import cases

pytestmark = [pytest.mark.spark, pytest.mark.slow]

BAD_LINES = [
    "not json at all",
    "[1, 2, 3]",
    json.dumps({"id": 5, "payload": "AAAA"}),
    json.dumps({"id": "no-payload"}),
    json.dumps({"id": "bad-base64", "payload": "AAA"}),
    "",
]


def _malformed_inputs(case, root: Path) -> dict[str, Path]:
    """Each server's shares in two part files, with bad lines and repeated ids (one with another share)."""
    folders = {}
    for server in "AB":
        lines = case.raw_path(server).read_text().splitlines()
        first, second, third = (json.loads(line) for line in lines[:3])
        folder = root / f"input-{server}"
        folder.mkdir(parents=True)
        (folder / "part-00000.json").write_text("\n".join(lines[:10] + BAD_LINES) + "\n")
        repeated = [json.dumps(first), json.dumps({"id": second["id"], "payload": third["payload"]})]
        (folder / "part-00001.json").write_text("\n".join(lines[10:] + repeated) + "\n")
        (folder / "_SUCCESS").write_text("")
        folders[server] = folder
    return folders


def _rejected(path: Path) -> Counter:
    return Counter((r["id"], r["reason"]) for r in read_folder(path))


def test_bad_records_are_counted_and_listed_like_prio(spark, tmp_path):
    case = next(c for c in cases() if c.name == "prg-hashed/e_fixed_point")
    inputs = _malformed_inputs(case, tmp_path)
    ours = Chain(case, tmp_path / "spark", spark_cli=True, inputs=inputs)
    reference = Chain(case, tmp_path / "prio", spark_cli=False, inputs=inputs)
    ours_out, reference_out = ours.all(), reference.all()
    for server in "AB":
        assert ours_out[("verify1", server)].splitlines()[-1] == "7 errors out of 27 total"
        for stage in ("verify1", "verify2"):
            assert payloads(ours.path(server, stage)) == payloads(reference.path(server, stage))
            assert _rejected(ours.rejects(server, stage)) == _rejected(reference.rejects(server, stage))
        rejected = read_folder(ours.rejects(server, "verify1"))
        # An integer id is an id (staging numbers rows 1..n): {"id": 5, "payload": "AAAA"} fails to decrypt.
        reasons = {"bad_json": 3, "decrypt_failed": 1, "bad_base64": 1, "duplicate_id": 2}
        assert Counter(r["reason"] for r in rejected) == reasons
        assert all(set(r) == {"id", "reason", "detail"} for r in rejected)
        for stage in ("verify1", "verify2", "aggregate"):
            assert reference_out[(stage, server)].splitlines()[-1].startswith(
                ours_out[(stage, server)].splitlines()[-1])
        [aggregate] = read_folder(ours.path(server, "aggregate"))
        assert aggregate == read_folder(reference.path(server, "aggregate"))[0]
        [published] = read_folder(ours.path(server, "publish"))
        [expected] = read_folder(reference.path(server, "publish"))
        assert published["payload"] == expected["payload"]
        assert (published["error"], published["total"]) == (expected["error"], expected["total"]) == (7, 27)
        names = {p.name for p in ours.path(server, "verify1").iterdir()}
        assert all(n == "_SUCCESS" or n.startswith("part-") for n in names), names


def test_missing_and_unusable_verification_packets_are_counted(spark, tmp_path):
    """The original dropped a share whose partner packet was missing; prio-spark counts it, as prio does."""
    case = next(c for c in cases() if c.name == "prg-hashed/e_fixed_point")
    chain = Chain(case, tmp_path, spark_cli=True)
    for server in "AB":
        chain.stage("verify1", server)
    peer_packets = read_folder(chain.path("B", "verify1"))
    dropped = peer_packets.pop(3)["id"]
    damaged = tmp_path / "B-verify1-damaged"
    damaged.mkdir()
    lines = [json.dumps(r) for r in peer_packets] + ["{not json", json.dumps({"id": "x", "payload": 7})]
    (damaged / "part-00000.json").write_text("\n".join(lines) + "\n")
    args = ["--input", str(case.raw_path("A")), "--input-internal", str(chain.path("A", "verify1")),
            "--input-external", str(damaged)]
    ours = chain.run("verify2", "A", *args, "--output", str(tmp_path / "v2"))
    assert ours.stdout.splitlines()[-1] == "1 errors out of 20 total"
    assert "missing_peer_packet: 1" in ours.stderr and "2 unusable lines" in ours.stderr
    listed = read_folder(chain.rejects("A", "verify2"))
    assert {(r["id"], r["reason"]) for r in listed} == {(dropped, "missing_peer_packet"), (None, "bad_json"),
                                                        ("x", "bad_json")}
    assert dropped not in payloads(tmp_path / "v2") and len(payloads(tmp_path / "v2")) == 19
    reference = CliRunner().invoke(prio_cli, ["verify2", *chain.common("A", "verify2"), *args,
                                              "--evaluation-point", "fixed",
                                              "--output", str(tmp_path / "prio")])
    assert reference.exit_code == 0, reference.output
    assert payloads(tmp_path / "v2") == payloads(tmp_path / "prio")
    shutil.rmtree(damaged)


def test_packets_of_other_settings_exit_2_naming_what_differs_as_prio(spark, tmp_path):
    case = next(c for c in cases() if c.name == "prg-hashed/e_fixed_point")
    ours = Chain(case, tmp_path / "spark", spark_cli=True)
    reference = Chain(case, tmp_path / "prio", spark_cli=False)
    reference.stage("verify1", "A")
    # The partner's verify1 packets, made with the sequential schedule.
    sequential = tmp_path / "B-verify1-sequential"
    made = CliRunner().invoke(prio_cli, ["verify1", *reference.common("B", "verify1"),
                                         "--input", str(case.raw_path("B")), "--output", str(sequential),
                                         "--evaluation-point", "sequential"])
    assert made.exit_code == 0, made.output
    inputs = ["--input", str(case.raw_path("A")), "--input-internal", str(reference.path("A", "verify1")),
              "--input-external", str(sequential)]
    mine = ours.run("verify2", "A", *inputs, "--output", str(tmp_path / "v2-spark"), expect=2)
    theirs = reference.run("verify2", "A", *inputs, "--output", str(tmp_path / "v2-prio"), expect=2)
    differs = "--evaluation-point differs: fixed here, sequential in the partner's verify1 records"
    assert differs in mine.stderr
    assert mine.stderr.splitlines()[-1] == theirs.stderr.splitlines()[-1]
    assert not (tmp_path / "v2-spark").exists()


def test_publish_refuses_too_many_failed_clients_as_prio(spark, tmp_path):
    """--max-error-ratio: 7 of 27 clients failed, more than 0.25 of them: both tools refuse with exit 2."""
    case = next(c for c in cases() if c.name == "prg-hashed/e_fixed_point")
    inputs = _malformed_inputs(case, tmp_path)
    reference = Chain(case, tmp_path / "prio", spark_cli=False, inputs=inputs)
    for stage in ("verify1", "verify2", "aggregate"):
        for server in "AB":
            reference.stage(stage, server)
    ours = Chain(case, tmp_path / "prio", spark_cli=True, inputs=inputs)
    args = ["--input-internal", str(reference.path("A", "aggregate")),
            "--input-external", str(reference.path("B", "aggregate"))]
    mine = ours.run("publish", "A", *args, "--output", str(tmp_path / "p-spark"), "--max-error-ratio", "0.25",
                    expect=2)
    theirs = reference.run("publish", "A", *args, "--output", str(tmp_path / "p-prio"), "--max-error-ratio",
                           "0.25", expect=2)
    assert "refusing to publish: 7 of 27 of this server's clients failed" in mine.stderr
    assert mine.stderr.splitlines()[-1] == theirs.stderr.splitlines()[-1]
    assert not (tmp_path / "p-spark").exists()
    ours.run("publish", "A", *args, "--output", str(tmp_path / "p-spark"), "--max-error-ratio", "0.3")
    [published] = read_folder(tmp_path / "p-spark")
    assert (published["error"], published["total"]) == (7, 27)
