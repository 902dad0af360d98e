"""prio-spark run by hand, as an operator would: progress on stderr, not the JVM's noise."""

from __future__ import annotations

import os
import re

import pytest

from prio_processor import integration
from prio_processor.dataconfig import Batch
from prio_processor.engine import keys
from prio_processor.storage import location

from tests_support import VENV_BIN, run_watched, script_env

BATCH = Batch("b", 10)


@pytest.mark.spark
@pytest.mark.slow
def test_prio_spark_reports_progress_without_meaningless_warnings(tmp_path):
    private_a, public_a = keys.generate_keypair()
    _, public_b = keys.generate_keypair()
    integration.generate([BATCH], public_a, public_b, location(str(tmp_path / "a")),
                         location(str(tmp_path / "b")), n_rows=20)
    # Often enough that a line falls while the JVM starts, however fast the machine.
    env = script_env(PROGRESS_INTERVAL="0.25")
    env.pop("SPARK_LOCAL_IP", None)  # as on an operator's machine: Spark finds its own address
    env["PYSPARK_PYTHON"] = os.environ.get("PYSPARK_PYTHON", str(VENV_BIN / "python"))
    result = run_watched(
        [str(VENV_BIN / "prio-spark"), "--master", "local[1]", "verify1", "--batch-id", BATCH.batch_id,
         "--n-data", str(BATCH.n_data), "--server-id", "A",
         "--private-key-hex", keys.private_key_to_hex(private_a),
         "--shared-secret", "FjlvCaTrZk+jYcKuzKSt3w==",
         "--public-key-hex-internal", keys.public_key_to_hex(public_a),
         "--public-key-hex-external", keys.public_key_to_hex(public_b),
         "--input", str(tmp_path / "a" / f"batch_id={BATCH.batch_id}"), "--output", str(tmp_path / "out")],
        env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == ["Running verify1", "1 errors out of 20 total"]
    assert re.search(r"server A, batch b: verify1: starting Spark, \d+s", result.stderr), result.stderr
    for noise in ("resolves to a loopback address", "NativeCodeLoader", "Setting default log level"):
        assert noise not in result.stderr, result.stderr
