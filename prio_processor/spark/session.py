"""The Spark session of a `prio-spark` command."""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

DEFAULT_MASTER = "local[*]"

# Settings every stage relies on: UTC timestamps, and base64 without line breaks.
REQUIRED_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.chunkBase64String.enabled": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Shares are large: Arrow batches of a few hundred rows keep Python tasks' memory small.
    "spark.sql.execution.arrow.maxRecordsPerBatch": "256",
}


def _submitted() -> bool:
    """True under spark-submit, which chose the master already."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def get_session(master: str | None, app_name: str) -> SparkSession:
    """The active session, or a new one on `master` (local[*] unless spark-submit chose one)."""
    # No console progress bar: its carriage returns would run into the count line that
    # bin/process reads from this command's output.
    builder = SparkSession.builder.appName(app_name).config("spark.ui.showConsoleProgress", "false")
    if master is not None or not _submitted():
        builder = builder.master(master or DEFAULT_MASTER)
        # Local workers run this interpreter, which has this package installed.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = builder.getOrCreate()
    for key, value in REQUIRED_CONF.items():
        spark.conf.set(key, value)
    # Output folders hold part files and _SUCCESS only: no .crc side files on local disks.
    context = spark.sparkContext
    assert context._jvm is not None, "a driver-side session has a JVM"
    local = context._jvm.org.apache.hadoop.fs.FileSystem.getLocal(context._jsc.hadoopConfiguration())
    local.setWriteChecksum(False)
    return spark
