"""`prio process`: one server's whole run in one process, for bin/process.

bin/process checks its settings, works out the bucket layout and then runs this
command (`exec`: the same process), which does what the script used to do with
some fifty `prio` processes: checks DATA_CONFIG and the buckets, takes the run
lock, and runs verify1, verify2, aggregate and publish over every batch with the
waits, copies and markers between them, then the summary. Each step is the
`prio` command of the same name called in this process (start-up is paid once),
with the same options, output lines and exit statuses: its lines are logged as
bin/process logged them (`[HH:MM:SS] process A: <label>: <line>`).

The stages run through an engine (`Engine`): `prio`'s own commands here
(ENGINE=cli), or prio-spark's in this process, on one Spark session for the
whole run (ENGINE=spark), or through spark-submit (SPARK_SUBMIT), a process per
stage. The secrets come from the environment (or files it names) only.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import click

from .main import entry_point

Sink = Callable[[str], None]

# A key (64 hex digits, in every bucket path) shows its first 8 digits in log lines, unless VERBOSE=1.
_KEY = re.compile(r"([0-9A-Fa-f]{8})[0-9A-Fa-f]{56}")
# The count line of verify1, whose total goes into the markers' stamp.
_COUNT_LINE = re.compile(r"^[0-9]+ errors out of ([0-9]+) total")
# The exit status of a publish that refused: that batch FAILs, the others go on.
_REFUSED = 2


class Stopped(BaseException):
    """A signal stopped the run (not an Exception: no stage takes it for its own error)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.status = 128 + signum


class Exited(Exception):
    """The run ends here with this exit status (what `set -e` did in the script)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Log:
    """Lines on stderr as bin/process writes them: time (UTC), script and server, message."""

    def __init__(self, name: str, verbose: bool) -> None:
        self.name = name
        self.verbose = verbose
        self._stream = sys.stderr
        self._lock = threading.Lock()

    def __call__(self, message: str) -> None:
        if not self.verbose:
            message = _KEY.sub(lambda found: f"{found[1]}…", message)
        self.raw(f"[{time.strftime('%H:%M:%S', time.gmtime())}] {self.name}: {message}")

    def raw(self, line: str) -> None:
        """A line as it is (what a step writes on stderr outside a labelled step)."""
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def labelled(self, label: str) -> Sink:
        return lambda line: self(f"{label}: {line}")


class _Lines(io.TextIOBase):
    """A text stream that hands every complete line written to it to `sink` (thread-safe: a
    stage's progress lines come from a timer thread)."""

    encoding = "utf-8"
    errors = "strict"

    def __init__(self, sink: Sink) -> None:
        super().__init__()
        self._sink = sink
        self._partial = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError("a text stream")
        with self._lock:
            *lines, self._partial = (self._partial + text).split("\n")
            for line in lines:
                self._sink(line)
        return len(text)

    def finish(self) -> None:
        with self._lock:
            if self._partial:
                self._sink(self._partial)
            self._partial = ""


def _discard(line: str) -> None:
    """What the script sent to /dev/null."""


def call(group: click.Group, prog_name: str, args: Sequence[str], out: Sink, err: Sink) -> int:
    """Run a command of `group` in this process as if started as `prog_name ARGS...`: its stdout
    lines to `out`, its stderr lines to `err`; returns its exit status."""
    stdout, stderr = _Lines(out), _Lines(err)
    status = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                result = group.main(args=list(args), prog_name=prog_name, standalone_mode=False)
                status = result if isinstance(result, int) else 0
            except click.ClickException as exc:
                exc.show()
                status = exc.exit_code
            except click.exceptions.Exit as exc:
                status = exc.exit_code
            except click.Abort:
                click.echo("Aborted!", err=True)
                status = 1
            except SystemExit as exc:
                if exc.code is None or isinstance(exc.code, int):
                    status = exc.code or 0
                else:
                    click.echo(str(exc.code), err=True)
                    status = 1
            except Exception:  # as a command run alone: its traceback, status 1
                sys.stderr.write(traceback.format_exc())
                status = 1
    finally:
        stdout.finish()
        stderr.finish()
    return status


def prio(args: Sequence[str], out: Sink, err: Sink) -> int:
    return call(entry_point, "prio", args, out, err)


# ---------------------------------------------------------------- engines


class Engine:
    """Where a stage runs: `run(stage, args, sink)` returns its exit status and hands every
    line it prints (stdout and stderr) to `sink`."""

    #: Whether the stage takes verify1's cache (--cache).
    takes_cache = True

    def run(self, stage: str, args: Sequence[str], sink: Sink) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """After the last stage."""


class CliEngine(Engine):
    """`prio`'s stage commands, in this process."""

    def run(self, stage: str, args: Sequence[str], sink: Sink) -> int:
        return prio([stage, *args], sink, sink)


class SparkEngine(Engine):
    """prio-spark's stage commands in this process: the first stage starts the Spark session
    (SPARK_MASTER, else local), every later one uses it, and the run stops it at the end."""

    takes_cache = False

    def run(self, stage: str, args: Sequence[str], sink: Sink) -> int:
        from ..spark import commands  # pyspark only when ENGINE=spark

        return call(commands.entry_point, "prio-spark", [stage, *args], sink, sink)

    def close(self) -> None:
        if "pyspark" in sys.modules:
            from pyspark.sql import SparkSession

            session = SparkSession.getActiveSession()
            if session is not None:
                session.stop()


class SparkSubmitEngine(Engine):
    """Each stage through spark-submit (SPARK_SUBMIT, with SPARK_SUBMIT_ARGS first), which
    starts a driver of its own: a process per stage, its output lines handed on."""

    takes_cache = False

    def __init__(self, submit: str, submit_args: str) -> None:
        self._command = [submit, *shlex.split(submit_args)]

    def run(self, stage: str, args: Sequence[str], sink: Sink) -> int:
        import importlib.util

        # Its path only: spark-submit runs it (pyspark need not be importable here).
        spec = importlib.util.find_spec("prio_processor.spark.submit")
        assert spec is not None and spec.origin is not None, "part of this package"
        with subprocess.Popen(
            [*self._command, spec.origin, stage, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        ) as child:
            assert child.stdout is not None
            for line in child.stdout:
                sink(line.rstrip("\n"))
        return child.returncode


def make_engine(name: str) -> Engine:
    if name == "cli":
        return CliEngine()
    submit = os.environ.get("SPARK_SUBMIT")
    if submit:
        return SparkSubmitEngine(submit, os.environ.get("SPARK_SUBMIT_ARGS", ""))
    return SparkEngine()


# ---------------------------------------------------------------- the run lock


class Lock:
    """The run lock, as `prio bucket lock` holds it for the script: taken once, renewed by a
    thread of this process, released at the end however the run ends (but SIGKILL: then it
    expires after its TTL and the next run takes it over)."""

    def __init__(self, path: str, owner: str, ttl: float, log: Log) -> None:
        self.path = path
        self.owner = owner
        self.ttl = ttl
        self.log = log
        self.lost = False
        self._held: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def take(self) -> str:
        """The lock's location once held; Exited(2) with the holder's line otherwise."""

        from ..storage import StorageError, location
        from ..storage.lock import LockHeld, RunLock

        where = location(self.path)
        held = RunLock(where, self.owner, self.ttl, pid=os.getpid())
        try:
            held.check_store()
            try:
                warning = held.take()
            except LockHeld as exc:
                self.log.raw(f"Error: {self.owner}: another run is going on: {exc}")
                raise Exited(2) from None
        except StorageError as exc:
            self.log.raw(f"Error: {self.owner}: {exc}")
            raise Exited(2) from None
        if warning:
            self.log.raw(f"{self.owner}: {warning}")
        self._held = held
        self._thread = threading.Thread(target=self._renew, name="run lock", daemon=True)
        self._thread.start()
        return where.uri

    def _renew(self) -> None:
        from ..storage import StorageError
        from ..storage.lock import LockLost

        interval = min(30.0, self.ttl / 3)
        while not self._stop.wait(interval):
            try:
                self._held.renew()
            except LockLost as exc:
                self.log.raw(f"Error: {self.owner}: {exc}")
                self.lost = True
                return
            except StorageError as exc:  # try again at the next renewal, before it expires
                self.log.raw(f"{self.owner}: could not renew the lock {self.path}: {exc}")
            except Exception as exc:  # a renewal that failed otherwise: the same, never a dead thread
                self.log.raw(f"{self.owner}: could not renew the lock {self.path}: {exc}")

    def check(self) -> None:
        """Exit 2 if the lock was lost (another run took it over)."""
        if self.lost:
            self.log("lost the run lock: stopping")
            raise Exited(2)

    def release(self) -> None:
        from ..storage import StorageError

        if self._held is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        held, self._held = self._held, None
        if self.lost:
            return
        try:
            held.release()
        except StorageError as exc:
            self.log.raw(f"{self.owner}: could not release the lock {self.path}: {exc}")


# ---------------------------------------------------------------- the run


@dataclass(frozen=True)
class Layout:
    """The run's folders (bin/common.sh's bucket layout, worked out by bin/process)."""

    private: str  # this server's data root in its private bucket
    shared: str  # ... in its shared bucket
    raw: str  # the client shares (raw/shares in the ingest bucket)
    internal: str  # this server's packets (private)
    external: str  # the partner's packets (this server's shared bucket)
    partner: str  # where this server's packets go (the partner's shared bucket)
    published: str
    rejected: str
    cache: str


class Run:
    """One server's run, step for step as bin/process ran it with `prio` commands."""

    def __init__(
        self,
        layout: Layout,
        data_config: str,
        max_error_ratio: str,
        engine: Engine,
        log: Log,
        lock: Lock,
    ) -> None:
        self.layout = layout
        self.data_config = data_config
        self.max_error_ratio = max_error_ratio
        self.engine = engine
        self.log = log
        self.lock = lock
        self.totals: list[str] = []

    @property
    def stamp(self) -> str:
        """What the run's markers name: verify1's clients per batch, "<batch_id>=<n> ..."."""
        return " ".join(self.totals)

    def prio(self, args: Sequence[str], out: Sink | None = None, err: Sink | None = None) -> int:
        """A `prio` command that ends the run when it fails (the script's `set -e`); its stdout
        is discarded and its stderr written as it is, unless sinks are given."""
        status = prio(args, out or _discard, err or self.log.raw)
        if status:
            raise Exited(status)
        return status

    def check_buckets(self, buckets: Sequence[str], prefix: str, tail: str) -> None:
        """DATA_CONFIG, then every bucket and the data prefix: exit 2 at once if one is wrong."""
        config = self.log.labelled("DATA_CONFIG")
        status = prio(["batches", "--data-config", self.data_config], _discard, config)
        if status == 0:
            check = self.log.labelled("check")
            status = prio(["bucket", "check", *buckets, "--data", prefix, tail], check, check)
        if status:
            raise Exited(2)

    def batches(self, inputs: Sequence[str]) -> list[tuple[str, str, str, str]]:
        lines: list[str] = []
        args = ["batches", "--data-config", self.data_config]
        for folder in inputs:
            args += ["--input", folder]
        self.prio(args, lines.append)
        found = []
        for line in lines:
            batch_id, n_data, status, *where = line.split(" ", 3)
            found.append((batch_id, n_data, status, where[0] if where else ""))
        return found

    def for_each_batch(self, stage: str, *inputs: str) -> None:
        """`stage` over every batch whose input folders all hold data."""
        started = int(time.time())
        for batch_id, n_data, status, where in self.batches(inputs):
            batch = f"batch {batch_id}"
            if status != "ready":
                for root in (self.layout.private, self.layout.shared):
                    where = where.removeprefix(f"{root}/")
                self.log(f"{batch}: {stage}: data for {batch_id} does not exist, skipping... "
                         f"(none in {where})")
                continue
            self.log(f"{batch}: {stage} (n_data {n_data})")
            total: list[str] = []
            sink = self.log.labelled(f"{batch}: {stage}")

            def lines(line: str, total: list[str] = total, sink: Sink = sink) -> None:
                if counted := _COUNT_LINE.match(line):
                    total[:] = [counted[1]]
                sink(line)

            code = self.engine.run(stage, self.stage_args(stage, batch_id, n_data), lines)
            if code:
                # A refused publish FAILs its batch (see the summary), not the other batches.
                if stage != "publish" or code != _REFUSED:
                    raise Exited(code)
                self.log(f"{batch}: publish refused: FAILED, going on with the other batches")
            if stage == "verify1":
                self.totals.append(f"{batch_id}={total[0] if total else 'unknown'}")
        self.log(f"{stage} took {int(time.time()) - started}s")

    def stage_args(self, stage: str, batch_id: str, n_data: str) -> list[str]:
        layout = self.layout
        folder = f"batch_id={batch_id}"
        args = ["--batch-id", batch_id, "--n-data", n_data]
        if stage == "publish":
            return [
                *args,
                "--input-internal", f"{layout.internal}/aggregate/{folder}",
                "--input-external", f"{layout.external}/aggregate/{folder}",
                "--output", f"{layout.published}/{folder}",
                "--max-error-ratio", self.max_error_ratio,
            ]  # fmt: skip
        args += ["--input", f"{layout.raw}/{folder}"]
        previous = {"verify2": "verify1", "aggregate": "verify2"}.get(stage)
        if previous is not None:
            args += [
                "--input-internal", f"{layout.internal}/{previous}/{folder}",
                "--input-external", f"{layout.external}/{previous}/{folder}",
            ]  # fmt: skip
        args += ["--output", f"{layout.internal}/{stage}/{folder}"]
        # Rejects are listed in the private bucket, never beside an output shared with the partner.
        args += ["--rejects", f"{layout.rejected}/{stage}/{folder}"]
        if self.engine.takes_cache:
            args += ["--cache", f"{layout.cache}/{folder}"]
        return args

    def wait_for(self, marker: str, stamp: str | None = None) -> None:
        self.lock.check()
        self.log(f"waiting for {marker}")
        args = ["bucket", "wait", marker]
        if stamp is not None:
            args += ["--stamp", stamp]
        sink = self.log.labelled("wait")
        status = prio(args, sink, sink)
        if status:
            raise Exited(status)

    def share(self, stage: str) -> None:
        self.lock.check()
        self.prio(["bucket", "sync", "--stamp", self.stamp, f"{self.layout.internal}/{stage}",
                   f"{self.layout.partner}/{stage}"])  # fmt: skip
        self.log(f"{stage} shared with the partner ({self.stamp})")

    def main(self) -> int:
        layout = self.layout
        # A run first clears everything it produces: outputs of an earlier run never
        # pass for this one's, and a run that fails leaves no result behind.
        self.prio(["bucket", "rm", layout.internal, layout.rejected, layout.published])

        self.wait_for(f"{layout.raw}/_SUCCESS")
        self.for_each_batch("verify1", layout.raw)
        self.share("verify1")

        self.wait_for(f"{layout.external}/verify1/_SUCCESS", self.stamp)
        self.for_each_batch("verify2", layout.raw, f"{layout.internal}/verify1", f"{layout.external}/verify1")
        self.share("verify2")

        self.wait_for(f"{layout.external}/verify2/_SUCCESS", self.stamp)
        self.for_each_batch(
            "aggregate", layout.raw, f"{layout.internal}/verify2", f"{layout.external}/verify2"
        )
        self.prio(["bucket", "rm", layout.cache])
        self.share("aggregate")

        self.wait_for(f"{layout.external}/aggregate/_SUCCESS", self.stamp)
        self.for_each_batch("publish", f"{layout.internal}/aggregate", f"{layout.external}/aggregate")
        self.engine.close()
        self.prio(["bucket", "rm", layout.external])
        self.log("removed the partner's packets from the shared bucket")
        sink = self.log.labelled("summary")
        status = prio(
            ["summary", "--data-config", self.data_config, "--raw", layout.raw, "--rejects", layout.rejected,
             "--published", layout.published, "--stamp", self.stamp],
            sink, sink,
        )  # fmt: skip
        self.log("done")
        # 3 when a batch FAILED (or another status of the summary's).
        return status


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


@contextlib.contextmanager
def _signals_stop_the_run() -> Iterator[None]:
    """SIGTERM, SIGHUP and SIGINT end the run through its `finally`s: outputs being written are
    discarded, worker processes stopped and the lock released, as the script's exit trap did."""
    signals = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    previous = {signum: signal.signal(signum, _stop) for signum in signals}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@entry_point.command("process")
@click.option("--name", required=True, help='Who runs, in log lines and the lock ("process A").')
@click.option("--data-config", required=True, help="The batches (DATA_CONFIG).")
@click.option(
    "--bucket", "buckets", multiple=True, required=True, help="A bucket to check first (repeatable)."
)
@click.option("--data", nargs=2, required=True, metavar="PREFIX TAIL", help="As `prio bucket check --data`.")
@click.option("--private", required=True, help="The data root in the private bucket.")
@click.option("--shared", required=True, help="The data root in the shared bucket.")
@click.option("--raw", required=True, help="The client shares.")
@click.option("--internal", required=True, help="This server's packets.")
@click.option("--external", required=True, help="The partner's packets (shared bucket).")
@click.option("--partner", required=True, help="Where this server's packets go (the partner's bucket).")
@click.option("--published", required=True)
@click.option("--rejected", required=True)
@click.option("--cache", required=True, help="verify1's cache for verify2 and aggregate (private).")
@click.option("--lock", "lock_path", required=True, help="The run lock object.")
@click.option("--lock-ttl", type=click.FloatRange(min=1), required=True)
@click.option("--max-error-ratio", required=True)
@click.option("--engine", type=click.Choice(["cli", "spark"]), required=True)
def process_command(
    name: str,
    data_config: str,
    buckets: tuple[str, ...],
    data: tuple[str, str],
    lock_path: str,
    lock_ttl: float,
    max_error_ratio: str,
    engine: str,
    **folders: str,
) -> None:
    """One server's whole run: what bin/process does once it has checked its settings.

    Settings come from bin/process (which works out the bucket layout) and the
    environment, the secrets from the environment only. Exit statuses as bin/process.
    """
    log = Log(name, os.environ.get("VERBOSE") == "1")
    lock = Lock(lock_path, name, lock_ttl, log)
    run = Run(Layout(**folders), data_config, max_error_ratio, make_engine(engine), log, lock)
    status = 0
    with _signals_stop_the_run():
        try:
            # A mistyped bucket or prefix would be waited for in vain: exit 2 at once (before
            # the lock, whose object would make a mistyped prefix exist).
            run.check_buckets(buckets, *data)
            log(f"took the run lock {lock.take()}")
            status = run.main()
        except Exited as exc:
            status = exc.status
        except Stopped as exc:
            status = exc.status
        finally:
            with contextlib.suppress(Stopped):
                run.engine.close()
                lock.release()
    sys.exit(status)
