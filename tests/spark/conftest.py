"""One local Spark session for the Spark tests, and running prio-spark / prio in-process."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("pyspark") if not os.environ.get("CI") else None

os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("prio-spark tests")
               .config("spark.ui.enabled", "false")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.sql.shuffle.partitions", "4")
               .config("spark.default.parallelism", "2")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def read_folder(folder: Path) -> list[dict]:
    """The records of a folder of JSON-lines part files (or one file)."""
    files = [folder] if folder.is_file() else sorted(p for p in folder.iterdir() if p.name.startswith("part-"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]


def payloads(folder: Path) -> dict[str, str]:
    return {r["id"]: r["payload"] for r in read_folder(folder)}
