"""Running a stage's heavy steps in worker processes, with outputs that do not depend on how many.

A stage reads its input in chunks (each within one part). Chunk k goes to worker
k mod W, which parses, decodes and decrypts it (`StageSteps.open_chunk`) and
keeps the opened packets. This process then takes the chunks' openings in input
order and makes every decision that links records (`StageSteps.decide`:
joins, duplicates, the k-th evaluation point for the k-th packet that opened,
rejects), and sends each chunk's decisions back to the worker that holds its
packets for the batch arithmetic (`StageSteps.compute`). Results are handed on
in input order. Workers are forked, so they share the server's key without it
being copied anywhere; they read the lines of local part files they are pointed
at (other inputs come to them whole) and write nothing.
"""

from __future__ import annotations

import os
import queue
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..storage.records import read_span_lines
from .stages import RawItem, StageSteps

#: Chunks opened ahead per worker: enough to keep a worker busy while this process decides.
_AHEAD = 2
_POLL_SECONDS = 0.5


def default_workers() -> int:
    """The processors this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class WorkerError(RuntimeError):
    """A worker process failed or died; the stage cannot finish."""


@dataclass
class Chunk:
    """Records of one input part, in order; `tag` goes back to the caller with the chunk's result.

    With `path`, a local file, the JSON lines are given by where they are in it
    (`LineSpan`s, see `records.read_spans`), and whoever needs them reads them.
    """

    items: list[Any]
    source: str
    tag: Any = None
    path: str | None = None
    number: int = field(default=-1)

    def raw_items(self) -> list[RawItem]:
        return raw_items(self.items, self.path)


def raw_items(items: list[Any], path: str | None) -> list[RawItem]:
    """The chunk's records with every line span replaced by its line."""
    if path is None:
        return items
    lines = iter(read_span_lines(path, [item for item in items if isinstance(item, tuple)]))
    return [next(lines) if isinstance(item, tuple) else item for item in items]


def _serve(steps: StageSteps, inbox: Any, outbox: Any, parent: int) -> None:
    """A worker: opens chunks and computes them when told, until it gets None or its parent is gone."""
    kept: dict[int, list[Any]] = {}
    while True:
        try:
            message = inbox.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            if os.getppid() != parent:
                # The parent was killed: nobody reads results any more, so leave at once
                # (a normal exit would wait to hand pending results to a pipe nobody drains).
                os._exit(1)
            continue
        if message is None:
            return
        kind, number, payload = message
        try:
            if kind == "open":
                items, source, path = payload
                openings, kept[number] = steps.open_chunk(raw_items(items, path), source)
                outbox.put(("opened", number, openings))
            else:
                outbox.put(("computed", number, steps.compute(kept.pop(number), payload)))
        except BaseException:  # reported to the parent, which stops the stage
            outbox.put(("failed", number, traceback.format_exc()))
            return


class WorkerPool:
    """W forked worker processes running `steps` over chunks; use as a context manager."""

    def __init__(self, steps: StageSteps, workers: int) -> None:
        if workers < 2:
            raise ValueError("a pool needs at least two workers; run one worker inline")
        import multiprocessing  # only pools need it: a stage run inline starts without it

        context = multiprocessing.get_context("fork")
        self._steps = steps
        self._outbox = context.Queue()
        self._inboxes = [context.Queue() for _ in range(workers)]
        self._processes = [
            context.Process(target=_serve, args=(steps, inbox, self._outbox, os.getpid()), daemon=True)
            for inbox in self._inboxes
        ]
        self._results: dict[tuple[str, int], Any] = {}

    def __enter__(self) -> WorkerPool:
        for process in self._processes:
            process.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        for inbox in self._inboxes:
            inbox.put(None)
        for process in self._processes:
            process.join(timeout=None if exc[0] is None else 1)
            if process.is_alive():
                process.kill()
                process.join()
        for box in (*self._inboxes, self._outbox):
            box.close()
            box.join_thread()

    def run(self, chunks: Iterable[Chunk], emit: Callable[[Chunk, Any], None]) -> None:
        """Open, decide and compute every chunk; `emit(chunk, result)` in input order."""
        workers = len(self._processes)
        opening: deque[Chunk] = deque()
        computing: deque[Chunk] = deque()
        for number, chunk in enumerate(chunks):
            chunk.number = number
            self._send(number, ("open", number, (chunk.items, chunk.source, chunk.path)))
            opening.append(chunk)
            while len(opening) > _AHEAD * workers:
                self._decide(opening.popleft(), computing)
                while len(computing) > _AHEAD * workers:
                    self._emit(computing.popleft(), emit)
        while opening:
            self._decide(opening.popleft(), computing)
        while computing:
            self._emit(computing.popleft(), emit)

    def _send(self, number: int, message: tuple) -> None:
        self._inboxes[number % len(self._inboxes)].put(message)

    def _decide(self, chunk: Chunk, computing: deque[Chunk]) -> None:
        openings = self._wait("opened", chunk.number)
        selections = self._steps.decide(openings, chunk.raw_items, chunk.source)
        chunk.items = []  # decided: the raw records are no longer needed here
        self._send(chunk.number, ("compute", chunk.number, selections))
        computing.append(chunk)

    def _emit(self, chunk: Chunk, emit: Callable[[Chunk, Any], None]) -> None:
        emit(chunk, self._wait("computed", chunk.number))

    def _wait(self, kind: str, number: int) -> Any:
        while (kind, number) not in self._results:
            try:
                got_kind, got_number, payload = self._outbox.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                dead = [p for p in self._processes if not p.is_alive()]
                if dead:
                    status = dead[0].exitcode
                    raise WorkerError(f"a worker process exited unexpectedly (status {status})") from None
                continue
            if got_kind == "failed":
                raise WorkerError(f"a worker process failed:\n{payload}")
            self._results[got_kind, got_number] = payload
        return self._results.pop((kind, number))
