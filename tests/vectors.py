"""Loading the cases under tests/vectors/ (made by libprio 1.x and the original CLI)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from prio_processor.engine import keys
from prio_processor.engine.config import Config
from prio_processor.engine.prg import PrgKeying

VECTORS = Path(__file__).resolve().parent / "vectors"


def _ndjson(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class Case:
    path: Path

    @property
    def name(self) -> str:
        return str(self.path.relative_to(VECTORS))

    @cached_property
    def manifest(self) -> dict:
        file = self.path / "manifest.json"
        return json.loads(file.read_text()) if file.exists() else {}

    @property
    def keying(self) -> PrgKeying:
        return PrgKeying.HASHED if self.path.parent.name == "prg-hashed" else PrgKeying.RAW

    @cached_property
    def settings(self) -> dict:
        return json.loads((self.path / "config.json").read_text())

    def keys(self, server: str) -> dict:
        return json.loads((self.path / f"server_{server.lower()}_keys.json").read_text())

    @property
    def shared_seed_b64(self) -> str:
        return json.loads((self.path / "shared_seed.json").read_text())["shared_seed"]

    @property
    def shared_seed(self) -> bytes:
        return base64.b64decode(self.shared_seed_b64)

    @cached_property
    def config(self) -> Config:
        return Config(
            self.settings["n_data"],
            keys.public_key_from_hex(self.keys("A")["public_key"]),
            keys.public_key_from_hex(self.keys("B")["public_key"]),
            self.settings["batch_id"].encode(),
        )

    def raw(self, server: str) -> list[dict]:
        return _ndjson(self.path / f"server_{server.lower()}" / "raw" / "data.ndjson")

    def raw_path(self, server: str) -> Path:
        return self.path / f"server_{server.lower()}" / "raw" / "data.ndjson"

    def intermediate(self, server: str, stage: str, fixed: bool = False) -> Path:
        folder = "intermediate_fixed" if fixed else "intermediate"
        return self.path / f"server_{server.lower()}" / folder / "internal" / stage / "data.ndjson"

    def has_stage(self, stage: str, fixed: bool = False) -> bool:
        return self.intermediate("A", stage, fixed).exists()

    def processed(self, server: str, fixed: bool = False) -> dict:
        folder = "processed_fixed" if fixed else "processed"
        return _ndjson(self.path / f"server_{server.lower()}" / folder / "data.ndjson")[0]

    @property
    def schedules(self) -> list[str]:
        return ["sequential", "fixed"] if self.has_stage("verify1", fixed=True) else ["sequential"]


def cases() -> list[Case]:
    found = {p.parent for p in VECTORS.glob("*/*/config.json")}
    if not found:
        # An empty list would turn every vector test into a silent skip.
        raise FileNotFoundError(f"no test vectors under {VECTORS}")
    return [Case(p) for p in sorted(found | {VECTORS / "fixture-n5"})]


def full_chain_cases() -> list[Case]:
    """Cases for which the original ran every stage."""
    return [c for c in cases() if c.has_stage("aggregate")]


def read_payloads(path: Path) -> dict[str, str]:
    return {r["id"]: r["payload"] for r in _ndjson(path)}
