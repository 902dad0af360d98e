"""prio-spark's options: the same names and environment variables as prio; configuration errors exit 2."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from prio_processor.spark.commands import entry_point

from .support import payloads
from vectors import cases, read_payloads

CASE = next(c for c in cases() if c.name == "prg-hashed/e_fixed_point")


def _env(tmp_path, server: str = "A") -> dict[str, str]:
    """A server's whole configuration as environment variables, secrets in files."""
    key_file, seed_file = tmp_path / "key", tmp_path / "seed"
    key_file.write_text(CASE.keys(server)["private_key"] + "\n")
    seed_file.write_text(CASE.shared_seed_b64 + "\n")
    peer = "B" if server == "A" else "A"
    return {"N_DATA": str(CASE.settings["n_data"]), "BATCH_ID": CASE.settings["batch_id"],
            "SERVER_ID": server,
            "PRIVATE_KEY_FILE": str(key_file), "SHARED_SECRET_FILE": str(seed_file),
            "PUBLIC_KEY_HEX_INTERNAL": CASE.keys(server)["public_key"],
            "PUBLIC_KEY_HEX_EXTERNAL": CASE.keys(peer)["public_key"], "PRG_KEYING": "hashed",
            "EVALUATION_POINT": "fixed", "INPUT": str(CASE.raw_path(server)), "OUTPUT": str(tmp_path / "out")}


@pytest.mark.spark
def test_configuration_from_environment_and_secret_files(spark, tmp_path):
    result = CliRunner().invoke(entry_point, ["verify1"], env=_env(tmp_path))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["Running verify1", "0 errors out of 20 total"]
    assert payloads(tmp_path / "out") == read_payloads(CASE.intermediate("A", "verify1", fixed=True))


def test_sequential_schedule_is_a_configuration_error(tmp_path):
    for extra, env in (([], {"EVALUATION_POINT": "sequential"}), (["--evaluation-point", "sequential"], {})):
        result = CliRunner().invoke(entry_point, ["verify2", "--input-internal", "x", "--input-external", "y",
                                                  *extra], env={**_env(tmp_path), **env})
        assert result.exit_code == 2
        assert "--evaluation-point fixed" in result.output
    assert not (tmp_path / "out").exists()


def test_bad_secrets_exit_2_without_showing_them(tmp_path):
    env = _env(tmp_path)
    secret = "c2hvcnQtc2VjcmV0"  # 12 bytes
    (tmp_path / "seed").write_text(secret)
    result = CliRunner().invoke(entry_point, ["verify1"], env=env)
    assert result.exit_code == 2 and "bad shared secret" in result.output and secret not in result.output
    (tmp_path / "seed").write_text(CASE.shared_seed_b64)
    key = CASE.keys("A")["private_key"]
    result = CliRunner().invoke(entry_point, ["verify1", "--private-key-hex", key], env=env)
    assert result.exit_code == 2 and "exactly one of --private-key-hex or --private-key-file" in result.output
    assert key not in result.output and key.lower() not in result.output


@pytest.mark.spark
def test_missing_input_exits_2(spark, tmp_path):
    env = {**_env(tmp_path), "INPUT": str(tmp_path / "nowhere")}
    result = CliRunner().invoke(entry_point, ["verify1"], env=env)
    assert result.exit_code == 2
    assert "--input: cannot read" in result.output
