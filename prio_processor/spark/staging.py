"""Bucket paths that Spark's Hadoop cannot open (gs:// without the GCS connector), in local mode.

A session whose Hadoop has a file system for the bucket's scheme (the GCS
connector, as on Dataproc) reads and writes the bucket itself. Without one, in
local mode, where the driver and the executors share this machine's disk, a
command's inputs are copied from the bucket into a scratch folder first, and its
outputs are written there and then copied into the bucket (data files, then an
empty _SUCCESS, as `prio bucket sync` does), with the client `prio` uses
(STORAGE_EMULATOR_HOST and GOOGLE_APPLICATION_CREDENTIALS apply). An output
reaches the bucket only when the command succeeds.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from py4j.protocol import Py4JJavaError
from pyspark.sql import SparkSession

from ..cli.base import ConfigError
from ..storage import LocalLocation, Location, location
from ..storage.locations import GcsLocation
from ..storage.ops import copy_file, sync


def _hadoop_opens(spark: SparkSession, scheme: str) -> bool:
    """Whether this session's Hadoop has a file system for `scheme` (e.g. the GCS connector for gs)."""
    context = spark.sparkContext
    assert context._jvm is not None, "a driver-side session has a JVM"
    try:
        hadoop = context._jvm.org.apache.hadoop
        hadoop.fs.FileSystem.getFileSystemClass(scheme, context._jsc.hadoopConfiguration())
    except Py4JJavaError:
        return False
    return True


class Scratch:
    """Local stand-ins for the bucket paths of one command (see the module's description)."""

    def __init__(self, spark: SparkSession, folder: Path) -> None:
        self._spark = spark
        self._folder = folder
        self._outputs: list[tuple[LocalLocation, Location]] = []
        self._made = 0

    def _stand_in(self, path: str, option: str) -> Path | None:
        """A fresh scratch folder if `path` must be staged; None when Spark opens it itself."""
        loc = location(path)
        # s3:// goes to Spark as s3a:// (see session.hadoop_path), never through a scratch copy.
        if not isinstance(loc, GcsLocation):
            return None
        scheme = loc.uri.split("://", 1)[0]
        if _hadoop_opens(self._spark, scheme):
            return None
        if not (self._spark.sparkContext.master or "").startswith("local"):
            raise ConfigError(f"{option}: this Spark cluster has no file system for {scheme}:// "
                              f"(put its connector on the classpath, e.g. the GCS connector with --jars)")
        self._made += 1
        stand_in = self._folder / str(self._made)
        stand_in.mkdir()
        return stand_in

    def read(self, path: str, option: str) -> str:
        """A path Spark can read holding what `path` holds (a file, or a folder's whole tree)."""
        stand_in = self._stand_in(path, option)
        if stand_in is None:
            return path
        source = location(path)
        if source.is_file():
            copy = stand_in / source.name
            copy_file(source, LocalLocation(copy))
            return str(copy)
        files = source.walk()
        if not files:
            raise ConfigError(f"{option}: cannot read {path}: there is no such file or folder")
        for name, file in files:
            copy_file(file, LocalLocation(stand_in / name))
        return str(stand_in)

    def write(self, path: str, option: str) -> str:
        """A folder for Spark to write; copied to `path` when the command succeeds."""
        stand_in = self._stand_in(path, option)
        if stand_in is None:
            return path
        # Spark makes the folder itself (and refuses none in overwrite mode).
        stand_in.rmdir()
        self._outputs.append((LocalLocation(stand_in), location(path)))
        return str(stand_in)

    def publish(self) -> None:
        for written, target in self._outputs:
            sync(written, target)


@contextlib.contextmanager
def scratch(spark: SparkSession) -> Iterator[Scratch]:
    """A Scratch whose outputs are copied into their buckets if the block succeeds; removed after.

    A bucket that cannot be read or written raises StorageError (`stage_errors` reports it).
    """
    folder = Path(tempfile.mkdtemp(prefix="prio-spark-"))
    try:
        staged = Scratch(spark, folder)
        yield staged
        staged.publish()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
