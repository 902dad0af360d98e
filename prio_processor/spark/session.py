"""The Spark session of a `prio-spark` command."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from pyspark import SparkContext
from pyspark.sql import SparkSession

from ..storage import s3
from ..storage.locations import S3_SCHEME

DEFAULT_MASTER = "local[*]"
#: The driver's log configuration: Spark's warnings that mean nothing to an operator left out.
LOG_CONFIG = Path(__file__).with_name("log4j2.properties")

# Settings every stage relies on: UTC timestamps, and base64 without line breaks.
REQUIRED_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.chunkBase64String.enabled": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Shares are large: Arrow batches of a few hundred rows keep Python tasks' memory small.
    "spark.sql.execution.arrow.maxRecordsPerBatch": "64",
}
#: Settings of the Python workers, fixed when the session starts.
WORKER_CONF = {
    # Workers are forked from a daemon that imported the stage code once (daemon.py).
    "spark.python.daemon.module": "prio_processor.spark.daemon",
}


S3A_SCHEME = "s3a://"
#: What Spark's Hadoop says when the S3A connector (hadoop-aws) is not on its class path.
NO_S3A = ("S3AFileSystem not found", 'No FileSystem for scheme "s3a"')
S3A_HINT = ("Spark reaches s3:// buckets through Hadoop's S3A connector: add org.apache.hadoop:hadoop-aws "
            "(of Spark's Hadoop version) to spark.jars.packages or the class path")


def hadoop_path(path: str) -> str:
    """The path as Spark's Hadoop file systems take it: s3:// buckets through the S3A connector."""
    return S3A_SCHEME + path[len(S3_SCHEME) :] if path.startswith(S3_SCHEME) else path


def s3a_settings() -> dict[str, str]:
    """Hadoop settings giving S3A what `prio` uses for s3://: AWS_ENDPOINT_URL for every bucket, and
    each PRIO_S3_CONFIG bucket's own endpoint and keys (per-bucket settings, fs.s3a.bucket.NAME.*).
    Without keys, S3A's default chain applies (AWS_ACCESS_KEY_ID, profiles, instance roles)."""
    settings = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        settings.update({"fs.s3a.endpoint": endpoint, "fs.s3a.path.style.access": "true"})
    for bucket, access in s3.configured_buckets().items():
        prefix = f"fs.s3a.bucket.{bucket}."
        if access.endpoint:
            settings.update({prefix + "endpoint": access.endpoint, prefix + "path.style.access": "true"})
        if access.region:
            settings[prefix + "endpoint.region"] = access.region
        secret = access.secret_key(bucket)
        if access.access_key and secret is not None:
            settings.update({
                prefix + "aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
                prefix + "access.key": access.access_key,
                prefix + "secret.key": secret,
            })
    return settings


def _submitted() -> bool:
    """True under spark-submit, which chose the master already."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def get_session(master: str | None, app_name: str) -> SparkSession:
    """The active session, or a new one on `master` (local[*] unless spark-submit chose one)."""
    # No console progress bar: its carriage returns would run into the count line that
    # bin/process reads from this command's output.
    builder = SparkSession.builder.appName(app_name).config("spark.ui.showConsoleProgress", "false")
    for key, value in WORKER_CONF.items():
        builder = builder.config(key, value)
    if master is not None or not _submitted():
        builder = builder.master(master or DEFAULT_MASTER)
        # The driver starts here (spark-submit's own configuration decides otherwise).
        # Stages are short jobs in one JVM (driver and executor): the C1 compiler alone costs far
        # less CPU than compiling Spark's hot code twice, which a short job never pays back.
        builder = builder.config(
            "spark.driver.extraJavaOptions",
            f"-Dlog4j2.configurationFile={LOG_CONFIG.as_uri()} -XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
        )
        # Local workers run this interpreter, which has this package installed.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = builder.getOrCreate()
    for key, value in REQUIRED_CONF.items():
        spark.conf.set(key, value)
    # Output folders hold part files and _SUCCESS only: no .crc side files on local disks.
    context = spark.sparkContext
    assert context._jvm is not None, "a driver-side session has a JVM"
    hadoop = context._jsc.hadoopConfiguration()
    local = context._jvm.org.apache.hadoop.fs.FileSystem.getLocal(hadoop)
    local.setWriteChecksum(False)
    # Set in the driver's Hadoop configuration, which tasks receive with their file splits: keys
    # stay off command lines, and Spark's UI and logs redact them (spark.redaction.regex).
    for key, value in s3a_settings().items():
        hadoop.set(key, value)
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
