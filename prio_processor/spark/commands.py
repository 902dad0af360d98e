"""`prio-spark`: the server stages of `prio` on Apache Spark.

Same commands, options, environment variables and stdout lines as `prio`
(and the original prio-spark), over Spark-readable paths: inputs are a file
or a folder of JSON-lines part files; outputs are folders of JSON-lines part
files with _SUCCESS. Rejected records are counted; with --rejects they are
listed as {id, reason, detail} in a folder of their own, never in --output.
Spark evaluates every packet at the first draw of the server PRG (the
`fixed` schedule).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import click
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession

from .. import integration
from ..cli import options
from ..cli.options import ConfigError
from ..engine import keys
from ..engine.server import Schedule
from ..pipeline import stages
from ..storage import StorageError, location
from . import adapter, jobs
from .adapter import ClientSpec, IntegrationRow, ServerSpec
from .session import get_session

AGGREGATE_SCHEMA = "payload string, error long, total long, batch_id string, n_data long, server_id string"
PUBLISH_SCHEMA = "id string, timestamp string, payload array<long>, error long, total long"

evaluation_point = click.option(
    "--evaluation-point",
    envvar="EVALUATION_POINT",
    type=click.Choice([s.value for s in Schedule]),
    default=Schedule.FIXED.value,
    show_default=True,
    help="Which random point verifies each packet. Spark evaluates every packet at the first draw "
         "('fixed', as the original Spark pipeline); 'sequential' is refused.",
)

rejects_option = click.option(
    "--rejects",
    envvar="REJECTS",
    default=None,
    help="A folder to list rejected records in as JSON lines {id, reason, detail} (replaced on each run).",
)


class _Context:
    def __init__(self, master: str | None) -> None:
        self.master = master

    def session(self, stage: str) -> SparkSession:
        return get_session(self.master, f"prio-spark {stage}")


@click.group()
@click.option("--master", envvar="SPARK_MASTER", default=None,
              help="The Spark master URL (default: local[*], or the one spark-submit was given).")
@click.pass_context
def entry_point(ctx: click.Context, master: str | None) -> None:
    """Prio servers' batch stages on Apache Spark: verify client shares, aggregate, publish."""
    ctx.obj = _Context(master)


def _server_spec(params: dict[str, Any]) -> ServerSpec:
    """This server's configuration, checked on the driver (bad values exit 2)."""
    if params.get("evaluation_point", Schedule.FIXED.value) != Schedule.FIXED.value:
        raise ConfigError("prio-spark evaluates every packet at the first draw: use --evaluation-point fixed")
    key = options.private_key(params["private_key_hex"], params["private_key_file"])
    seed = options.shared_secret(params["shared_secret"], params["shared_secret_file"])
    pair = (params["public_key_hex_internal"], params["public_key_hex_external"])
    names = ("--public-key-hex-internal", "--public-key-hex-external")
    if params["server_id"] == "B":
        pair, names = pair[::-1], names[::-1]
    options.make_config(params["n_data"], params["batch_id"], pair[0], pair[1], names)
    if keys.public_key_to_hex(key.public_key()) != params["public_key_hex_internal"].strip().upper():
        raise ConfigError("the private key does not match --public-key-hex-internal")
    return ServerSpec(params["n_data"], params["batch_id"], params["server_id"],
                      params["public_key_hex_internal"], params["public_key_hex_external"],
                      params["prg_keying"],
                      keys.private_key_to_hex(key), seed)


def _server_command(func: Callable[..., None]) -> Callable[..., None]:
    for decorator in reversed([options.data_config, options.server_id_option, options.private_key_options,
                               options.shared_secret_options, options.public_key]):
        func = decorator(func)
    return func


def _report(counts: jobs.Counts) -> None:
    """The original's count line on stdout; reasons and skipped lines on stderr."""
    click.echo(f"{counts.errors} errors out of {counts.total} total")
    if counts.reasons:
        click.echo("rejected: " + ", ".join(f"{r}: {n}" for r, n in sorted(counts.reasons.items())), err=True)
    if counts.skipped:
        click.echo(f"{counts.skipped} unusable lines in verification packet files", err=True)


@contextlib.contextmanager
def _persisted(frame: DataFrame) -> Iterator[DataFrame]:
    """A stage result computed once for its output, its counts and its rejects."""
    frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        yield frame
    finally:
        frame.unpersist()


def _finish(result: DataFrame, params: dict[str, Any]) -> jobs.Counts:
    counts = jobs.counts(result)
    if params["rejects"]:
        jobs.write_rejects(result, params["rejects"])
    return counts


@entry_point.command()
@_server_command
@options.input_1
@options.output_1
@options.prg_keying
@evaluation_point
@rejects_option
@click.pass_obj
def verify1(ctx: _Context, **params: Any) -> None:
    """Decode a batch of shares

    Decrypts and checks each client share of --input and writes this server's
    verify1 packet for it, {"id", "payload"}, into --output.
    """
    click.echo("Running verify1")
    spec = _server_spec(params)
    spark = ctx.session("verify1")
    with _persisted(jobs.verify1(spark, spec, params["input_"])) as result:
        counts = _finish(result, params)
        jobs.write_records(result, params["output"])
    _report(counts)


@entry_point.command()
@_server_command
@options.input_1
@options.input_2
@options.output_1
@options.prg_keying
@evaluation_point
@rejects_option
@click.pass_obj
def verify2(ctx: _Context, **params: Any) -> None:
    """Verify a batch of SNIPs

    Joins the shares of --input with both servers' verify1 packets by id and
    writes this server's verify2 packet for each, {"id", "payload"}.
    """
    click.echo("Running verify2")
    spec = _server_spec(params)
    spark = ctx.session("verify2")
    plan = jobs.verify2(spark, spec, params["input_"], params["input_internal"], params["input_external"])
    with _persisted(plan) as result:
        counts = _finish(result, params)
        jobs.write_records(result, params["output"])
    _report(counts)


@entry_point.command()
@_server_command
@options.input_1
@options.input_2
@options.output_1
@options.prg_keying
@rejects_option
@click.pass_obj
def aggregate(ctx: _Context, **params: Any) -> None:
    """Generate an aggregate share from a batch of verified SNIPs

    Adds up the data shares of every client whose proof both servers' verify2
    packets accept; writes one line {"payload", "error", "total", ...} into --output.
    """
    click.echo("Running aggregate")
    spec = _server_spec(params)
    spark = ctx.session("aggregate")
    plan = jobs.aggregate(spark, spec, params["input_"], params["input_internal"], params["input_external"])
    with _persisted(plan) as result:
        counts = _finish(result, params)
        total = adapter.merge_partials(spec, jobs.partials(result))
    tally = adapter.tally_from_counts("aggregate", counts.total, counts.reasons)
    jobs.write_one(spark, adapter.aggregate_row(spec, total, tally), AGGREGATE_SCHEMA, params["output"])
    _report(counts)


@entry_point.command()
@options.data_config
@options.server_id_option
@options.private_key_options
@options.shared_secret_options
@options.public_key
@options.input_2
@options.output_1
@click.option("--min-batch-size", type=click.IntRange(min=0), default=0, show_default=True,
              help="Refuse to publish totals of fewer valid clients than this "
                   "(a privacy floor; 0 turns it off).")
@click.option("--prec", type=click.IntRange(1, 64), default=None,
              help="The batch holds unsigned integers of this many bits: "
                   "publish integer totals, not bit counts.")
@click.pass_obj
def publish(ctx: _Context, **params: Any) -> None:
    """Generate a final aggregate from both servers' aggregate shares

    Combines this server's aggregate (--input-internal) with the partner's
    (--input-external) into per-index counts; writes {"id", "timestamp",
    "payload", "error", "total"} into --output. The secrets are accepted, as
    by the original, but not needed.
    """
    click.echo("Running publish")
    pair = (params["public_key_hex_internal"], params["public_key_hex_external"])
    names = ("--public-key-hex-internal", "--public-key-hex-external")
    if params["server_id"] == "B":
        pair, names = pair[::-1], names[::-1]
    config = options.make_config(params["n_data"], params["batch_id"], pair[0], pair[1], names)
    spark = ctx.session("publish")
    internal = adapter.parse_lines(jobs.collect_lines(spark, params["input_internal"], "--input-internal"))
    external = adapter.parse_lines(jobs.collect_lines(spark, params["input_external"], "--input-external"))
    try:
        record = adapter.publish_record(config, params["server_id"], internal, external,
                                        params["min_batch_size"], params["prec"])
    except stages.PublishError as exc:
        raise click.ClickException(f"refusing to publish: {exc}") from None
    jobs.write_one(spark, record, PUBLISH_SCHEMA, params["output"])
    click.echo(f"{record['error']} errors out of {record['total']} total")


def _client_spec(n_data: int, batch_id: str, key_a: str, key_b: str, prg_keying: str) -> ClientSpec:
    names = ("--public-key-hex-internal", "--public-key-hex-external")
    options.make_config(n_data, batch_id, key_a, key_b, names)
    return ClientSpec(n_data, batch_id, key_a, key_b, prg_keying)


@entry_point.command("encode-shares")
@options.data_config
@options.public_key
@options.input_1
@options.output_2
@options.prg_keying
@click.option("--prec", type=click.IntRange(1, 64), default=None,
              help="Encode unsigned integers of this many bits (most significant first) instead of bits; "
                   "--n-data is then the number of integers times --prec.")
@rejects_option
@click.pass_obj
def encode_shares(ctx: _Context, n_data: int, batch_id: str, public_key_hex_internal: str,
                  public_key_hex_external: str, input_: str, output_a: str, output_b: str, prg_keying: str,
                  prec: int | None, rejects: str | None) -> None:
    """Encode client data into shares for servers A and B.

    Input lines are {"payload": [bits]} (or [integers] with --prec); each output
    line is {"id", "payload": base64 packet}, the same id for A and B.
    """
    click.echo("Running encode shares")
    spec = _client_spec(n_data, batch_id, public_key_hex_internal, public_key_hex_external, prg_keying)
    spark = ctx.session("encode-shares")
    # Shares are random: both outputs are written from one persisted computation.
    with _persisted(jobs.encode(spark, spec, input_, prec)) as result:
        counts = _finish(result, {"rejects": rejects})
        jobs.write_shares(result, "a", output_a)
        jobs.write_shares(result, "b", output_b)
    _report(counts)


@entry_point.command()
@options.data_config
@options.public_key
@options.output_1
@options.prg_keying
@click.option("--n-rows", type=click.IntRange(min=1), required=True, help="Number of rows randomly generate.")
@click.option("--scale", type=click.IntRange(min=1), default=1, show_default=True,
              help="Factor to duplicate shares for output.")
@click.option("--partition-size-mb", type=click.IntRange(min=1), default=250, show_default=True,
              help="Target size of an output partition.")
@click.pass_obj
def generate(ctx: _Context, n_data: int, batch_id: str, public_key_hex_internal: str,
             public_key_hex_external: str, output: str, prg_keying: str, n_rows: int, scale: int,
             partition_size_mb: int) -> None:
    """Generate random client shares into <output>/server_id=a/ and server_id=b/."""
    spec = _client_spec(n_data, batch_id, public_key_hex_internal, public_key_hex_external, prg_keying)
    spark = ctx.session("generate")
    n_partitions = jobs.partitions_for(spec, n_rows, scale, partition_size_mb)
    click.echo(f"writing {n_partitions} partitions")
    jobs.generate(spark, spec, output, n_rows, scale, n_partitions)


@entry_point.command("generate-integration")
@click.option("--data-config", envvar="DATA_CONFIG", required=True,
              help="A JSON file listing the batches as [{\"batch_id\": ..., \"n_data\": ...}].")
@options.public_key
@options.output_1
@click.option("--n-rows", type=click.IntRange(min=1), default=100, show_default=True,
              help="Number of rows to generate per batch.")
@click.option("--n-partitions", type=click.IntRange(min=1), default=2, show_default=True,
              help="Number of partitions for each batch.")
@click.option("--n-drop-batch", type=click.IntRange(min=0), default=0, show_default=True,
              help="Number of batch_ids to drop (those that sort last).")
@options.prg_keying
@click.pass_obj
def generate_integration(ctx: _Context, data_config: str, public_key_hex_internal: str,
                         public_key_hex_external: str, output: str, n_rows: int, n_partitions: int,
                         n_drop_batch: int, prg_keying: str) -> None:
    """Generate test data from a configuration file (internal key = server A's, external = B's).

    Each kept batch gets n_rows - 1 clients with payload[i] = 1 if i % 3 == 0 or
    i % 5 == 0 and one client encoded with n_data + 1; an unknown batch "bad-id"
    gets n_rows clients. Writes <output>/server_id={a,b}/batch_id=<id>/.
    """
    try:
        batches = integration.load_data_config(location(data_config))
    except StorageError as exc:
        raise ConfigError(str(exc)) from None
    spec = _client_spec(1, "", public_key_hex_internal, public_key_hex_external, prg_keying)
    plan: list[tuple[IntegrationRow, int]] = []
    for batch in integration.kept_batches(batches, n_drop_batch):
        if n_rows > 1:
            plan.append((IntegrationRow(batch.batch_id, batch.n_data, batch.n_data), n_rows - 1))
        plan.append((IntegrationRow(batch.batch_id, batch.n_data, batch.n_data + 1), 1))
    unknown = integration.UNKNOWN_BATCH_N_DATA
    plan.append((IntegrationRow(integration.UNKNOWN_BATCH, unknown, unknown), n_rows))
    jobs.generate_integration(ctx.session("generate-integration"), spec, plan, output, n_partitions)


def main() -> None:
    """Console script entry point; also the body of prio_processor/spark/submit.py."""
    entry_point(prog_name="prio-spark")


if __name__ == "__main__":
    main()
