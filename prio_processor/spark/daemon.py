"""Spark's Python worker daemon (spark.python.daemon.module) with the stage code imported first.

The daemon forks a worker per task slot; modules it imported are shared with every worker it
forks, which then starts without importing NumPy, the engine and the pipeline again.
"""

from pyspark import daemon, worker  # noqa: F401  (the worker's imports, done once here)

from . import adapter  # noqa: F401

if __name__ == "__main__":
    daemon.manager()
