"""`prio-spark`: the server stages of prio_processor.pipeline on Apache Spark (optional extra `spark`)."""
