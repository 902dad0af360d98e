"""The application file for spark-submit: `spark-submit [options] <this file> <command> [options]`.

prio_processor must be importable on the driver and the executors (installed,
or shipped with --py-files).
"""

from prio_processor.spark.commands import main

if __name__ == "__main__":
    main()
