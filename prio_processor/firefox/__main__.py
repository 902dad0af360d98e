from .commands import entry_point

entry_point(prog_name="prio-processor")
