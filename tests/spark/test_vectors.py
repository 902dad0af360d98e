"""prio-spark on the vector cases: the original Spark pipeline's records, and the same results as `prio`."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from .support import Chain, payloads, read_folder
from vectors import cases, read_payloads

pytestmark = [pytest.mark.spark, pytest.mark.slow]

STAGES = ("verify1", "verify2", "aggregate", "publish")


def _case(name: str):
    return next(c for c in cases() if c.name == name)


def _only_parts(folder) -> None:
    names = sorted(p.name for p in folder.iterdir())
    assert "_SUCCESS" in names
    assert all(n == "_SUCCESS" or (n.startswith("part-") and n.endswith(".json")) for n in names), names


def _by_id(folder) -> dict[str, dict]:
    return {r["id"]: r for r in read_folder(folder)}


def test_fixed_point_case_is_the_original_spark_pipeline(spark, tmp_path):
    case = _case("prg-hashed/e_fixed_point")
    chain = Chain(case, tmp_path / "spark", spark_cli=True)
    reference = Chain(case, tmp_path / "prio", spark_cli=False)
    outputs, reference_out = chain.all(), reference.all()
    for server in "AB":
        for stage in ("verify1", "verify2"):
            made = read_payloads(case.intermediate(server, stage, fixed=True))
            assert payloads(chain.path(server, stage)) == made
            # Whole records, digests and settings stamps included, as `prio --evaluation-point fixed`.
            records = _by_id(chain.path(server, stage))
            assert records == _by_id(reference.path(server, stage))
            assert all(r["prio_settings"]["evaluation_point"] == "fixed" for r in records.values())
            _only_parts(chain.path(server, stage))
        [aggregate] = read_folder(chain.path(server, "aggregate"))
        [original] = read_folder(case.intermediate(server, "aggregate", fixed=True))
        assert aggregate["payload"] == original["payload"]
        assert (aggregate["error"], aggregate["total"]) == (original["error"], original["total"])
        assert [aggregate] == read_folder(reference.path(server, "aggregate"))
        [published] = read_folder(chain.path(server, "publish"))
        expected = case.processed(server, fixed=True)
        assert published["payload"] == expected["payload"]
        assert (published["error"], published["total"]) == (original["error"], original["total"]) == (0, 20)
        assert list(published) == ["id", "timestamp", "payload", "error", "total"]
        for stage in STAGES[:3]:
            assert outputs[(stage, server)].splitlines() == [f"Running {stage}", "0 errors out of 20 total"]
            assert outputs[(stage, server)] == reference_out[(stage, server)]
            assert not chain.rejects(server, stage).read_text()
        assert outputs[("publish", server)] == reference_out[("publish", server)] == "Running publish\n"


def _rejected(path) -> Counter:
    return Counter((r["id"], r["reason"]) for r in read_folder(path)) if path.exists() else Counter()


@pytest.mark.parametrize("name", ["prg-hashed/d_bad_input", "prg-raw/d_bad_input"])
def test_same_results_as_prio_fixed(spark, tmp_path, name):
    case = _case(name)
    ours = Chain(case, tmp_path / "spark", spark_cli=True)
    reference = Chain(case, tmp_path / "prio", spark_cli=False)
    ours_out, reference_out = ours.all(), reference.all()
    for server in "AB":
        for stage in ("verify1", "verify2"):
            assert _by_id(ours.path(server, stage)) == _by_id(reference.path(server, stage))
        for stage in ("verify1", "verify2", "aggregate"):
            assert _rejected(ours.rejects(server, stage)) == _rejected(reference.rejects(server, stage))
            assert ours_out[(stage, server)] == reference_out[(stage, server)]
        [aggregate] = read_folder(ours.path(server, "aggregate"))
        [expected] = read_folder(reference.path(server, "aggregate"))
        assert aggregate == expected
        assert aggregate["error"] > 0
        [published] = read_folder(ours.path(server, "publish"))
        [expected] = read_folder(reference.path(server, "publish"))
        assert published["payload"] == expected["payload"] == case.manifest["expected_published_payload"]
        assert (published["error"], published["total"]) == (expected["error"], expected["total"])


def test_integer_ids_as_staging_writes_them_give_what_prio_gives(spark, tmp_path):
    """Staging (as the original's Spark staging did) numbers a batch's rows 1..n: the Spark stages
    join them as `prio` does and publish the case's counts."""
    case = _case("prg-hashed/e_fixed_point")
    records = {s: read_folder(case.raw_path(s)) for s in "AB"}
    numbers = {record_id: k + 1 for k, record_id in enumerate(sorted({r["id"] for r in records["A"]}))}
    inputs = {}
    for s in "AB":
        inputs[s] = tmp_path / "raw" / s / "part-00000.json"
        inputs[s].parent.mkdir(parents=True)
        lines = [json.dumps({**r, "id": numbers[r["id"]]}) for r in records[s]]
        inputs[s].write_text("".join(line + "\n" for line in lines))
    assert '{"id": 1,' in inputs["A"].read_text()
    ours = Chain(case, tmp_path / "spark", spark_cli=True, inputs=inputs)
    reference = Chain(case, tmp_path / "prio", spark_cli=False, inputs=inputs)
    ours_out, reference_out = ours.all(), reference.all()
    for server in "AB":
        for stage in ("verify1", "verify2"):
            assert _by_id(ours.path(server, stage)) == _by_id(reference.path(server, stage))
            assert set(_by_id(ours.path(server, stage))) == {str(n) for n in numbers.values()}
        [published] = read_folder(ours.path(server, "publish"))
        assert published["payload"] == case.processed(server, fixed=True)["payload"]
        assert (published["error"], published["total"]) == (0, 20)
        assert ours_out == reference_out
