"""`python -m prio_processor.spark`: the same as the prio-spark console script."""

from .commands import main

main()
