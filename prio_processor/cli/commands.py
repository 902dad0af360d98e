"""`prio`'s commands: a thin shell over prio_processor.pipeline.runner.

stdout carries exactly the original's lines: `Running <stage>` and, for verify1,
verify2 and aggregate, `N errors out of M total`; encode-shares prints nothing
and publish only `Running publish`. Everything else (reasons, warnings, the
publish summary) goes to stderr, each line naming the server and batch.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from ..engine import keys
from ..engine.client import Client
from ..engine.prg import SEED_BYTES, PrgKeying
from ..engine.server import Schedule, Server
from ..pipeline import runner
from ..pipeline.errors import InputError, PublishError, SettingsMismatch
from ..pipeline.tally import Tally
from ..pipeline.workers import default_workers
from ..storage import Location, StorageError, location
from . import options, progress
from .base import ConfigError
from .main import entry_point
from .options import ServerOptions

# Rejected shares above this share of a batch point at settings rather than at clients.
_SUSPICIOUS_SHARE = 0.5
# What a mostly rejected batch most likely means, by its most common reason.
_LIKELY_CAUSES = {
    "decrypt_failed": "the shares were encrypted to another key: check --private-key-hex and --server-id",
    "wrong_batch_id": "the clients used another batch id: check --batch-id",
    "wrong_server": "these are the other server's shares: check --server-id and the input",
    "wrong_length": "the clients used another vector length: check --n-data",
    "missing_peer_packet": "the partner rejected these clients (see its log: a wrong key there, say), "
    "or its files are of another batch or incomplete",
    "missing_own_packet": "--input-internal is of another batch or incomplete",
}
_SETTINGS_CAUSE = (
    "--evaluation-point, --prg-keying, the keys or the shared secret likely differ from the partner's"
)


def warn(label: str, message: str) -> None:
    """A stderr line naming the server and batch (stdout keeps the original's lines)."""
    click.echo(f"{label}: {message}", err=True)


def _no_length() -> Iterator[None]:
    """An iterable without a length, so click's progress bar counts instead of measuring."""
    yield from ()


class _Progress:
    """A record counter on stderr: a live one on a terminal (not in CI), else a line at a
    steady pace (see cli/progress.py) with the total of a local --input."""

    def __init__(self, stage: str, label: str, source: Location | None = None) -> None:
        self._bar: Any = None
        self._steady: progress.Steady | None = None
        self._counter: progress.RecordCounter | None = None
        if not (sys.stderr.isatty() and not os.environ.get("CI")):
            every = progress.interval()
            if every > 0:
                self._counter = progress.RecordCounter(
                    f"{label}: {stage}", lambda: progress.local_line_count(source)
                )
                self._steady = progress.Steady(self._counter.describe, every)
        else:
            self._bar = click.progressbar(
                _no_length(),  # a counter, not a bar
                length=None,
                label=f"{stage} ({label})",
                file=sys.stderr,
                show_pos=True,
                update_min_steps=256,
            )

    def __enter__(self) -> Callable[[int], None]:
        if self._steady is not None and self._counter is not None:
            self._steady.__enter__()
            return self._counter.add
        if self._bar is None:
            return lambda count: None
        self._bar.__enter__()
        return self._bar.update

    def __exit__(self, *exc: Any) -> None:
        if self._steady is not None:
            self._steady.__exit__(*exc)
        if self._bar is not None:
            self._bar.__exit__(*exc)


@contextlib.contextmanager
def stage_errors(label: str) -> Iterator[None]:
    """Errors of a running stage as one line naming the server and batch, exit status 2."""
    try:
        yield
    except (StorageError, InputError, SettingsMismatch) as exc:
        raise ConfigError(f"{label}: {exc}") from None


def report(stage: str, label: str, tally: Tally) -> None:
    """The original's count line on stdout; reasons and hints on stderr."""
    click.echo(tally.summary())
    breakdown = tally.breakdown()
    if breakdown:
        warn(label, f"{stage} rejected {breakdown}")
    if tally.total and tally.errors > _SUSPICIOUS_SHARE * tally.total:
        top = tally.reasons.most_common(1)[0][0]
        cause = _LIKELY_CAUSES.get(top, _SETTINGS_CAUSE)
        warn(
            label,
            f"more than half of the batch failed {stage} ({tally.errors} of {tally.total}, mostly {top}): "
            f"{cause}",
        )


def _server(params: dict[str, Any], opts: ServerOptions) -> Server:
    key = options.one_secret(
        params["private_key_hex"], params["private_key_file"], ("--private-key-hex", "--private-key-file")
    )
    seed = options.one_secret(
        params["shared_secret"], params["shared_secret_file"], ("--shared-secret", "--shared-secret-file")
    )
    if seed.given_bytes > SEED_BYTES:
        warn(
            opts.label,
            f"the shared secret has {seed.given_bytes} bytes; using its first {SEED_BYTES}, as libprio does",
        )
    if keys.public_key_bytes(key.public_key()) != keys.public_key_bytes(opts.public_key_internal):
        warn(opts.label, "the private key does not match --public-key-hex-internal; using the private key")
    return Server(opts.config, opts.server_id, key, seed.seed, opts.prg_keying)


@entry_point.command("shared-seed")
def shared_seed() -> None:
    """Generate a shared server secret in base64."""
    click.echo(json.dumps({"shared_seed": base64.b64encode(os.urandom(SEED_BYTES)).decode()}))


@entry_point.command()
def keygen() -> None:
    """Generate a curve25519 key pair as json."""
    private, public = keys.generate_keypair()
    click.echo(
        json.dumps(
            {"private_key": keys.private_key_to_hex(private), "public_key": keys.public_key_to_hex(public)}
        )
    )


@entry_point.command("encode-shares")
@options.encode_shares_options
def encode_shares(**params: Any) -> None:
    """Encode plaintext client data into encrypted shares for servers A and B.

    Input lines are {"payload": [bits]} (or [integers] with --prec); each output
    line is {"id", "payload": base64 packet}, the same id for A and B, in a file
    named like the input part. Prints nothing on stdout, as the original.
    """
    config = options.make_config(
        params["n_data"],
        params["batch_id"],
        params["public_key_hex_internal"],
        params["public_key_hex_external"],
        ("", ""),
    )
    label = f"batch {params['batch_id'].decode('utf-8', 'replace')}"
    client = Client(config, PrgKeying(params["prg_keying"]))
    with stage_errors(label), _Progress("encode-shares", label, location(params["input_"])) as counter:
        tally, _ = runner.run_stage(
            "encode-shares",
            client,
            runner.Inputs(shares=location(params["input_"])),
            location(params["output_a"]),
            options.optional_location(params["rejects"]),
            output_b=location(params["output_b"]),
            prec=params["prec"],
            progress=counter,
        )
    warn(
        label, f"encode-shares: {tally.summary()}" + (f" ({tally.breakdown()})" if tally.breakdown() else "")
    )


def _run_server_stage(stage: str, params: dict[str, Any], inputs: runner.Inputs) -> None:
    click.echo(f"Running {stage}")
    opts = ServerOptions.from_params(params)
    server = _server(params, opts)
    schedule = Schedule(params.get("evaluation_point") or Schedule.SEQUENTIAL)
    source = location(params["input_"])
    with stage_errors(opts.label), _Progress(stage, opts.label, source) as counter:
        tally, _ = runner.run_stage(
            stage,
            server,
            inputs,
            location(params["output"]),
            options.optional_location(params["rejects"]),
            schedule=schedule,
            progress=counter,
            workers=params.get("workers") or default_workers(),
            cache=options.optional_location(params.get("cache")),
            notice=lambda message: warn(opts.label, f"{stage}: {message}"),
        )
    report(stage, opts.label, tally)


def _joined_inputs(params: dict[str, Any]) -> runner.Inputs:
    return runner.Inputs(
        location(params["input_"]), location(params["input_internal"]), location(params["input_external"])
    )


@entry_point.command()
@options.server_command
@options.input_1
@options.output_1
@options.prg_keying
@options.evaluation_point
@options.rejects_option
@options.workers_option
@options.cache_option
def verify1(**params: Any) -> None:
    """Decode a batch of shares

    Decrypts and checks each client share of --input and writes its record,
    with this server's verify1 packet as payload, into --output.
    """
    _run_server_stage("verify1", params, runner.Inputs(shares=location(params["input_"])))


@entry_point.command()
@options.server_command
@options.input_1
@options.input_2
@options.output_1
@options.prg_keying
@options.evaluation_point
@options.rejects_option
@options.workers_option
@options.cache_option
def verify2(**params: Any) -> None:
    """Verify a batch of SNIPs

    Joins the shares of --input with both servers' verify1 packets by id and
    writes each share's record, with this server's verify2 packet as payload.
    """
    _run_server_stage("verify2", params, _joined_inputs(params))


@entry_point.command()
@options.server_command
@options.input_1
@options.input_2
@options.output_1
@options.prg_keying
@options.rejects_option
@options.workers_option
@options.cache_option
def aggregate(**params: Any) -> None:
    """Generate an aggregate share from a batch of verified SNIPs

    Adds up the data shares of every client whose proof both servers' verify2
    packets accept; writes {"payload", "error", "total", ...} into --output.
    """
    _run_server_stage("aggregate", params, _joined_inputs(params))


@entry_point.command()
@options.publish_options
def publish(**params: Any) -> None:
    """Generate a final aggregate from both servers' aggregate shares

    Combines this server's aggregate (--input-internal) with the partner's
    (--input-external) into per-index counts; writes {"id", "timestamp",
    "payload", "error", "total"} into --output. The private key and shared
    secret are accepted, as by the original, but not needed.
    """
    click.echo("Running publish")
    opts = ServerOptions.from_params(params)
    with stage_errors(opts.label):
        try:
            _, record = runner.run_stage(
                "publish",
                (opts.config, opts.server_id),
                runner.Inputs(
                    internal=location(params["input_internal"]), external=location(params["input_external"])
                ),
                location(params["output"]),
                options.optional_location(params["rejects"]),
                min_batch_size=params["min_batch_size"],
                prec=params["prec"],
                max_error_ratio=params["max_error_ratio"],
            )
        except PublishError as exc:
            raise ConfigError(f"{opts.label}: refusing to publish: {exc}") from None
    assert record is not None
    warn(
        opts.label,
        f"published {record['total'] - record['error']} valid clients "
        f"({record['error']} errors out of {record['total']} total)",
    )
