"""prio-processor: batch processing for Prio servers, wire-compatible with libprio 1.x."""

import os

__version__ = "4.0.0"

# The engine's numpy arithmetic is integer only and never calls BLAS, whose thread pool
# would cost every command (and every worker) start-up time for nothing. Set before numpy
# loads; an explicit setting is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
