"""prio-processor: batch processing for Prio servers, wire-compatible with libprio 1.x."""

__version__ = "4.0.0"
