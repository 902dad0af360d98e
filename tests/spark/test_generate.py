"""prio-spark's data commands: encode-shares, generate and generate-integration make shares prio accepts."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from prio_processor.cli import entry_point as prio_cli
from prio_processor.engine import keys
from prio_processor.pipeline.cache import cache_key
from prio_processor.spark import jobs
from prio_processor.spark.adapter import ServerSpec
from prio_processor.spark.cache import Keyed
from prio_processor.spark.commands import entry_point

from .support import read_folder

pytestmark = pytest.mark.spark


def _pair() -> dict[str, tuple[str, str]]:
    pairs = {}
    for server in "AB":
        private, public = keys.generate_keypair()
        pairs[server] = keys.private_key_to_hex(private), keys.public_key_to_hex(public)
    return pairs


def _prio_verify1(pair: dict, server: str, seed: str, shares: Path, out: Path, n_data: int,
                  batch: str) -> str:
    peer = "B" if server == "A" else "A"
    result = CliRunner().invoke(prio_cli, [
        "verify1", "--n-data", str(n_data), "--batch-id", batch, "--server-id", server,
        "--private-key-hex", pair[server][0], "--shared-secret", seed,
        "--public-key-hex-internal", pair[server][1], "--public-key-hex-external", pair[peer][1],
        "--input", str(shares), "--output", str(out)])
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()[-1]


def test_encode_shares_and_generate(spark, tmp_path):
    pair, seed = _pair(), base64.b64encode(os.urandom(16)).decode()
    clients = tmp_path / "clients.ndjson"
    clients.write_text("\n".join([json.dumps({"payload": [1, 0, 1, 1, 0, 0, 1, 0]})] * 6
                                 + ['{"payload": [1, 2]}', "nonsense"]) + "\n")
    keys_args = ["--public-key-hex-internal", pair["A"][1], "--public-key-hex-external", pair["B"][1]]
    result = CliRunner().invoke(entry_point, [
        "encode-shares", "--n-data", "8", "--batch-id", "enc", *keys_args, "--input", str(clients),
        "--output-A", str(tmp_path / "a"), "--output-B", str(tmp_path / "b"),
        "--rejects", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["Running encode shares"]
    assert "batch enc: encode-shares: 2 errors out of 8 total (bad_json: 1, wrong_length: 1)" in result.stderr
    shares_a, shares_b = read_folder(tmp_path / "a"), read_folder(tmp_path / "b")
    assert len(shares_a) == 6 and {r["id"] for r in shares_a} == {r["id"] for r in shares_b}
    rejects = tmp_path / "r" / "rejects-encode-shares.ndjson"
    assert sorted(r["reason"] for r in read_folder(rejects)) == ["bad_json", "wrong_length"]
    for server, shares in (("A", tmp_path / "a"), ("B", tmp_path / "b")):
        line = _prio_verify1(pair, server, seed, shares, tmp_path / f"v-{server}", 8, "enc")
        assert line == "0 errors out of 6 total"

    result = CliRunner().invoke(entry_point, [
        "generate", "--n-data", "12", "--batch-id", "gen", *keys_args, "--output", str(tmp_path / "gen"),
        "--n-rows", "5", "--scale", "2"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["writing 1 partitions"]
    generated = {s: read_folder(tmp_path / "gen" / f"server_id={s}") for s in "ab"}
    assert len(generated["a"]) == 10 and len({r["id"] for r in generated["a"]}) == 10
    assert {r["id"] for r in generated["a"]} == {r["id"] for r in generated["b"]}
    line = _prio_verify1(pair, "A", seed, tmp_path / "gen" / "server_id=a", tmp_path / "gv", 12, "gen")
    assert line == "0 errors out of 10 total"


def test_generate_integration_layout(spark, tmp_path):
    pair = _pair()
    config = tmp_path / "config.json"
    config.write_text(json.dumps([{"batch_id": "one", "n_data": 5}, {"batch_id": "two", "n_data": 9}]))
    result = CliRunner().invoke(entry_point, [
        "generate-integration", "--data-config", str(config), "--public-key-hex-internal", pair["A"][1],
        "--public-key-hex-external", pair["B"][1], "--output", str(tmp_path / "out"), "--n-rows", "4",
        "--n-drop-batch", "1"])
    assert result.exit_code == 0, result.output
    for server in "ab":
        folder = tmp_path / "out" / f"server_id={server}"
        assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["batch_id=bad-id", "batch_id=one"]
        assert len(read_folder(folder / "batch_id=one")) == 4
        assert len(read_folder(folder / "batch_id=bad-id")) == 4


def test_generate_integration_defaults_to_the_shipped_test_small_config(spark, tmp_path, monkeypatch):
    """As the original: without --data-config (or DATA_CONFIG), config/test-small.json, from any folder."""
    pair = _pair()
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(entry_point, [
        "generate-integration", "--public-key-hex-internal", pair["A"][1],
        "--public-key-hex-external", pair["B"][1], "--output", str(tmp_path / "out"), "--n-rows", "2",
        "--n-drop-batch", "1"],
        env={"DATA_CONFIG": None})
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out" / "server_id=a"
    batches = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert batches == ["batch_id=bad-id", "batch_id=test-0", "batch_id=test-1"]
    assert len(read_folder(folder / "batch_id=test-1")) == 2


def test_secrets_stay_out_of_spark_plans(spark, tmp_path):
    pair, seed = _pair(), os.urandom(16)
    shares = tmp_path / "shares.json"
    shares.write_text('{"id": "x", "payload": "AAAA"}\n')
    spec = ServerSpec(8, b"b", "A", pair["A"][1], pair["B"][1], "hashed", pair["A"][0], seed)
    plan = jobs.verify1(spark, spec, str(shares))._jdf.queryExecution().toString()
    assert "verify1_partition" in plan or "MapInArrow" in plan
    for secret in (pair["A"][0], pair["A"][0].lower(), base64.b64encode(seed).decode(), seed.hex()):
        assert secret not in plan
    assert pair["A"][0] not in repr(spec)
    # With a cache, the key its rows are authenticated with stays out too.
    keyed = Keyed(cache_key(spec.server()), "digest")
    plan = jobs.verify1(spark, spec, str(shares), keyed=keyed)._jdf.queryExecution().toString()
    for secret in (pair["A"][0], keyed.key.hex(), repr(keyed.key)):
        assert secret not in plan and secret not in repr(keyed)
