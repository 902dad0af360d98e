"""The `prio` command line."""

from . import bucket, integration  # noqa: F401  (register their commands)
from .commands import entry_point

__all__ = ["entry_point"]
