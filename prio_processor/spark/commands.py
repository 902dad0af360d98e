"""`prio-spark`: the server stages of `prio` on Apache Spark.

Same commands, options, environment variables and stdout lines as `prio`
(and the original prio-spark), over Spark-readable paths (and gs:// in local
mode without the GCS connector, through a scratch folder: staging.py): inputs
are a file or a folder of JSON-lines part files; outputs are folders of JSON-lines part
files with _SUCCESS, holding the records `prio` writes (settings stamps and
kept input fields included). Rejected records are counted; with --rejects they
are listed as by `prio`: one file {id, reason, detail} per line, that file or
rejects-<stage>-<server>.ndjson in that folder, never in --output. Spark
evaluates every packet at the first draw of the server PRG (the `fixed`
schedule).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import click
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from py4j.protocol import Py4JJavaError
from pyspark import StorageLevel
from pyspark.errors.exceptions.captured import CapturedException
from pyspark.sql import DataFrame, SparkSession

from .. import dataconfig, integration
from ..cli import options, progress
from ..cli.base import ConfigError
from ..cli.commands import report, stage_errors, warn
from ..cli.options import ServerOptions
from ..engine import keys
from ..engine.prg import SEED_BYTES
from ..engine.server import Schedule
from ..pipeline import runner, stages
from ..pipeline.errors import PublishError, SettingsMismatch
from ..pipeline.tally import RejectSink
from ..storage import StorageError, location
from . import adapter, jobs
from . import cache as spark_cache
from .adapter import SCHEDULE, ClientSpec, IntegrationRow, ServerSpec
from .session import get_session, progress_line
from .staging import Scratch, scratch

evaluation_point = click.option(
    "--evaluation-point",
    envvar="EVALUATION_POINT",
    type=click.Choice([s.value for s in Schedule]),
    default=Schedule.FIXED.value,
    show_default=True,
    show_envvar=True,
    help="Which random point verifies each packet. Spark evaluates every packet at the first draw "
         "('fixed', as the original Spark pipeline); 'sequential' is refused.",
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


def _server_spec(params: dict[str, Any], opts: ServerOptions) -> ServerSpec:
    """This server's configuration, checked on the driver (bad values exit 2), as `prio` checks it."""
    if params.get("evaluation_point", SCHEDULE.value) != SCHEDULE.value:
        raise ConfigError("prio-spark evaluates every packet at the first draw: use --evaluation-point fixed")
    key = options.one_secret(
        params["private_key_hex"], params["private_key_file"], ("--private-key-hex", "--private-key-file"))
    seed = options.one_secret(
        params["shared_secret"], params["shared_secret_file"], ("--shared-secret", "--shared-secret-file"))
    if seed.given_bytes > SEED_BYTES:
        warn(opts.label,
              f"the shared secret has {seed.given_bytes} bytes; "
              f"using its first {SEED_BYTES}, as libprio does")
    if keys.public_key_bytes(key.public_key()) != keys.public_key_bytes(opts.public_key_internal):
        warn(opts.label, "the private key does not match --public-key-hex-internal; using the private key")
    return ServerSpec(opts.n_data, opts.batch_id, opts.server_id,
                      keys.public_key_to_hex(opts.public_key_internal),
                      keys.public_key_to_hex(opts.public_key_external),
                      opts.prg_keying.value, keys.private_key_to_hex(key), seed.seed)


def _report(stage: str, label: str, counts: jobs.Counts) -> None:
    """The original's count line on stdout; reasons and hints on stderr, as `prio`."""
    report(stage, label, adapter.tally_from_counts(stage, counts.total, counts.reasons, counts.skipped))


@contextlib.contextmanager
def _persisted(frame: DataFrame) -> Iterator[DataFrame]:
    """A stage result computed once for its output, its counts and its rejects."""
    frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        yield frame
    finally:
        frame.unpersist()


@contextlib.contextmanager
def _rejects(rejects: str | None, stage: str, server_id: str | None, *outputs: str) -> Iterator[RejectSink]:
    """The rejects list as `prio` writes it: one file (pipeline.runner.rejects_file), never in an output."""
    with runner.rejects_sink(options.optional_location(rejects), stage, server_id,
                             [location(out) for out in outputs]) as sink:
        yield sink


_INPUTS = {"input_": "--input", "input_internal": "--input-internal", "input_external": "--input-external"}


def _inputs(staged: Scratch, params: dict[str, Any]) -> dict[str, str]:
    return {name: staged.read(params[name], option) for name, option in _INPUTS.items() if name in params}


def _progress(label: str, stage: str) -> progress.Steady:
    """A line every PROGRESS_INTERVAL seconds while Spark starts and runs the stage's jobs."""
    return progress.Steady(progress_line(f"{label}: {stage}"), progress.interval())


class _Cache:
    """verify1's cache (--cache) for one stage: checked apart from the stage's other locations."""

    def __init__(self, stage: str, params: dict[str, Any], spec: ServerSpec, notice: Callable[[str], None]):
        self.path: str = params["cache"]
        self.folder = location(self.path)
        places = [params["output"], params["rejects"], *(params[name] for name in _INPUTS if name in params)]
        runner.check_cache_folder(self.folder, [location(p) for p in places if p is not None])
        self.parts = runner.input_parts(location(params["input_"]), "--input")
        self.server = spec.server()
        self.stage = stage
        self._notice = notice

    def notice(self, message: str) -> None:
        self._notice(f"{self.stage}: {message}")

    def checked(self, found: spark_cache.Found, counts: jobs.Counts) -> bool:
        """Whether the stage could use the cache: no task missed, and every row was read once."""
        why = counts.miss
        if why is None and spark_cache.add_positions(counts.positions) != (found.rows, found.positions):
            why = "rows of the cache are missing or repeated (altered, or not written by this server)"
        if why is not None:
            self.notice(f"stopped using the cache in {self.path}: {why}; reading the shares from the start")
        return why is None


def _verify1(
    spark: SparkSession, spec: ServerSpec, inputs: dict[str, str], stack: contextlib.ExitStack,
    cache: _Cache | None, cache_path: str | None,
) -> tuple[DataFrame, jobs.Counts, Callable[[], None]]:
    """verify1's result, counts, and what writes the cache's manifest once its rows are in place."""
    keyed = None if cache is None else spark_cache.keyed(cache.server, cache.parts)
    if cache is not None:
        spark_cache.forget(cache.folder)
    result = stack.enter_context(_persisted(jobs.verify1(spark, spec, inputs["input_"], False, keyed)))
    counts = jobs.counts(result)
    repeated = adapter.repeated(counts.key_hashes)
    if repeated:
        # Lines read as they were cannot tell which of two records with one id came first.
        result = stack.enter_context(_persisted(jobs.verify1(spark, spec, inputs["input_"], True, keyed)))
        counts = jobs.counts(result)
    if cache is None or cache_path is None:
        return result, counts, _nothing
    jobs.write_cache(result, cache_path)
    rows, positions = spark_cache.add_positions(counts.positions)
    return result, counts, lambda: spark_cache.write_manifest(cache.folder, cache.server, cache.parts, rows,
                                                             positions, repeated)


def _joined_stage(spark: SparkSession, stage: str, spec: ServerSpec, inputs: dict[str, str],
                  stack: contextlib.ExitStack, cache: _Cache | None,
                  cache_path: str | None) -> tuple[DataFrame, jobs.Counts, list[tuple[str, str, str]]]:
    """verify2's or aggregate's result and counts, over the cache when it can answer; with
    aggregate's cache, the data shares that correct the cache's sums."""
    internal, external = inputs["input_internal"], inputs["input_external"]
    if cache is not None and cache_path is not None:
        found, why_not = spark_cache.open_manifest(cache.folder, cache.parts, cache.server)
        if found is None:
            cache.notice(f"not using the cache in {cache.path}: {why_not}; reading the shares")
        else:
            over_cache: tuple[DataFrame, jobs.Counts, list[tuple[str, str, str]]] | None = None
            try:
                over_cache = _over_cache(spark, stage, spec, inputs, stack, found, cache_path)
                counts = over_cache[1]
            except (Py4JJavaError, CapturedException) as exc:
                # A cache file Spark cannot read (damaged Parquet) is a damaged cache.
                counts = jobs.Counts(miss=f"it cannot be read ({str(exc).strip().splitlines()[0][:200]})")
            if cache.checked(found, counts) and over_cache is not None:
                return over_cache
    plan = jobs.verify2 if stage == "verify2" else jobs.aggregate
    result = stack.enter_context(_persisted(plan(spark, spec, inputs["input_"], internal, external)))
    return result, jobs.counts(result), []


def _over_cache(spark: SparkSession, stage: str, spec: ServerSpec, inputs: dict[str, str],
                stack: contextlib.ExitStack, found: spark_cache.Found,
                cache_path: str) -> tuple[DataFrame, jobs.Counts, list[tuple[str, str, str]]]:
    internal, external = inputs["input_internal"], inputs["input_external"]
    result = stack.enter_context(_persisted(
        jobs.merged(spark, spec, stage, found.keyed, cache_path, internal, external)))
    counts = jobs.counts(result)
    if counts.exact:
        # A packet line's id is not the one Spark placed it by: joined as without a cache.
        cached = jobs.verify2_cached if stage == "verify2" else jobs.aggregate_cached
        result = stack.enter_context(_persisted(
            cached(spark, spec, found.keyed, found.repeated, cache_path, internal, external)))
        counts = jobs.counts(result)
    shares: list[tuple[str, str, str]] = []
    if counts.corrections and counts.miss is None:
        shares = jobs.shares_for(spark, spec, inputs["input_"], frozenset(counts.corrections))
        if not set(counts.corrections) <= {(key, digest) for key, digest, _ in shares}:
            counts.miss = "a share verify1 read is no longer in --input"
    return result, counts, shares


def _nothing() -> None:
    """No manifest to write."""


def _run_server_stage(ctx: _Context, stage: str, params: dict[str, Any]) -> None:
    click.echo(f"Running {stage}")
    opts = ServerOptions.from_params(params)
    spec = _server_spec(params, opts)
    with stage_errors(opts.label), _rejects(params["rejects"], stage, opts.server_id,
                                             params["output"]) as sink, _progress(opts.label, stage):
        cache = None
        if params.get("cache"):
            cache = _Cache(stage, params, spec, lambda message: warn(opts.label, message))
        spark = ctx.session(stage)
        finish: Callable[[], None] = _nothing
        with scratch(spark) as staged, contextlib.ExitStack() as stack:
            inputs = _inputs(staged, params)
            output = staged.write(params["output"], "--output")
            cache_path = None
            if cache is not None:
                cache_path = staged.write(cache.path, "--cache") if stage == "verify1" else \
                    staged.read(cache.path, "--cache")
            if stage == "verify1":
                result, counts, finish = _verify1(spark, spec, inputs, stack, cache, cache_path)
                shares: list[tuple[str, str, str]] = []
            else:
                result, counts, shares = _joined_stage(spark, stage, spec, inputs, stack, cache, cache_path)
            if counts.mismatch:
                raise SettingsMismatch(counts.mismatch)
            if stage == "aggregate":
                total = adapter.merge_partials(spec, jobs.partials(counts))
                total = adapter.corrected(spec, total, counts.corrections, shares)
                tally = adapter.tally_from_counts(stage, counts.total, counts.reasons)
                jobs.write_one(spark, adapter.aggregate_row(spec, total, tally, counts.stamped), output)
            else:
                jobs.write_records(spark, result, output)
            for entry in counts.listed:
                sink(entry)
        finish()
    _report(stage, opts.label, counts)


@entry_point.command()
@options.server_command
@options.input_1
@options.output_1
@options.prg_keying
@evaluation_point
@options.rejects_option
@options.cache_option
@click.pass_obj
def verify1(ctx: _Context, **params: Any) -> None:
    """Decode a batch of shares

    Decrypts and checks each client share of --input and writes its record,
    with this server's verify1 packet as payload, into --output.
    """
    _run_server_stage(ctx, "verify1", params)


@entry_point.command()
@options.server_command
@options.input_1
@options.input_2
@options.output_1
@options.prg_keying
@evaluation_point
@options.rejects_option
@options.cache_option
@click.pass_obj
def verify2(ctx: _Context, **params: Any) -> None:
    """Verify a batch of SNIPs

    Joins the shares of --input with both servers' verify1 packets by id and
    writes each share's record, with this server's verify2 packet as payload.
    """
    _run_server_stage(ctx, "verify2", params)


@entry_point.command()
@options.server_command
@options.input_1
@options.input_2
@options.output_1
@options.prg_keying
@options.rejects_option
@options.cache_option
@click.pass_obj
def aggregate(ctx: _Context, **params: Any) -> None:
    """Generate an aggregate share from a batch of verified SNIPs

    Adds up the data shares of every client whose proof both servers' verify2
    packets accept; writes {"payload", "error", "total", ...} into --output.
    """
    _run_server_stage(ctx, "aggregate", params)


@entry_point.command()
@options.publish_options
@click.pass_obj
def publish(ctx: _Context, **params: Any) -> None:
    """Generate a final aggregate from both servers' aggregate shares

    Combines this server's aggregate (--input-internal) with the partner's
    (--input-external) into per-index counts; writes {"id", "timestamp",
    "payload", "error", "total"} into --output. The secrets are accepted, as
    by the original, but not needed.
    """
    click.echo("Running publish")
    opts = ServerOptions.from_params(params)
    # Publish refuses bad aggregates instead of rejecting records: its rejects list stays empty.
    with stage_errors(opts.label), _rejects(params["rejects"], "publish", opts.server_id, params["output"]), \
            _progress(opts.label, "publish"):
        spark = ctx.session("publish")
        with scratch(spark) as staged:
            inputs = _inputs(staged, params)
            internal, external = (adapter.parse_lines(jobs.collect_lines(spark, inputs[f"input_{side}"],
                                                                         f"--input-{side}"))
                                  for side in ("internal", "external"))
            try:
                record = stages.publish(opts.config, "AB".index(opts.server_id), internal, external,
                                        params["min_batch_size"], params["prec"], params["max_error_ratio"])
            except PublishError as exc:
                raise ConfigError(f"{opts.label}: refusing to publish: {exc}") from None
            jobs.write_one(spark, record, staged.write(params["output"], "--output"))
    warn(opts.label, f"published {record['total'] - record['error']} valid clients "
                      f"({record['error']} errors out of {record['total']} total)")


def _client_spec(n_data: int, batch_id: bytes, key_a: X25519PublicKey, key_b: X25519PublicKey,
                 prg_keying: str) -> ClientSpec:
    return ClientSpec(n_data, batch_id, keys.public_key_to_hex(key_a), keys.public_key_to_hex(key_b),
                      prg_keying)


@entry_point.command("encode-shares")
@options.encode_shares_options
@click.pass_obj
def encode_shares(ctx: _Context, n_data: int, batch_id: bytes, public_key_hex_internal: X25519PublicKey,
                  public_key_hex_external: X25519PublicKey, input_: str, output_a: str, output_b: str,
                  prg_keying: str, prec: int | None, rejects: str | None) -> None:
    """Encode plaintext client data into encrypted shares for servers A and B.

    Input lines are {"payload": [bits]} (or [integers] with --prec); each output
    line is {"id", "payload": base64 packet}, the same id for A and B.
    """
    click.echo("Running encode shares")
    label = f"batch {batch_id.decode('utf-8', 'replace')}"
    spec = _client_spec(n_data, batch_id, public_key_hex_internal, public_key_hex_external, prg_keying)
    with stage_errors(label), _rejects(rejects, "encode-shares", None, output_a, output_b) as sink:
        spark = ctx.session("encode-shares")
        # Shares are random: both outputs are written from one persisted computation.
        with scratch(spark) as staged, \
                _persisted(jobs.encode(spark, spec, staged.read(input_, "--input"), prec)) as result:
            counts = jobs.counts(result)
            jobs.write_shares(result, "a", staged.write(output_a, "--output-A"))
            jobs.write_shares(result, "b", staged.write(output_b, "--output-B"))
            for entry in counts.listed:
                sink(entry)
    tally = adapter.tally_from_counts("encode-shares", counts.total, counts.reasons)
    breakdown = f" ({tally.breakdown()})" if tally.breakdown() else ""
    warn(label, f"encode-shares: {tally.summary()}{breakdown}")


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
def generate(ctx: _Context, n_data: int, batch_id: bytes, public_key_hex_internal: X25519PublicKey,
             public_key_hex_external: X25519PublicKey, output: str, prg_keying: str, n_rows: int, scale: int,
             partition_size_mb: int) -> None:
    """Generate random client shares into <output>/server_id=a/ and server_id=b/."""
    spec = _client_spec(n_data, batch_id, public_key_hex_internal, public_key_hex_external, prg_keying)
    spark = ctx.session("generate")
    n_partitions = jobs.partitions_for(spec, n_rows, scale, partition_size_mb)
    click.echo(f"writing {n_partitions} partitions")
    with stage_errors("generate"), scratch(spark) as staged:
        jobs.generate(spark, spec, staged.write(output, "--output"), n_rows, scale, n_partitions)


@entry_point.command("generate-integration")
@click.option("--data-config", envvar="DATA_CONFIG", default=None, show_envvar=True,
              help="A JSON file listing the batches as [{\"batch_id\": ..., \"n_data\": ...}] "
              "[default: config/test-small.json, which the package ships].")
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
def generate_integration(ctx: _Context, data_config: str | None, public_key_hex_internal: X25519PublicKey,
                         public_key_hex_external: X25519PublicKey, output: str, n_rows: int,
                         n_partitions: int, n_drop_batch: int, prg_keying: str) -> None:
    """Generate test data from a configuration file (internal key = server A's, external = B's).

    Each kept batch gets n_rows - 1 clients with payload[i] = 1 if i % 3 == 0 or
    i % 5 == 0 and one client encoded with n_data + 1; an unknown batch "bad-id"
    gets n_rows clients. Writes <output>/server_id={a,b}/batch_id=<id>/.
    """
    try:
        batches = dataconfig.load_default() if data_config is None else dataconfig.load(location(data_config))
    except StorageError as exc:
        raise ConfigError(str(exc)) from None
    spec = _client_spec(1, b"", public_key_hex_internal, public_key_hex_external, prg_keying)
    plan: list[tuple[IntegrationRow, int]] = []
    for batch in integration.kept_batches(batches, n_drop_batch):
        if n_rows > 1:
            plan.append((IntegrationRow(batch.batch_id, batch.n_data, batch.n_data), n_rows - 1))
        plan.append((IntegrationRow(batch.batch_id, batch.n_data, batch.n_data + 1), 1))
    unknown = integration.UNKNOWN_BATCH_N_DATA
    plan.append((IntegrationRow(integration.UNKNOWN_BATCH, unknown, unknown), n_rows))
    spark = ctx.session("generate-integration")
    with stage_errors("generate-integration"), scratch(spark) as staged:
        jobs.generate_integration(spark, spec, plan, staged.write(output, "--output"), n_partitions)


def main() -> None:
    """Console script entry point; also the body of prio_processor/spark/submit.py."""
    entry_point(prog_name="prio-spark")


if __name__ == "__main__":
    main()
