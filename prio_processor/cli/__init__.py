"""The `prio` command line."""

from .commands import entry_point

__all__ = ["entry_point"]
