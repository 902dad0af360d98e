"""The stages as Spark plans: read lines, join by id, run the adapter per partition, write.

Inputs are read as text lines so that every line reaches the pipeline exactly
as `prio` would read it. Each line keeps its input position (file, split,
row), which decides, as in `prio`, which of two records with the same id
counts: records whose id occurs more than once are moved into one partition
per id, in input order, before the stage runs. Verification packets are
indexed by id Spark-side (the last one in input order wins, their settings
stamps checked as `prio` checks them) and joined to the shares, so the driver
never holds an index.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from py4j.protocol import Py4JJavaError
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from ..cli.base import ConfigError
from ..storage.records import dumps
from . import adapter, cache
from .adapter import ClientSpec, IntegrationRow, ServerSpec
from .cache import Keyed
from .session import NO_S3A, S3A_HINT, hadoop_path

_POSITION = ("file", "block", "row")
# The id of a line that starts as the original wrote records, {"id": "...", ...}: read from
# the line's start, so that Spark need not parse a whole share to place it.
_LEADING_ID = r'^\s*\{\s*"id"\s*:\s*"([^"\\]+)"'
_ID_PREFIX_CHARS = 512


@dataclass
class Counts:
    """What a stage counted over all partitions."""

    total: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    mismatch: str | None = None  # what differs, when verification packets carry other settings
    stamped: bool = False  # the verification packets carried settings stamps
    positions: list[tuple[int, str]] = field(default_factory=list)  # cache rows made or checked, per task
    key_hashes: list[str] = field(default_factory=list)  # verify1: the hashes of the ids, per task
    miss: str | None = None  # why the cache could not answer
    partials: list[str] = field(default_factory=list)  # aggregate: the tasks' partial total shares
    exact: bool = False  # a packet's id is not the one Spark placed it by: the exact plan is needed
    corrections: dict[tuple[str, str], int] = field(default_factory=dict)  # (id, digest): shares to add
    # Rejected records and unusable lines, in a stable order: the driver writes them as one file.
    listed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(self.reasons.values())


@contextlib.contextmanager
def _unsupported_scheme(option: str, path: str) -> Iterator[None]:
    """A path whose scheme Spark has no file system for (s3a:// without hadoop-aws) is a
    configuration error: one line, saying what to add."""
    try:
        yield
    except Py4JJavaError as exc:
        problem = str(exc.java_exception.toString())
        if any(sign in problem for sign in NO_S3A):
            raise ConfigError(f"{option}: cannot use {path}: {S3A_HINT}") from None
        if "UnsupportedFileSystemException" in problem:
            raise ConfigError(f"{option}: cannot use {path}: {problem.split(': ', 1)[-1]}") from None
        raise


def read_lines(spark: SparkSession, path: str, option: str) -> DataFrame:
    """Lines of a file or folder with their id and input position; a missing path is a configuration error."""
    try:
        with _unsupported_scheme(option, path):
            lines = spark.read.text(hadoop_path(path))
    except AnalysisException as exc:
        raise ConfigError(f"{option}: cannot read {path}: {str(exc).splitlines()[0]}") from None
    return lines.select(
        "value",
        _record_key(F.col("value")).alias("key"),
        F.col("_metadata.file_path").alias("file"),
        F.col("_metadata.file_block_start").alias("block"),
        F.monotonically_increasing_id().alias("row"),
    )


def _record_key(line: Column) -> Column:
    """The id Spark places a line by; the adapter rejects a line whose JSON id differs."""
    leading = F.regexp_extract(F.substring(line, 1, _ID_PREFIX_CHARS), _LEADING_ID, 1)
    return F.when(leading != "", leading).otherwise(F.get_json_object(line, "$.id"))


def _in_order_per_id(lines: DataFrame, rows: DataFrame) -> DataFrame:
    """`rows` with every repeated id's rows in one partition, in input order.

    Ids are nearly always unique: then `rows` stay as they were read. Otherwise
    only the rows of repeated ids (found through a broadcast table of those
    ids) are shuffled.
    """
    repeated_ids = (lines.where(F.col("key").isNotNull()).groupBy("key").count()
                    .where(F.col("count") > 1).select("key", F.lit(True).alias("_repeated")))
    if repeated_ids.isEmpty():
        return rows
    tagged = rows.join(F.broadcast(repeated_ids), "key", "left")
    unique = tagged.where(F.col("_repeated").isNull())
    repeated = (tagged.where(F.col("_repeated").isNotNull())
                .repartition("key").sortWithinPartitions(*_POSITION))
    return unique.unionByName(repeated).drop("_repeated")


def _packet_index(spark: SparkSession, spec: ServerSpec, path: str, option: str, prefix: str,
                  whose: str) -> tuple[DataFrame, DataFrame]:
    """(key, <prefix>_payload, <prefix>_digest) of a verification packet input, and its other
    result rows: listed unusable lines, their count, and what the settings stamps said."""
    lines = read_lines(spark, path, option).drop("key")
    parsed = lines.mapInArrow(partial(adapter.index_partition, spec, whose), adapter.INDEX_DDL)
    latest = F.max_by(F.struct("payload", "digest"), F.struct(*_POSITION))
    index = (parsed.where(F.col("kind") == "index").groupBy("key").agg(latest.alias("v"))
             .select("key", F.col("v.payload").alias(f"{prefix}_payload"),
                     F.col("v.digest").alias(f"{prefix}_digest")))
    none = F.lit(None).cast("string")
    side = parsed.where(F.col("kind").isin("listed", "skipped", "mismatch", "stamped")).select(
        "kind", none.alias("line"), F.col("key").alias("id"), "reason",
        F.when(F.col("kind") != "skipped", F.col("detail")).alias("detail"),
        F.when(F.col("kind") == "skipped", F.col("detail").cast("long")).alias("count"),
        none.alias("payload"))
    return index, side


def verify1(spark: SparkSession, spec: ServerSpec, input_path: str, exact: bool = False,
            keyed: Keyed | None = None) -> DataFrame:
    """verify1's result; with `keyed`, also the cache's rows. `exact`: every repeated id's lines
    in one partition in input order (see _in_order_per_id); otherwise the lines stay as read,
    which gives the same result when no id repeats (repeated_ids tells)."""
    lines = read_lines(spark, input_path, "--input")
    # The lines' bytes as they are: Python parses them as `prio` does, without decoding them to
    # text and encoding them again (most of a share's cost in Python outside the engine).
    rows = lines.select(F.col("value").cast("binary").alias("value"), "key", "file", *_POSITION[1:])
    if exact:
        rows = _in_order_per_id(lines, rows)
    if keyed is None:
        return rows.mapInArrow(partial(adapter.verify1_partition, spec), adapter.RESULT_DDL)
    return rows.mapInArrow(partial(adapter.verify1_cached_partition, spec, keyed), adapter.VERIFY1_DDL)


def write_cache(result: DataFrame, path: str) -> None:
    """verify1's cache rows as Parquet files, replacing what was there."""
    rows = result.where(F.col("kind").isin("row", "sum")).select(*cache.COLUMNS)
    with _unsupported_scheme("--cache", path):
        rows.write.mode("overwrite").parquet(hadoop_path(path))


def _cache_rows(spark: SparkSession, path: str) -> DataFrame:
    try:
        with _unsupported_scheme("--cache", path):
            return spark.read.schema(cache.DDL).parquet(hadoop_path(path))
    except AnalysisException as exc:
        raise ConfigError(f"--cache: cannot read {path}: {str(exc).splitlines()[0]}") from None


def _joined_cache(spark: SparkSession, spec: ServerSpec, previous: str, cache_path: str, repeated: bool,
                  internal_path: str, external_path: str) -> tuple[DataFrame, list[DataFrame]]:
    rows = _cache_rows(spark, cache_path)
    internal, internal_side = _packet_index(spark, spec, internal_path, "--input-internal", "internal",
                                            f"this server's {previous}")
    external, external_side = _packet_index(spark, spec, external_path, "--input-external", "external",
                                            f"the partner's {previous}")
    joined = rows.join(internal, "key", "left").join(external, "key", "left")
    if repeated:
        joined = _in_order_per_id(rows.where(F.col("kind") == "row"), joined)
    return joined, [internal_side, external_side]


def verify2_cached(spark: SparkSession, spec: ServerSpec, keyed: Keyed, repeated: bool, cache_path: str,
                   internal_path: str, external_path: str) -> DataFrame:
    joined, side = _joined_cache(spark, spec, "verify1", cache_path, repeated, internal_path, external_path)
    result = joined.mapInArrow(partial(adapter.verify2_cached_partition, spec, keyed), adapter.RESULT_DDL)
    return result.unionByName(side[0]).unionByName(side[1])


def aggregate_cached(spark: SparkSession, spec: ServerSpec, keyed: Keyed, repeated: bool, cache_path: str,
                     internal_path: str, external_path: str) -> DataFrame:
    joined, side = _joined_cache(spark, spec, "verify2", cache_path, repeated, internal_path, external_path)
    result = joined.mapInArrow(partial(adapter.aggregate_cached_partition, spec, keyed), adapter.RESULT_DDL)
    return result.unionByName(side[0]).unionByName(side[1])


def _packet_lines(spark: SparkSession, path: str, option: str, kind: str) -> DataFrame:
    none = F.lit(None)
    return read_lines(spark, path, option).select(
        F.lit(kind).alias("kind"), "key", *_POSITION, none.cast("long").alias("seq"),
        none.cast("binary").alias("body"), none.cast("binary").alias("mac"), "value")


def merged(spark: SparkSession, spec: ServerSpec, stage: str, keyed: Keyed, cache_path: str,
           internal_path: str, external_path: str) -> DataFrame:
    """verify2 or aggregate over the cache with one shuffle: the cache rows and both servers'
    packet lines placed by id, sorted by id and, per id, packets first, each in input order
    (the last packet of an id wins, and repeated ids come in input order)."""
    previous = "verify1" if stage == "verify2" else "verify2"
    rows = _cache_rows(spark, cache_path).withColumn("value", F.lit(None).cast("string"))
    for kind, path, option in (("internal", internal_path, "--input-internal"),
                               ("external", external_path, "--input-external")):
        rows = rows.unionByName(_packet_lines(spark, path, option, kind))
    first = F.when(F.col("kind") == "internal", 0).when(F.col("kind") == "external", 1).otherwise(2)
    # One partition per task slot: the rows are small, and a Python task per shuffle partition
    # (200 by default) would cost far more than the work.
    placed = rows.repartition(spark.sparkContext.defaultParallelism, "key").sortWithinPartitions(
        "key", first, *_POSITION)
    return placed.mapInArrow(partial(adapter.merged_partition, spec, keyed, stage, previous),
                             adapter.RESULT_DDL)


def shares_for(spark: SparkSession, spec: ServerSpec, input_path: str,
               wanted: frozenset[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(id, digest, data share) of the shares of --input with a wanted (id, share digest)."""
    keys = sorted({key for key, _ in wanted})
    lines = read_lines(spark, input_path, "--input").where(F.col("key").isin(keys)).select("value", "key")
    found = lines.mapInArrow(partial(adapter.correction_partition, spec, wanted), adapter.RESULT_DDL)
    return [(row["id"], row["detail"], row["payload"]) for row in found.collect()]


def _joined(spark: SparkSession, spec: ServerSpec, previous: str, input_path: str, internal_path: str,
            external_path: str) -> tuple[DataFrame, list[DataFrame]]:
    lines = read_lines(spark, input_path, "--input")
    internal, internal_side = _packet_index(spark, spec, internal_path, "--input-internal", "internal",
                                            f"this server's {previous}")
    external, external_side = _packet_index(spark, spec, external_path, "--input-external", "external",
                                            f"the partner's {previous}")
    joined = lines.join(internal, "key", "left").join(external, "key", "left")
    return _in_order_per_id(lines, joined), [internal_side, external_side]


def verify2(spark: SparkSession, spec: ServerSpec, input_path: str, internal_path: str,
            external_path: str) -> DataFrame:
    joined, side = _joined(spark, spec, "verify1", input_path, internal_path, external_path)
    result = joined.mapInArrow(partial(adapter.verify2_partition, spec), adapter.RESULT_DDL)
    return result.unionByName(side[0]).unionByName(side[1])


def aggregate(spark: SparkSession, spec: ServerSpec, input_path: str, internal_path: str,
              external_path: str) -> DataFrame:
    joined, side = _joined(spark, spec, "verify2", input_path, internal_path, external_path)
    result = joined.mapInArrow(partial(adapter.aggregate_partition, spec), adapter.RESULT_DDL)
    return result.unionByName(side[0]).unionByName(side[1])


def counts(result: DataFrame) -> Counts:
    """Totals, errors by reason, skipped lines, settings and the listed rejects of a (persisted)
    stage result, in one pass: a few rows per partition, and rejects, which are few."""
    found = Counts()
    reasons: Counter[str] = Counter()
    kinds = ("tally", "reason", "skipped", "mismatch", "stamped", "listed", "positions", "miss", "correct",
             "keys", "exact", "partial")
    # encode-shares' rows have no payload column.
    payload = F.col("payload") if "payload" in result.columns else F.lit(None).cast("string").alias("payload")
    summary = result.where(F.col("kind").isin(*kinds)).select("kind", "id", "reason", "detail", "count",
                                                               payload)
    listed = []
    for row in summary.collect():
        if row["kind"] == "tally":
            found.total += row["count"]
        elif row["kind"] == "reason":
            reasons[row["reason"]] += row["count"]
        elif row["kind"] == "skipped":
            found.skipped += row["count"]
        elif row["kind"] == "mismatch":
            found.mismatch = found.mismatch or row["detail"]
        elif row["kind"] == "stamped":
            found.stamped = True
        elif row["kind"] == "positions":
            found.positions.append((row["count"], row["payload"]))
        elif row["kind"] == "keys":
            found.key_hashes.append(row["payload"])
        elif row["kind"] == "partial":
            found.partials.append(row["payload"])
        elif row["kind"] == "exact":
            found.exact = True
        elif row["kind"] == "miss":
            found.miss = found.miss or row["detail"]
        elif row["kind"] == "correct":
            wanted = (row["id"], row["detail"])
            found.corrections[wanted] = found.corrections.get(wanted, 0) + row["count"]
        else:
            listed.append(row)
    found.reasons = dict(reasons)
    found.listed = [_entry(row) for row in sorted(listed, key=_listing_order)]
    return found


def _listing_order(row: Any) -> tuple[str, str, str]:
    return row["id"] or "", row["reason"], row["detail"] or ""


def _entry(row: Any) -> dict[str, Any]:
    """{id, reason, detail} as `prio` lists a reject; never a payload."""
    entry: dict[str, Any] = {"id": row["id"], "reason": row["reason"]}
    if row["detail"]:
        entry["detail"] = row["detail"]
    return entry


def write_json(frame: DataFrame, path: str) -> None:
    """A folder of JSON-lines part files with _SUCCESS, replacing what was there."""
    with _unsupported_scheme("--output", path):
        frame.write.mode("overwrite").option("compression", "none").json(hadoop_path(path))


def write_lines(spark: SparkSession, frame: DataFrame, path: str) -> None:
    """The `line` column (JSON lines as `prio` writes them) as a folder of part-*.json files with
    _SUCCESS, replacing what was there."""
    with _unsupported_scheme("--output", path):
        frame.select("line").write.mode("overwrite").option("compression", "none").text(hadoop_path(path))
    # Spark names text parts *.txt; they hold JSON lines, as the original's part files did.
    context = spark.sparkContext
    assert context._jvm is not None, "a driver-side session has a JVM"
    jvm = context._jvm
    folder = jvm.org.apache.hadoop.fs.Path(hadoop_path(path))
    fs = folder.getFileSystem(context._jsc.hadoopConfiguration())
    for status in fs.listStatus(folder):
        name = status.getPath().getName()
        if name.startswith("part-") and name.endswith(".txt"):
            fs.rename(status.getPath(), jvm.org.apache.hadoop.fs.Path(folder, name[:-4] + ".json"))


def write_records(spark: SparkSession, result: DataFrame, path: str) -> None:
    write_lines(spark, result.where(F.col("kind") == "record"), path)


def _file_system(spark: SparkSession, path: str) -> tuple[Any, Any, Any]:
    """(the Hadoop Path class, the path, its file system)."""
    context = spark.sparkContext
    assert context._jvm is not None, "a driver-side session has a JVM"
    hadoop_fs = context._jvm.org.apache.hadoop.fs
    folder = hadoop_fs.Path(hadoop_path(path))
    return hadoop_fs.Path, folder, folder.getFileSystem(context._jsc.hadoopConfiguration())


def write_one(spark: SparkSession, record: dict[str, Any], path: str) -> None:
    """One record as a single part file with _SUCCESS (aggregate, publish), replacing what was
    there: written by the driver through Hadoop's file system, as a Spark job would name it,
    without running one."""
    with _unsupported_scheme("--output", path):
        path_class, folder, fs = _file_system(spark, path)
        if fs.exists(folder):
            fs.delete(folder, True)
        fs.mkdirs(folder)
        name = f"part-00000-{uuid.uuid4()}-c000.json"
        # Readers skip names starting with "_": the part file takes its name once complete.
        pending = path_class(folder, f"_{name}")
        stream = fs.create(pending, True)
        try:
            stream.write(bytearray((dumps(record) + "\n").encode("utf-8")))
        finally:
            stream.close()
        fs.rename(pending, path_class(folder, name))
        fs.create(path_class(folder, "_SUCCESS"), True).close()


def partials(counts: Counts) -> list[str]:
    """The partitions' partial aggregates (one small row per partition)."""
    return counts.partials


def collect_lines(spark: SparkSession, path: str, option: str) -> list[str]:
    """All lines of a small input (aggregates for publish), in input order. A file, or a folder
    of files, is read by the driver through Hadoop's file system; anything else (partition
    folders) through Spark."""
    with _unsupported_scheme(option, path):
        _, folder, fs = _file_system(spark, path)
        if fs.exists(folder):
            statuses = [fs.getFileStatus(folder)] if fs.getFileStatus(folder).isFile() else \
                list(fs.listStatus(folder))
            names = [status.getPath().getName() for status in statuses]
            if all(status.isFile() for status in statuses) and statuses and any(
                    not name.startswith(("_", ".")) for name in names):
                return _driver_lines(spark, fs, sorted(
                    (status for status, name in zip(statuses, names) if not name.startswith(("_", "."))),
                    key=lambda status: str(status.getPath().toUri().toString())))
    lines = read_lines(spark, path, option).orderBy(*_POSITION).select("value")
    return [row["value"] for row in lines.collect()]


def _driver_lines(spark: SparkSession, fs: Any, statuses: list[Any]) -> list[str]:
    context = spark.sparkContext
    assert context._jvm is not None, "a driver-side session has a JVM"
    lines: list[str] = []
    for status in statuses:
        stream = fs.open(status.getPath())
        try:
            data = bytes(context._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
        finally:
            stream.close()
        # As Spark's text reader: lines end at \n, \r or \r\n.
        lines.extend(line.decode("utf-8", "replace") for line in data.splitlines())
    return lines


def encode(spark: SparkSession, spec: ClientSpec, input_path: str, prec: int | None) -> DataFrame:
    lines = read_lines(spark, input_path, "--input").select("value", "file")
    return lines.mapInArrow(partial(adapter.encode_partition, spec, prec), adapter.SHARES_DDL)


def write_shares(shares: DataFrame, column: str, path: str) -> None:
    write_json(shares.where(F.col("kind") == "record").select("id", F.col(column).alias("payload")), path)


def _by_server(shares: DataFrame, *keep: str) -> DataFrame:
    """One row per server: server_id "a" or "b" and its payload, as the original's generate wrote them."""
    servers = F.map_from_arrays(F.array(F.lit("a"), F.lit("b")), F.array("a", "b"))
    return shares.select(*keep, "id", F.explode(servers).alias("server_id", "payload"))


def partitions_for(spec: ClientSpec, n_rows: int, scale: int, partition_size_mb: int) -> int:
    """Output partitions for about `partition_size_mb` of shares each, estimated from one encoded share."""
    share_a, _ = spec.client().encode([0] * spec.n_data)
    estimate_mb = (len(adapter.stages.encode_base64(share_a)) + 36) * n_rows * scale / 10**6
    return max(1, math.ceil(estimate_mb / partition_size_mb))


def generate(spark: SparkSession, spec: ClientSpec, output: str, n_rows: int, scale: int,
             n_partitions: int) -> None:
    """Random clients' shares into <output>/server_id={a,b}/, as the original's generate wrote them."""
    # Each partition writes its own part files: no shuffle, and both servers' shares of a
    # client come from the same row, so they always match.
    shares = spark.range(n_rows, numPartitions=n_partitions).mapInArrow(
        partial(adapter.random_partition, spec, scale), adapter.SHARES_DDL)
    (_by_server(shares).write.mode("overwrite").option("compression", "none")
     .partitionBy("server_id").json(hadoop_path(output)))


def generate_integration(spark: SparkSession, spec: ClientSpec, plan: list[tuple[IntegrationRow, int]],
                         output: str, n_partitions: int) -> None:
    """Deterministic clients into <output>/server_id={a,b}/batch_id=<id>/, as the original wrote them."""
    n_rows = sum(count for _, count in plan)
    rows = spark.range(n_rows, numPartitions=max(1, min(n_rows, spark.sparkContext.defaultParallelism)))
    shares = rows.mapInArrow(partial(adapter.integration_partition, spec, plan), adapter.INTEGRATION_DDL)
    layout = _by_server(shares.repartitionByRange(n_partitions, "batch_id", "id"), "batch_id")
    (layout.write.mode("overwrite").option("compression", "none")
     .partitionBy("server_id", "batch_id").json(hadoop_path(output)))
