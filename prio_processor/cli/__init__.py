"""The `prio` command line."""

from .main import entry_point

__all__ = ["entry_point"]
