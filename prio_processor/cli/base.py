"""What every `prio` command shares without loading the engine: configuration errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from ..storage import StorageError


class ConfigError(click.ClickException):
    """A configuration problem: one line on stderr, exit status 2."""

    exit_code = 2


@contextlib.contextmanager
def storage_errors(prefix: str = "") -> Iterator[None]:
    """Unreadable or unwritable locations (a full disk too) are configuration errors."""
    try:
        yield
    except StorageError as exc:
        raise ConfigError(f"{prefix}{exc}") from None
