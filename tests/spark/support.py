"""Reading Spark output folders, and both servers' chains by `prio-spark` or by `prio`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def read_folder(folder: Path) -> list[dict]:
    """The records of a folder of JSON-lines part files (or one file)."""
    files = [folder] if folder.is_file() else sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(("_", ".")))
    return [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]


def payloads(folder: Path) -> dict[str, str]:
    return {r["id"]: r["payload"] for r in read_folder(folder)}


class Chain:
    """Both servers' stages of a vector case, run by `prio-spark` or by `prio --evaluation-point fixed`."""

    def __init__(self, case: Any, root: Path, spark_cli: bool,
                 inputs: Mapping[str, Path | str] | None = None, cache: bool = False) -> None:
        from click.testing import CliRunner

        from prio_processor.cli import entry_point as prio_cli
        from prio_processor.spark.commands import entry_point as spark_cli_group

        self.case = case
        self.root = root
        self.spark_cli = spark_cli
        self.inputs: Mapping[str, Path | str] = inputs or {s: case.raw_path(s) for s in "AB"}
        self._group = spark_cli_group if spark_cli else prio_cli
        self._runner = CliRunner()
        self.cache = cache  # verify1, verify2 and aggregate keep and read a cache per server

    def path(self, server: str, stage: str) -> Path:
        return self.root / server / stage

    def cache_path(self, server: str) -> Path:
        return self.root / server / "cache"

    def rejects(self, server: str, stage: str) -> Path:
        """The rejects file both tools write into the --rejects folder."""
        return self.root / server / "rejects" / f"rejects-{stage}-{server}.ndjson"

    def common(self, server: str, stage: str) -> list[str]:
        own, peer = self.case.keys(server), self.case.keys("B" if server == "A" else "A")
        args = ["--n-data", str(self.case.settings["n_data"]), "--batch-id", self.case.settings["batch_id"],
                "--server-id", server, "--public-key-hex-internal", own["public_key"],
                "--public-key-hex-external", peer["public_key"]]
        if stage == "publish":
            return args
        return args + ["--private-key-hex", own["private_key"], "--shared-secret", self.case.shared_seed_b64,
                       "--prg-keying", self.case.keying.value]

    def run(self, stage: str, server: str, *args: str, expect: int = 0) -> Any:
        extra = ["--evaluation-point", "fixed"] if stage in ("verify1", "verify2") else []
        extra += ["--rejects", str(self.root / server / "rejects")]
        if self.cache and stage in ("verify1", "verify2", "aggregate"):
            extra += ["--cache", str(self.cache_path(server))]
        result = self._runner.invoke(self._group, [stage, *self.common(server, stage), *args, *extra])
        assert result.exit_code == expect, (stage, server, result.output, result.exception)
        return result

    def stage(self, stage: str, server: str) -> Any:
        peer = "B" if server == "A" else "A"
        out = ["--output", str(self.path(server, stage))]
        if stage == "verify1":
            return self.run(stage, server, "--input", str(self.inputs[server]), *out)
        if stage == "publish":
            return self.run(stage, server, "--input-internal", str(self.path(server, "aggregate")),
                            "--input-external", str(self.path(peer, "aggregate")), *out)
        before = {"verify2": "verify1", "aggregate": "verify2"}[stage]
        return self.run(stage, server, "--input", str(self.inputs[server]),
                        "--input-internal", str(self.path(server, before)),
                        "--input-external", str(self.path(peer, before)), *out)

    def all(self) -> dict[tuple[str, str], str]:
        """Every stage for A and B; the stdout of each."""
        return {(stage, server): self.stage(stage, server).stdout
                for stage in ("verify1", "verify2", "aggregate", "publish") for server in "AB"}
