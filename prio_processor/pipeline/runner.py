"""Running a stage over locations: reading part files, naming outputs, atomic writes, the rejects list.

Every front end (`prio`, `bin/` through it, the Spark adapter) runs stages
through here, so outputs and the rejects list look the same everywhere:

* verify1 and encode-shares write one output per input part, named like it;
  verify2 does the same when --input-internal is a folder, and otherwise writes
  one file named like --input-internal; aggregate and publish write one file
  named like --input-internal (`aggregate.ndjson` / `publish.ndjson` for folders).
* Output folders hold nothing else. The rejects list, {id, reason, detail}
  per rejected record, goes only where asked (`rejects`): to that file if its
  name ends in .ndjson or .json, else into that folder as
  `rejects-<stage>-<server>.ndjson` (`rejects-encode-shares.ndjson`).
* Writes are atomic, and temporary files a killed run left in an output folder
  are removed when the next run starts. Outputs take their final names only
  after the rejects list is in place: a stage that cannot list its rejects
  leaves no output behind.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from ..engine.client import Client
from ..engine.config import Config
from ..engine.server import Schedule, Server, TotalShare
from ..storage import Location, RecordWriter, location, overlapping, read_all
from ..storage.locations import LocalLocation, PendingWrites
from ..storage.records import PARQUET_SUFFIX, read_raw, read_spans
from . import stages
from .cache import (
    Cache,
    CachedAggregateSteps,
    CachedVerify2Steps,
    CacheMiss,
    CacheWriter,
    CachingVerify1Steps,
    open_cache,
    run_cached,
)
from .errors import InputError
from .settings import SettingsCheck
from .tally import RejectSink, Tally
from .workers import Chunk, WorkerPool

Progress = Callable[[int], None]
_T = TypeVar("_T")
Record = dict[str, Any]

STAGES = ("encode-shares", "verify1", "verify2", "aggregate", "publish")
REJECTS_SUFFIXES = (".ndjson", ".json")


def _no_progress(count: int) -> None:
    """Progress is shown only where a front end asks for it."""


Notice = Callable[[str], None]


def _no_notice(message: str) -> None:
    """Notices (why a cache was not used) are shown only where a front end asks for them."""


@dataclass(frozen=True)
class Inputs:
    """A stage's inputs: files or folders of part files, local, gs:// or s3://."""

    shares: Location | None = None  # --input: client data (encode-shares) or shares
    internal: Location | None = None  # --input-internal: this server's previous stage
    external: Location | None = None  # --input-external: the partner's previous stage


def rejects_name(stage: str, server_id: str | None) -> str:
    return f"rejects-{stage}-{server_id}.ndjson" if server_id else f"rejects-{stage}.ndjson"


def rejects_file(rejects: Location, stage: str, server_id: str | None) -> Location:
    """The file a stage lists its rejects in: `rejects` itself when named like a JSON lines
    file, else a file named after the stage (and server) in the folder `rejects`."""
    if rejects.name.endswith(REJECTS_SUFFIXES):
        return rejects
    return rejects.join(rejects_name(stage, server_id))


def run_stage(
    stage: str,
    party: Server | Client | tuple[Config, str],
    inputs: Inputs,
    output: Location,
    rejects: Location | None = None,
    *,
    schedule: Schedule = Schedule.SEQUENTIAL,
    output_b: Location | None = None,
    prec: int | None = None,
    min_batch_size: int = 0,
    progress: Progress = _no_progress,
    workers: int = 1,
    cache: Location | None = None,
    notice: Notice = _no_notice,
    max_error_ratio: float | None = None,
) -> tuple[Tally, Record | None]:
    """Run one stage; returns its tally and, for aggregate and publish, the record written.

    `party` is the Server for verify1, verify2 and aggregate, the Client for
    encode-shares (with `output` for A and `output_b` for B), and
    (configuration, server id) for publish, which needs no secret. verify1, verify2 and
    aggregate do their per-record work in `workers` processes (1: in this one), with the
    same outputs for any number. With `cache` (a private folder, see `cache`), verify1
    keeps what verify2 and aggregate need of each share there, and they use it when it
    matches their inputs; `notice` hears why it was not used.
    """
    if stage == "encode-shares":
        if not isinstance(party, Client) or output_b is None:
            raise TypeError("encode-shares runs with a Client and needs output_b")
        return encode_shares(party, _need(inputs.shares), output, output_b, rejects, prec, progress), None
    if stage == "publish":
        if not isinstance(party, tuple):
            raise TypeError("publish runs with (configuration, server id)")
        config, server_id = party
        return publish(
            config,
            server_id,
            _need(inputs.internal),
            _need(inputs.external),
            output,
            rejects,
            min_batch_size,
            prec,
            max_error_ratio,
        )
    if not isinstance(party, Server):
        raise TypeError(f"{stage} runs with a Server")
    if stage == "verify1":
        return verify1(party, schedule, _need(inputs.shares), output, rejects, progress, workers, cache), None
    if stage == "verify2":
        return verify2(party, schedule, inputs, output, rejects, progress, workers, cache, notice), None
    if stage == "aggregate":
        return aggregate(party, inputs, output, rejects, progress, workers, cache, notice)
    raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")


def _need(loc: Location | None) -> Location:
    if loc is None:
        raise ValueError("this stage needs that input")
    return loc


def input_parts(loc: Location, option: str) -> list[Location]:
    """The data files of an input; a missing or empty input is an InputError."""
    if not loc.is_file() and not loc.is_dir():
        raise InputError(f"{option}: {loc} does not exist")
    parts = loc.parts()
    if not parts:
        raise InputError(f"{option}: {loc} holds no data files (part-*, *.json, *.ndjson, *.parquet)")
    return parts


def output_folder(loc: Location, option: str = "--output") -> Location:
    """An output folder, cleared of the temporary files a killed run left in it."""
    if loc.is_file():
        raise InputError(f"{option} {loc} is a file, expected a folder")
    loc.clear_stale_temporaries()
    return loc


def _parent_uri(loc: Location) -> str:
    return loc.uri.rstrip("/").rsplit("/", 1)[0]


@contextlib.contextmanager
def rejects_sink(
    rejects: Location | None, stage: str, server_id: str | None, outputs: Iterable[Location]
) -> Iterator[RejectSink]:
    """Where a stage's rejects go: a file (see `rejects_file`), or nowhere (only counted)."""
    if rejects is None:
        yield lambda entry: None
        return
    target = rejects_file(rejects, stage, server_id)
    if any(_parent_uri(target) == out.uri.rstrip("/") for out in outputs):
        raise InputError("--rejects must not be in an output folder: outputs hold only what the stage writes")
    if target.is_dir():
        raise InputError(f"--rejects {target} is a folder, expected a file")
    folder = location(_parent_uri(target))
    folder.clear_stale_temporaries([target.name])
    with RecordWriter(target) as writer:
        yield writer.write


@contextlib.contextmanager
def outputs_after_rejects(
    rejects: Location | None, stage: str, server_id: str | None, outputs: Iterable[Location]
) -> Iterator[tuple[RejectSink, PendingWrites]]:
    """The rejects sink, and the outputs written meanwhile (`pending`), which take their final
    names only once the rejects list is in place: if it cannot be written, no output is left."""
    pending = PendingWrites()
    try:
        with rejects_sink(rejects, stage, server_id, outputs) as sink:
            yield sink, pending
    except BaseException:
        pending.discard()
        raise
    pending.commit()


class PartOutputs:
    """Output files named after input parts, one open at a time: chunks come in input
    order, so a part's file is complete once the next part's chunks arrive."""

    def __init__(self, folder: Location, pending: PendingWrites) -> None:
        self._folder = folder
        self._pending = pending
        self._writer: RecordWriter | None = None
        self._name: str | None = None

    def write(self, name: str, records: list[Record]) -> None:
        if name != self._name:
            self._close(None)
            self._writer = RecordWriter(self._folder.join(name), self._pending).__enter__()
            self._name = name
        assert self._writer is not None
        for record in records:
            self._writer.write(record)

    def _close(self, exc: BaseException | None) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.__exit__(type(exc) if exc else None, exc, None)

    def __enter__(self) -> PartOutputs:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self._close(exc)


def _counted(records: Iterable[Any], progress: Progress) -> Iterator[Any]:
    for record in records:
        progress(1)
        yield record


def part_chunks(
    server: Server, parts: list[Location], tags: list[Any], progress: Progress, workers: int
) -> Iterator[Chunk]:
    """Chunks of at most a batch of unparsed records, each within one part (an empty part gives
    one empty chunk, so that its output file is written too). For worker processes, lines of local
    files are passed on as where they are: only the worker that parses a line reads it whole."""
    size, max_line = _chunk_size(server), _max_line(server)
    for part, tag in zip(parts, tags):
        records: Iterator[Any]
        if workers > 1 and isinstance(part, LocalLocation) and not part.name.endswith(PARQUET_SUFFIX):
            path, records = part.uri, read_spans(part, max_line)
        else:
            path, records = None, read_raw(part, max_line)
        items: list[Any] = []
        sent = False
        for item in records:
            progress(1)
            items.append(item)
            if len(items) >= size:
                yield Chunk(items, part.uri, tag, path)
                items, sent = [], True
        if items or not sent:
            yield Chunk(items, part.uri, tag, path)


def run_chunks(
    steps: stages.StageSteps, chunks: Iterable[Chunk], emit: Callable[[Chunk, Any], None], workers: int
) -> None:
    """Every chunk through the stage's steps, in this process or in `workers` worker processes;
    the outputs are the same either way."""
    try:
        if workers <= 1:
            for chunk in chunks:
                items = chunk.raw_items()
                openings, kept = steps.open_chunk(items, chunk.source)
                selections = steps.decide(openings, stages.given(items), chunk.source)
                emit(chunk, steps.compute(kept, selections))
        else:
            with WorkerPool(steps, workers) as pool:
                pool.run(chunks, emit)
    finally:
        steps.close()


def _named(folder: Location, source: Location, fallback: str) -> Location:
    return folder.join(source.name if source.is_file() else fallback)


def encode_shares(
    client: Client,
    source: Location,
    output_a: Location,
    output_b: Location,
    rejects: Location | None = None,
    prec: int | None = None,
    progress: Progress = _no_progress,
) -> Tally:
    parts = input_parts(source, "--input")
    folder_a, folder_b = output_folder(output_a, "--output-A"), output_folder(output_b, "--output-B")
    max_line = stages.max_line_bytes(client.config)
    with outputs_after_rejects(rejects, "encode-shares", None, (folder_a, folder_b)) as (sink, pending):
        tally = Tally("encode-shares", sink)
        for part in parts:
            with (
                RecordWriter(folder_a.join(part.name), pending) as out_a,
                RecordWriter(folder_b.join(part.name), pending) as out_b,
            ):
                records = _counted(read_all([part], max_line), progress)
                stages.encode_shares(client, records, out_a.write, out_b.write, tally, prec)
    return tally


def verify1(
    server: Server,
    schedule: Schedule,
    source: Location,
    output: Location,
    rejects: Location | None = None,
    progress: Progress = _no_progress,
    workers: int = 1,
    cache: Location | None = None,
) -> Tally:
    parts = input_parts(source, "--input")
    folder = output_folder(output)
    names = [p.name for p in parts]
    if cache is not None:
        check_cache_folder(cache, (folder, source, rejects))
    with outputs_after_rejects(rejects, "verify1", server.server_id, (folder,)) as (sink, pending):
        tally = Tally("verify1", sink)
        chunks = part_chunks(server, parts, names, progress, workers)
        with PartOutputs(folder, pending) as outputs:
            # One point stream for the whole run, across parts, as the original's one server.
            if cache is None:
                steps = stages.Verify1Steps(server, schedule, tally)
                run_chunks(steps, chunks, lambda chunk, records: outputs.write(chunk.tag, records), workers)
            else:
                with CacheWriter(cache, server, schedule, parts) as kept:

                    def emit(chunk: Chunk, result: tuple[list[Record], bytes, int]) -> None:
                        outputs.write(chunk.tag, result[0])
                        kept.write(chunk.tag, result[1], result[2])

                    run_chunks(CachingVerify1Steps(server, schedule, tally), chunks, emit, workers)
    return tally


def check_cache_folder(cache: Location, places: Iterable[Location | None]) -> None:
    """The cache has a folder of its own, apart from every input, output and rejects list of the
    stage: output folders hold only what the stage writes, and a cache inside a folder that is
    copied to the partner would hand it this server's shares."""
    for place in places:
        if place is not None and overlapping(cache, place):
            raise InputError(
                f"--cache {cache} must be a folder of its own: it must not be, lie inside or contain "
                f"{place}, an input, output or --rejects of the stage"
            )
    if cache.is_file():
        raise InputError(f"--cache {cache} is a file, expected a folder")


def _cached_or_shares(
    run: Callable[[Cache | None], _T],
    cache: Location | None,
    parts: list[Location],
    server: Server,
    schedule: Schedule | None,
    output: Location,
    inputs: Inputs,
    rejects: Location | None,
    notice: Notice,
) -> _T:
    """`run` over verify1's cache when it matches these inputs and settings, else over the
    shares; also over the shares, from the start, when the cache cannot answer for a record."""
    if cache is None:
        return run(None)
    check_cache_folder(cache, (output, inputs.shares, inputs.internal, inputs.external, rejects))
    found, why_not = open_cache(cache, parts, server, schedule)
    if found is None:
        notice(f"not using the cache in {cache}: {why_not}; reading the shares")
        return run(None)
    try:
        return run(found)
    except CacheMiss as exc:
        notice(f"stopped using the cache in {cache}: {exc}; reading the shares from the start")
    return run(None)


def _chunk_size(server: Server) -> int:
    return stages.batch_size(server.config)


def _max_line(server: Server) -> int:
    return stages.max_line_bytes(server.config)


@contextlib.contextmanager
def _joined_inputs(
    server: Server, previous: str, inputs: Inputs, tally: Tally, check: SettingsCheck, max_line: int
) -> Iterator[tuple[stages.Index, stages.Index]]:
    """Both servers' `previous`-stage packets indexed by id, their settings checked; closed after."""
    internal_parts = input_parts(_need(inputs.internal), "--input-internal")
    external_parts = input_parts(_need(inputs.external), "--input-external")
    with contextlib.ExitStack() as stack:
        internal = stack.enter_context(
            stages.load_index(read_all(internal_parts, max_line), tally, check, f"this server's {previous}")
        )
        external = stack.enter_context(
            stages.load_index(read_all(external_parts, max_line), tally, check, f"the partner's {previous}")
        )
        yield internal, external


def verify2(
    server: Server,
    schedule: Schedule,
    inputs: Inputs,
    output: Location,
    rejects: Location | None = None,
    progress: Progress = _no_progress,
    workers: int = 1,
    cache: Location | None = None,
    notice: Notice = _no_notice,
) -> Tally:
    parts = input_parts(_need(inputs.shares), "--input")
    folder = output_folder(output)
    run = functools.partial(_verify2, server, schedule, inputs, parts, folder, rejects, progress, workers)
    return _cached_or_shares(run, cache, parts, server, schedule, folder, inputs, rejects, notice)


def _verify2(
    server: Server,
    schedule: Schedule,
    inputs: Inputs,
    parts: list[Location],
    folder: Location,
    rejects: Location | None,
    progress: Progress,
    workers: int,
    cache: Cache | None,
) -> Tally:
    internal_loc = _need(inputs.internal)
    max_line = _max_line(server)
    with outputs_after_rejects(rejects, "verify2", server.server_id, (folder,)) as (sink, pending):
        tally = Tally("verify2", sink)
        check = SettingsCheck(server, schedule)
        with _joined_inputs(server, "verify1", inputs, tally, check, max_line) as (internal, external):
            names = (
                [internal_loc.name] * len(parts) if internal_loc.is_file() else [part.name for part in parts]
            )
            with PartOutputs(folder, pending) as outputs:
                if cache is None:
                    steps = stages.Verify2Steps(server, schedule, internal, external, tally)
                    chunks = part_chunks(server, parts, names, progress, workers)
                    emit = lambda chunk, records: outputs.write(chunk.tag, records)  # noqa: E731
                    run_chunks(steps, chunks, emit, workers)
                else:
                    cached = CachedVerify2Steps(server, schedule, internal, external, tally)
                    run_cached(cached, cache, parts, names, outputs.write, progress, max_line)
    return tally


def aggregate(
    server: Server,
    inputs: Inputs,
    output: Location,
    rejects: Location | None = None,
    progress: Progress = _no_progress,
    workers: int = 1,
    cache: Location | None = None,
    notice: Notice = _no_notice,
) -> tuple[Tally, Record]:
    parts = input_parts(_need(inputs.shares), "--input")
    folder = output_folder(output)
    run = functools.partial(_aggregate, server, inputs, parts, folder, rejects, progress, workers)
    return _cached_or_shares(run, cache, parts, server, None, folder, inputs, rejects, notice)


def _aggregate(
    server: Server,
    inputs: Inputs,
    parts: list[Location],
    folder: Location,
    rejects: Location | None,
    progress: Progress,
    workers: int,
    cache: Cache | None,
) -> tuple[Tally, Record]:
    internal_loc = _need(inputs.internal)
    max_line = _max_line(server)
    total = TotalShare(server.config.n_data, server.index)
    with rejects_sink(rejects, "aggregate", server.server_id, (folder,)) as sink:
        tally = Tally("aggregate", sink)
        check = SettingsCheck(server, None)
        with _joined_inputs(server, "verify2", inputs, tally, check, max_line) as (internal, external):
            if cache is None:
                steps = stages.AggregateSteps(server, internal, external, tally)
                chunks = part_chunks(server, parts, [None] * len(parts), progress, workers)
                run_chunks(steps, chunks, lambda chunk, partial: stages.add_partial(total, partial), workers)
            else:
                cached = CachedAggregateSteps(server, internal, external, tally)
                tags = [None] * len(parts)
                add = lambda tag, partial: stages.add_partial(total, partial)  # noqa: E731
                run_cached(cached, cache, parts, tags, add, progress, max_line)
    record = stages.aggregate_record(server, total, tally, check.schedule)
    with RecordWriter(_named(folder, internal_loc, "aggregate.ndjson")) as out:
        out.write(record)
    return tally, record


def publish(
    config: Config,
    server_id: str,
    internal: Location,
    external: Location,
    output: Location,
    rejects: Location | None = None,
    min_batch_size: int = 0,
    prec: int | None = None,
    max_error_ratio: float | None = None,
) -> tuple[Tally, Record]:
    """Publish refuses bad aggregates instead of rejecting records: its rejects list stays empty."""
    internal_parts = input_parts(internal, "--input-internal")
    external_parts = input_parts(external, "--input-external")
    folder = output_folder(output)
    max_line = stages.max_line_bytes(config)
    with rejects_sink(rejects, "publish", server_id, (folder,)) as sink:
        tally = Tally("publish", sink)
        record = stages.publish(
            config,
            "AB".index(server_id),
            read_all(internal_parts, max_line),
            read_all(external_parts, max_line),
            min_batch_size,
            prec,
            max_error_ratio,
        )
    with RecordWriter(_named(folder, internal, "publish.ndjson")) as out:
        out.write(record)
    return tally, record
