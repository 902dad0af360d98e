"""prio-spark in local mode on gs:// paths without the GCS connector: staged through the storage client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from prio_processor.storage import LocalLocation, location
from prio_processor.storage.ops import list_files, sync

from .support import Chain, read_folder
from vectors import cases

pytestmark = [pytest.mark.spark, pytest.mark.slow]

CASE = next(c for c in cases() if c.name == "prg-hashed/e_fixed_point")


class BucketChain(Chain):
    """The chain of support.Chain with every input, output and rejects list in a bucket."""

    def __init__(self, bucket: str) -> None:
        self.uri = f"gs://{bucket}/chain"
        super().__init__(CASE, Path("unused"), spark_cli=True,
                         inputs={s: f"{self.uri}/{s}/raw" for s in "AB"})

    def path(self, server: str, stage: str) -> Any:
        return f"{self.uri}/{server}/{stage}"

    def run(self, stage: str, server: str, *args: str, expect: int = 0) -> Any:
        from click.testing import CliRunner

        extra = ["--evaluation-point", "fixed"] if stage in ("verify1", "verify2") else []
        extra += ["--rejects", f"{self.uri}/{server}/rejects"]
        result = CliRunner().invoke(self._group, [stage, *self.common(server, stage), *args, *extra])
        assert result.exit_code == expect, (stage, server, result.output, result.exception)
        return result


def _download(uri: str, to: Path) -> Path:
    sync(location(uri), LocalLocation(to))
    return to


def test_a_chain_in_a_bucket_gives_what_it_gives_on_local_folders(spark, gcs, tmp_path):
    bucket = gcs()
    chain = BucketChain(bucket)
    for server in "AB":
        raw = tmp_path / "raw" / server
        raw.mkdir(parents=True)
        (raw / "part-0.json").write_bytes(CASE.raw_path(server).read_bytes())
        sync(LocalLocation(raw), location(f"{chain.uri}/{server}/raw"))
    outputs = chain.all()
    reference = Chain(CASE, tmp_path / "local", spark_cli=True)
    assert outputs == reference.all()
    for server in "AB":
        for stage in ("verify1", "verify2", "aggregate", "publish"):
            # Data files and a _SUCCESS marker, as Spark writes a folder; no scratch files.
            names = list_files(location(chain.path(server, stage)))
            assert "_SUCCESS" in names and all(n == "_SUCCESS" or n.startswith("part-") for n in names), names
            got = read_folder(_download(chain.path(server, stage), tmp_path / "got" / server / stage))
            want = read_folder(reference.path(server, stage))
            if stage == "publish":  # another publication: its own id and moment
                for record in got + want:
                    del record["id"], record["timestamp"]
            assert got == want, (server, stage)
            assert location(f"{chain.uri}/{server}/rejects/rejects-{stage}-{server}.ndjson").is_file()


def test_a_missing_bucket_input_is_a_configuration_error(spark, gcs, tmp_path):
    chain = BucketChain(gcs())
    result = chain.run("verify1", "A", "--input", f"{chain.uri}/A/raw",
                       "--output", chain.path("A", "verify1"), expect=2)
    assert f"--input: cannot read {chain.uri}/A/raw: there is no such file or folder" in result.output
    assert not location(chain.path("A", "verify1")).is_dir()
