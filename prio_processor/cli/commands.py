"""`prio`: the stages of one Prio server, as a thin shell over prio_processor.pipeline.

Each stage reads a file or a folder of part files (local or gs://, JSON lines
or Parquet) and writes into --output. verify1 writes one file per input part,
named like it; verify2 does the same for the parts of --input when
--input-internal is a folder, and otherwise writes one file named like
--input-internal. aggregate and publish write one file, named like
--input-internal (or aggregate.ndjson / publish.ndjson for folders). Every
stage lists its rejected records as {id, reason, detail} in
_rejects.<stage>.ndjson beside its output and prints one summary line.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sys
from typing import Any, Iterable, Iterator

import click

from ..engine import keys
from ..engine.client import Client
from ..engine.prg import SEED_BYTES, PrgKeying
from ..engine.server import Schedule, Server
from ..pipeline import stages
from ..pipeline.tally import Tally
from ..storage import Location, RecordWriter, StorageError, location, read_all
from . import options
from .options import ConfigError


class _Progress:
    """A record counter on stderr when it is a terminal; silent in pipes and CI."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.enabled = sys.stderr.isatty() and not os.environ.get("CI")
        self.count = 0

    def wrap(self, records: Iterable[Any]) -> Iterator[Any]:
        for record in records:
            self.count += record is not stages.END_OF_PART
            if self.enabled and self.count % 256 == 0:
                click.echo(f"\r{self.label}: {self.count:,} records", nl=False, err=True)
            yield record
        if self.enabled and self.count >= 256:
            click.echo(f"\r{self.label}: {self.count:,} records", err=True)


@contextlib.contextmanager
def _storage_errors() -> Iterator[None]:
    try:
        yield
    except StorageError as exc:
        raise ConfigError(str(exc)) from None


def _output_folder(path: str) -> Location:
    loc = location(path)
    if loc.is_file():
        raise ConfigError(f"--output {loc} is a file, expected a folder")
    return loc


def _config(params: dict):
    """The batch configuration; the internal key is this server's, so B's swaps them."""
    pair = (params["public_key_hex_internal"], params["public_key_hex_external"])
    names = ("--public-key-hex-internal", "--public-key-hex-external")
    if params["server_id"] == "B":
        pair, names = pair[::-1], names[::-1]
    return options.make_config(params["n_data"], params["batch_id"], pair[0], pair[1], names)


def _server(params: dict) -> Server:
    key = options.private_key(params["private_key_hex"], params["private_key_file"])
    seed = options.shared_secret(params["shared_secret"], params["shared_secret_file"])
    config = _config(params)
    if keys.public_key_to_hex(key.public_key()) != params["public_key_hex_internal"].strip().upper():
        raise ConfigError("the private key does not match --public-key-hex-internal")
    return Server(config, params["server_id"], key, seed, PrgKeying(params["prg_keying"]))


def _named(folder: Location, source: Location, fallback: str) -> Location:
    return folder.join(source.name if source.is_file() else fallback)


def _rejects(folder: Location, stage: str) -> Location:
    return folder.join(f"_rejects.{stage}.ndjson")


def _indexes(params: dict, tally: Tally) -> tuple[Location, stages.Index, stages.Index]:
    """--input-internal's location, and both verification packet files indexed by id."""
    internal, internal_parts = options.input_parts(params["input_internal"], "--input-internal")
    _, external_parts = options.input_parts(params["input_external"], "--input-external")
    return internal, stages.load_index(read_all(internal_parts), tally), stages.load_index(read_all(external_parts), tally)


@click.group()
def entry_point() -> None:
    """Prio servers' batch stages: verify client shares, aggregate, publish."""


@entry_point.command("shared-seed")
def shared_seed() -> None:
    """Generate a shared server secret in base64."""
    click.echo(json.dumps({"shared_seed": base64.b64encode(os.urandom(SEED_BYTES)).decode()}))


@entry_point.command()
def keygen() -> None:
    """Generate a curve25519 key pair as json."""
    private, public = keys.generate_keypair()
    click.echo(json.dumps({"private_key": keys.private_key_to_hex(private), "public_key": keys.public_key_to_hex(public)}))


@entry_point.command("encode-shares")
@options.data_config
@options.public_key
@options.input_1
@options.output_2
@options.prg_keying
@click.option("--prec", type=click.IntRange(1, 64), default=None,
              help="Encode unsigned integers of this many bits (most significant first) instead of bits; "
                   "--n-data is then the number of integers times --prec.")
def encode_shares(n_data, batch_id, public_key_hex_internal, public_key_hex_external, input_, output_a, output_b,
                  prg_keying, prec) -> None:
    """Encode client data into shares for servers A and B.

    Input lines are {"payload": [bits]} (or [integers] with --prec); each output
    line is {"id", "payload": base64 packet}, the same id for A and B.
    """
    config = options.make_config(n_data, batch_id, public_key_hex_internal, public_key_hex_external,
                                 ("--public-key-hex-internal", "--public-key-hex-external"))
    client = Client(config, PrgKeying(prg_keying))
    with _storage_errors():
        source, parts = options.input_parts(input_, "--input")
        folder_a, folder_b = _output_folder(output_a), _output_folder(output_b)
        progress = _Progress("encode-shares")
        with Tally("encode-shares", _rejects(folder_a, "encode-shares")) as tally:
            for part in parts:
                with RecordWriter(folder_a.join(part.name)) as out_a, RecordWriter(folder_b.join(part.name)) as out_b:
                    stages.encode_shares(client, progress.wrap(read_all([part])), out_a.write, out_b.write, tally, prec)
    click.echo(tally.summary())


@contextlib.contextmanager
def _server_stage(stage: str, params: dict) -> Iterator[tuple[Server, list[Location], Location, Tally]]:
    """(server, input parts, output folder, tally) of a server stage; storage errors exit 2."""
    click.echo(f"Running {stage}")
    server = _server(params)
    with _storage_errors():
        _, parts = options.input_parts(params["input_"], "--input")
        folder = _output_folder(params["output"])
        with Tally(stage, _rejects(folder, stage)) as tally:
            yield server, parts, folder, tally


def _server_command(func):
    for decorator in reversed([options.data_config, options.server_id_option, options.private_key_options,
                               options.shared_secret_options, options.public_key]):
        func = decorator(func)
    return func


@entry_point.command()
@_server_command
@options.input_1
@options.output_1
@options.prg_keying
@options.evaluation_point
def verify1(**params) -> None:
    """Decode a batch of shares

    Decrypts and checks each client share of --input and writes this server's
    verify1 packet for it, {"id", "payload"}, into --output.
    """
    with _server_stage("verify1", params) as (server, parts, folder, tally):
        # One point stream for the whole command, across parts, as the original's one server.
        with _PartOutputs(folder, [part.name for part in parts]) as outputs:
            stages.verify1(server, Schedule(params["evaluation_point"]), _Progress("verify1").wrap(outputs.stream(parts)),
                           outputs.sink, tally)
    click.echo(tally.summary())


class _PartOutputs:
    """Output files named after input parts, one open at a time.

    The stream marks the end of each part so the stage writes out its pending
    batch; records then always belong to the file that is open.
    """

    def __init__(self, folder: Location, names: list[str]) -> None:
        self._folder = folder
        self._names = names
        self._writer: RecordWriter | None = None
        self._name: str | None = None

    def stream(self, parts: list[Location]) -> Iterator[Any]:
        for part, name in zip(parts, self._names):
            if name != self._name:
                self._close(None)
                self._writer = RecordWriter(self._folder.join(name)).__enter__()
                self._name = name
            yield from read_all([part])
            yield stages.END_OF_PART

    def sink(self, record: dict) -> None:
        self._writer.write(record)

    def _close(self, exc: BaseException | None) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.__exit__(type(exc) if exc else None, exc, None)

    def __enter__(self) -> "_PartOutputs":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._close(exc)


@entry_point.command()
@_server_command
@options.input_1
@options.input_2
@options.output_1
@options.prg_keying
@options.evaluation_point
def verify2(**params) -> None:
    """Verify a batch of SNIPs

    Joins the shares of --input with both servers' verify1 packets by id and
    writes this server's verify2 packet for each, {"id", "payload"}.
    """
    with _server_stage("verify2", params) as (server, parts, folder, tally):
        internal_loc, internal, external = _indexes(params, tally)
        names = [internal_loc.name] * len(parts) if internal_loc.is_file() else [part.name for part in parts]
        with _PartOutputs(folder, names) as outputs:
            stages.verify2(server, Schedule(params["evaluation_point"]),
                           _Progress("verify2").wrap(outputs.stream(parts)), internal, external, outputs.sink, tally)
    click.echo(tally.summary())


@entry_point.command()
@_server_command
@options.input_1
@options.input_2
@options.output_1
@options.prg_keying
def aggregate(**params) -> None:
    """Generate an aggregate share from a batch of verified SNIPs

    Adds up the data shares of every client whose proof both servers' verify2
    packets accept; writes {"payload", "error", "total", ...} into --output.
    """
    with _server_stage("aggregate", params) as (server, parts, folder, tally):
        internal_loc, internal, external = _indexes(params, tally)
        total = stages.aggregate(server, _Progress("aggregate").wrap(read_all(parts)), internal, external, tally)
        click.echo(tally.summary())
        with RecordWriter(_named(folder, internal_loc, "aggregate.ndjson")) as out:
            out.write(stages.aggregate_record(server, total, tally))


@entry_point.command()
@options.data_config
@options.server_id_option
@options.public_key
@options.input_2
@options.output_1
@click.option("--min-batch-size", type=click.IntRange(min=0), default=0, show_default=True,
              help="Refuse to publish totals of fewer valid clients than this (a privacy floor; 0 turns it off).")
@click.option("--prec", type=click.IntRange(1, 64), default=None,
              help="The batch holds unsigned integers of this many bits: publish integer totals, not bit counts.")
def publish(**params) -> None:
    """Generate a final aggregate from both servers' aggregate shares

    Combines this server's aggregate (--input-internal) with the partner's
    (--input-external) into per-index counts; writes {"id", "timestamp",
    "payload", "error", "total"} into --output.
    """
    click.echo("Running publish")
    config = _config(params)
    with _storage_errors():
        internal_loc, internal_parts = options.input_parts(params["input_internal"], "--input-internal")
        _, external_parts = options.input_parts(params["input_external"], "--input-external")
        folder = _output_folder(params["output"])
        try:
            record = stages.publish(config, "AB".index(params["server_id"]), read_all(internal_parts),
                                    read_all(external_parts), params["min_batch_size"], params["prec"])
        except stages.PublishError as exc:
            raise click.ClickException(f"refusing to publish: {exc}") from None
        with RecordWriter(_named(folder, internal_loc, "publish.ndjson")) as out:
            out.write(record)
    click.echo(f"{record['error']} errors out of {record['total']} total")
