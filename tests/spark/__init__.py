"""Tests of prio-spark on a real Spark (local mode and a standalone cluster)."""
