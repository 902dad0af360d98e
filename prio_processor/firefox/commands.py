"""The `prio-processor` group: Firefox prio pings in, results by origin out.

Commands are imported only when run, so that `prio-processor --help` starts fast
and loads neither numpy nor matplotlib.
"""

from __future__ import annotations

import click

from ..cli.main import LazyGroup, version_option

_MODULE = "prio_processor.firefox.subcommands"

# name -> ("module:attribute", one-line help shown by `prio-processor --help`).
COMMANDS: dict[str, tuple[str, str]] = {
    "staging": (
        f"{_MODULE}:staging_command",
        "Explode the prio pings of one date into shares per server and batch id.",
    ),
    "fetch-origins": (
        f"{_MODULE}:fetch_origins",
        "Print the origin list [{name, hash, index}] with __UNKNOWN__ last.",
    ),
    "index": (f"{_MODULE}:index_command", "Map published totals to origins: one row per origin and batch."),
    "insert": (
        f"{_MODULE}:insert_command",
        "Replace one date's rows in the results table (SQLite or BigQuery).",
    ),
    "report": (
        f"{_MODULE}:report_command",
        "Write a self-contained HTML page per date: overview, trends, every origin.",
    ),
    "generate-pings": (
        f"{_MODULE}:generate_pings",
        "Firefox-shaped prio pings with planted counts (for tests).",
    ),
    "check": (
        f"{_MODULE}:check_command",
        "Check the results table against the counts generate-pings planted.",
    ),
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS)
@version_option("prio-processor")
def entry_point() -> None:
    """Firefox origin telemetry: stage prio pings, index published totals by origin, load and report them.

    Configuration errors (a missing input, a bad data config, an unreadable
    database) exit with status 2 and one line on stderr.
    """
