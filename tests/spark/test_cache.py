"""prio-spark's --cache: verify2 and aggregate read verify1's authenticated rows instead of the
shares, with the same outputs as `prio --cache`; a damaged cache is noticed and the shares read."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .support import Chain, read_folder
from vectors import cases

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _case(name: str):
    return next(c for c in cases() if c.name == name)


def _by_id(folder: Path) -> dict[str, dict]:
    return {r["id"]: r for r in read_folder(folder)}


def _rejected(path: Path) -> Counter:
    return Counter((r["id"], r["reason"], r.get("detail")) for r in read_folder(path)) if path.exists() \
        else Counter()


def _same_as_prio(ours: Chain, reference: Chain, ours_out: dict, reference_out: dict) -> None:
    for server in "AB":
        for stage in ("verify1", "verify2"):
            assert _by_id(ours.path(server, stage)) == _by_id(reference.path(server, stage))
        for stage in ("verify1", "verify2", "aggregate"):
            assert _rejected(ours.rejects(server, stage)) == _rejected(reference.rejects(server, stage))
            assert ours_out[(stage, server)] == reference_out[(stage, server)]
        [aggregate] = read_folder(ours.path(server, "aggregate"))
        [expected] = read_folder(reference.path(server, "aggregate"))
        assert aggregate == expected
        [published] = read_folder(ours.path(server, "publish"))
        [reference_published] = read_folder(reference.path(server, "publish"))
        assert [published[k] for k in ("payload", "error", "total")] == \
            [reference_published[k] for k in ("payload", "error", "total")]


def _all(chain: Chain) -> tuple[dict, list[str]]:
    """Every stage's stdout, and the stderr lines that speak of the cache."""
    out, notices = {}, []
    for stage in ("verify1", "verify2", "aggregate", "publish"):
        for server in "AB":
            result = chain.stage(stage, server)
            out[(stage, server)] = result.stdout
            notices += [line for line in result.stderr.splitlines() if "cache" in line]
    return out, notices


@pytest.mark.parametrize("name", ["prg-hashed/d_bad_input", "prg-raw/d_bad_input"])
def test_cache_gives_what_prio_gives(spark, tmp_path, name):
    """Rejected shares, invalid proofs (aggregate corrects verify1's sums) and bad lines included."""
    case = _case(name)
    ours = Chain(case, tmp_path / "spark", spark_cli=True, cache=True)
    reference = Chain(case, tmp_path / "prio", spark_cli=False, cache=True)
    ours_out, notices = _all(ours)
    reference_out, _ = _all(reference)
    assert notices == []  # the cache was used throughout
    for server in "AB":
        manifest = json.loads((ours.cache_path(server) / "_manifest.json").read_text())
        assert manifest["format"] == "spark/1" and manifest["rows"] > 0
    _same_as_prio(ours, reference, ours_out, reference_out)


def test_repeated_ids_through_the_cache(spark, tmp_path):
    """An id on several lines: verify1 takes its exact plan and says so in the manifest; verify2
    and aggregate keep the lines of an id in input order, as `prio`."""
    case = _case("prg-hashed/e_fixed_point")
    inputs = {}
    for server in "AB":
        lines = [line for line in case.raw_path(server).read_text().splitlines() if line.strip()]
        inputs[server] = tmp_path / "raw" / server / "part-00000.json"
        inputs[server].parent.mkdir(parents=True)
        # The third client twice more: once as it was, once with the second client's share.
        second = json.loads(lines[1])
        repeated = json.dumps({**second, "id": json.loads(lines[2])["id"]})
        inputs[server].write_text("\n".join(lines + [lines[2], repeated]) + "\n")
    ours = Chain(case, tmp_path / "spark", spark_cli=True, inputs=inputs, cache=True)
    reference = Chain(case, tmp_path / "prio", spark_cli=False, inputs=inputs, cache=True)
    ours_out, notices = _all(ours)
    reference_out, _ = _all(reference)
    assert notices == []
    assert json.loads((ours.cache_path("A") / "_manifest.json").read_text())["repeated"] is True
    assert ours_out[("verify1", "A")].splitlines()[-1] == "2 errors out of 22 total"
    _same_as_prio(ours, reference, ours_out, reference_out)


def _flip_a_body(cache: Path) -> None:
    part = next(p for p in sorted(cache.glob("part-*.parquet")) if pq.read_table(p).num_rows)
    table = pq.read_table(part)
    bodies = table.column("body").to_pylist()
    bodies[0] = bytes([bodies[0][0] ^ 1]) + bodies[0][1:]
    pq.write_table(table.set_column(table.schema.get_field_index("body"), "body",
                                    [bodies]), part)


def _drop_a_file(cache: Path) -> None:
    next(p for p in sorted(cache.glob("part-*.parquet")) if pq.read_table(p).num_rows).unlink()


def _copy_a_file(cache: Path) -> None:
    part = next(p for p in sorted(cache.glob("part-*.parquet")) if pq.read_table(p).num_rows)
    shutil.copy(part, part.with_name("part-99999-copy.parquet"))


def _garble_a_file(cache: Path) -> None:
    part = sorted(cache.glob("part-*.parquet"))[0]
    part.write_bytes(b"PAR1" + b"\0" * 64 + part.read_bytes()[68:])


def _alter_the_manifest(cache: Path) -> None:
    manifest = json.loads((cache / "_manifest.json").read_text())
    manifest["rows"] += 1
    (cache / "_manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage, said", [
    (_flip_a_body, "does not authenticate"),
    (_drop_a_file, "missing or repeated"),
    (_copy_a_file, "missing or repeated"),
    (_garble_a_file, "cannot be read"),
    (_alter_the_manifest, "not using the cache"),
])
def test_a_damaged_cache_is_noticed_and_the_shares_read(spark, tmp_path, damage, said):
    case = _case("prg-hashed/d_bad_input")
    ours = Chain(case, tmp_path / "spark", spark_cli=True, cache=True)
    reference = Chain(case, tmp_path / "prio", spark_cli=False)
    for server in "AB":
        ours.stage("verify1", server)
    damage(ours.cache_path("A"))
    notices = []
    for stage in ("verify2", "aggregate", "publish"):
        for server in "AB":
            result = ours.stage(stage, server)
            notices += [(stage, server, line) for line in result.stderr.splitlines() if "cache" in line]
    assert [(stage, server) for stage, server, _ in notices] == [("verify2", "A"), ("aggregate", "A")]
    assert all(said in line and f"batch {case.settings['batch_id']}" in line and "reading the shares" in line
               for _, _, line in notices), notices
    reference_out = reference.all()
    for server in "AB":
        for stage in ("verify2", "aggregate"):
            assert _rejected(ours.rejects(server, stage)) == _rejected(reference.rejects(server, stage))
        assert _by_id(ours.path(server, "verify2")) == _by_id(reference.path(server, "verify2"))
        assert read_folder(ours.path(server, "aggregate")) == read_folder(reference.path(server, "aggregate"))
    assert reference_out[("publish", "A")] == "Running publish\n"
