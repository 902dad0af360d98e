"""The `prio` group. Commands are imported only when run, so that `prio --help` and
`prio bucket ...` start fast and load neither numpy nor the Prio engine."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import click

# name -> ("module:attribute", one-line help shown by `prio --help`).
COMMANDS: dict[str, tuple[str, str]] = {
    "shared-seed": ("prio_processor.cli.commands:shared_seed", "Generate a shared server secret in base64."),
    "keygen": ("prio_processor.cli.commands:keygen", "Generate a curve25519 key pair as json."),
    "encode-shares": (
        "prio_processor.cli.commands:encode_shares",
        "Encode plaintext client data into encrypted shares for servers A and B.",
    ),
    "verify1": ("prio_processor.cli.commands:verify1", "Decode a batch of shares"),
    "verify2": ("prio_processor.cli.commands:verify2", "Verify a batch of SNIPs"),
    "aggregate": (
        "prio_processor.cli.commands:aggregate",
        "Generate an aggregate share from a batch of verified SNIPs",
    ),
    "publish": (
        "prio_processor.cli.commands:publish",
        "Generate a final aggregate from both servers' aggregate shares",
    ),
    "bucket": (
        "prio_processor.cli.bucket:bucket",
        "Storage operations on local folders, gs:// and s3:// buckets, for the bin/ scripts.",
    ),
    "batches": ("prio_processor.cli.integration:batches", 'Print "<batch_id> <n_data>" for every batch.'),
    "summary": (
        "prio_processor.cli.summary:summary_command",
        "Print what a server's run did, batch by batch.",
    ),
    "process": (
        "prio_processor.cli.process:process_command",
        "One server's whole run, as bin/process starts it once it has checked its settings.",
    ),
    "integration": (
        "prio_processor.cli.integration:integration_group",
        "Deterministic test data for both servers, and the check of what they published.",
    ),
}


class LazyGroup(click.Group):
    """A group whose commands live in modules imported on first use.

    `lazy_commands` maps a command name to ("module:attribute", one-line help); the
    help is shown by the group's --help without importing anything.
    """

    def __init__(self, *args: Any, lazy_commands: dict[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = lazy_commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.lazy_commands) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name not in self.lazy_commands:
            return None
        module_name, attribute = self.lazy_commands[cmd_name][0].split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        self.commands[cmd_name] = command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from `lazy_commands`, without importing the commands."""
        rows = [
            (name, self.lazy_commands[name][1])
            for name in self.list_commands(ctx)
            if name in self.lazy_commands
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def version_option(prog_name: str) -> Callable[[Any], Any]:
    """--version, looked up only when asked for (package metadata is slow to load)."""

    def show(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if not value or ctx.resilient_parsing:
            return
        from importlib import metadata

        try:
            found = metadata.version("prio-processor")
        except metadata.PackageNotFoundError:  # running from a source tree
            found = "unknown"
        click.echo(f"{prog_name} {found}")
        ctx.exit()

    return click.option(
        "--version",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=show,
        help="Show the version and exit.",
    )


@click.group(cls=LazyGroup, lazy_commands=COMMANDS)
@version_option("prio")
def entry_point() -> None:
    """Prio servers' batch stages: verify client shares, aggregate, publish."""
