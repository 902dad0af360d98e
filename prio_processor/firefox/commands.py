"""The `prio-processor` group: Firefox prio pings in, results by origin out.

Commands are imported only when run, so that `prio-processor --help` starts fast
and loads neither numpy nor matplotlib.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

import click

_MODULE = "prio_processor.firefox.subcommands"

# name -> (attribute of _MODULE, one-line help shown by `prio-processor --help`).
COMMANDS: dict[str, tuple[str, str]] = {
    "staging": ("staging_command", "Explode the prio pings of one date into shares per server and batch id."),
    "fetch-origins": ("fetch_origins", "Print the origin list [{name, hash, index}] with __UNKNOWN__ last."),
    "index": ("index_command", "Map published totals to origins: one row per origin and batch."),
    "insert": ("insert_command", "Replace one date's rows in the results table (SQLite or BigQuery)."),
    "report": ("report_command", "Write a self-contained HTML page per date: top origins per metric."),
    "generate-pings": ("generate_pings", "Firefox-shaped prio pings with planted counts (for tests)."),
    "check": ("check_command", "Check the results table against the counts generate-pings planted."),
}


class LazyGroup(click.Group):
    """A group whose commands live in a module imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        command = getattr(importlib.import_module(_MODULE), COMMANDS[cmd_name][0])
        return command if isinstance(command, click.Command) else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from COMMANDS, without importing the commands."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in self.list_commands(ctx)])


def _version() -> str:
    try:
        return version("prio-processor")
    except PackageNotFoundError:  # running from a source tree
        return "unknown"


@click.group(cls=LazyGroup)
@click.version_option(_version(), "--version", prog_name="prio-processor", message="%(prog)s %(version)s")
def entry_point() -> None:
    """Firefox origin telemetry: stage prio pings, index published totals by origin, load and report them.

    Configuration errors (a missing input, a bad data config, an unreadable
    database) exit with status 2 and one line on stderr.
    """
