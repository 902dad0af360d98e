"""The Spark session of a `prio-spark` command."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from pyspark import SparkContext
from pyspark.sql import SparkSession

DEFAULT_MASTER = "local[*]"
#: The driver's log configuration: Spark's warnings that mean nothing to an operator left out.
LOG_CONFIG = Path(__file__).with_name("log4j2.properties")

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
        # The driver starts here (spark-submit's own configuration decides otherwise).
        builder = builder.config(
            "spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={LOG_CONFIG.as_uri()}"
        )
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


def progress_line(what: str) -> Callable[[float], str]:
    """What the driver is doing, for a steady progress line (cli/progress.py): starting Spark, or
    the tasks done of the running Spark stages (Spark counts tasks, not records, as it goes)."""

    def describe(elapsed: float) -> str:
        context = SparkContext._active_spark_context
        if context is None or context._jsc is None:
            return f"{what}: starting Spark, {elapsed:.0f}s"
        tracker = context.statusTracker()
        done = total = 0
        for stage_id in tracker.getActiveStageIds():
            info = tracker.getStageInfo(stage_id)
            if info is not None:
                done += info.numCompletedTasks
                total += info.numTasks
        if not total:
            return f"{what}: Spark is planning or writing, {elapsed:.0f}s"
        return f"{what}: {done} of {total} tasks of the running Spark stages done, {elapsed:.0f}s"

    return describe
