"""Firefox origin telemetry: prio pings in, results by origin out (the `prio-processor` command)."""
