"""Integration test data for both servers, and the check of what they published.

The one home of test data generation: `prio integration generate` (used by
bin/generate) writes it as part files, and other writers (a Spark job, say)
take the same rows from `plan` and `rows`. Mirrors the original's
generate-integration: for each batch of the data config, n_rows - 1 valid
clients with payload[i] = 1 if i % 3 == 0 or i % 5 == 0, one client encoded
with n_data + 1 (rejected by the servers), and n_rows clients of an unknown
batch id "bad-id". --n-drop-batch leaves out the batch ids that sort last.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from .dataconfig import Batch, check_batch_id
from .engine.client import Client
from .engine.config import Config
from .engine.prg import PrgKeying
from .storage import Location, RecordWriter, StorageError, read_all
from .storage.ops import mark_success

UNKNOWN_BATCH = "bad-id"
UNKNOWN_BATCH_N_DATA = 10
_CHUNK = 256


def payload(n_data: int) -> list[int]:
    return [int(i % 3 == 0 or i % 5 == 0) for i in range(n_data)]


def kept_batches(batches: list[Batch], n_drop_batch: int) -> list[Batch]:
    """The batches generate keeps: all but the `n_drop_batch` ids that sort last."""
    ordered = sorted(batches, key=lambda b: b.batch_id, reverse=True)
    return sorted(ordered[n_drop_batch:], key=lambda b: b.batch_id)


def plan(batches: list[Batch], n_drop_batch: int) -> list[tuple[Batch, bool]]:
    """(batch, whether its last client is invalid) for every batch to generate, "bad-id" last."""
    for batch in batches:
        check_batch_id(batch.batch_id)  # ids become folder names
    planned = [(batch, True) for batch in kept_batches(batches, n_drop_batch)]
    planned.append((Batch(UNKNOWN_BATCH, UNKNOWN_BATCH_N_DATA), False))
    return planned


def _b64(packet: bytes) -> str:
    return base64.b64encode(packet).decode("ascii")


def rows(
    config: Config, n_rows: int, keying: PrgKeying, invalid_last: bool
) -> Iterator[tuple[str, str, str]]:
    """(id, base64 share for A, base64 share for B) rows of one batch, in id order, a chunk at a time."""
    ids = [str(uuid.uuid4()) for _ in range(n_rows)]
    invalid = ids[-1] if invalid_last else None
    ids.sort()
    client = Client(config, keying)
    longer = Client(
        Config(config.n_data + 1, config.public_key_a, config.public_key_b, config.batch_id), keying
    )
    for start in range(0, n_rows, _CHUNK):
        chunk = ids[start : start + _CHUNK]
        valid = [i for i in chunk if i != invalid]
        packets = dict(zip(valid, client.encode_batch([payload(config.n_data)] * len(valid))))
        if invalid in chunk:
            packets[invalid] = longer.encode(payload(config.n_data + 1))
        for record_id in chunk:
            packet_a, packet_b = packets[record_id]
            yield record_id, _b64(packet_a), _b64(packet_b)


def generate(
    batches: list[Batch],
    public_key_a: X25519PublicKey,
    public_key_b: X25519PublicKey,
    output_a: Location,
    output_b: Location,
    n_rows: int = 100,
    n_partitions: int = 2,
    n_drop_batch: int = 0,
    keying: PrgKeying = PrgKeying.HASHED,
) -> dict[str, int]:
    """Write batch_id=<id>/part-*.ndjson shares for A and B and mark both complete.

    Rows are ordered by id and split into `n_partitions` parts, like the
    original's range partitioning. Returns the rows written per batch id.
    """
    if n_rows < 1:
        raise ValueError("n_rows must be at least 1")
    written = {}
    for batch, invalid_last in plan(batches, n_drop_batch):
        config = Config(batch.n_data, public_key_a, public_key_b, batch.batch_id.encode())
        parts = max(1, min(n_partitions, n_rows))
        size = -(-n_rows // parts)
        batch_rows = rows(config, n_rows, keying, invalid_last)
        folder = f"batch_id={batch.batch_id}"
        for part in range(parts):
            name = f"part-{part:05d}.ndjson"
            with (
                RecordWriter(output_a.join(folder, name)) as out_a,
                RecordWriter(output_b.join(folder, name)) as out_b,
            ):
                for _, (record_id, share_a, share_b) in zip(range(size), batch_rows):
                    out_a.write({"id": record_id, "payload": share_a})
                    out_b.write({"id": record_id, "payload": share_b})
        written[batch.batch_id] = n_rows
    mark_success(output_a)
    mark_success(output_b)
    return written


def expected_counts(batch: Batch, n_rows: int) -> list[int]:
    """What both servers must publish for a generated batch: the invalid row is excluded."""
    return [(n_rows - 1) * bit for bit in payload(batch.n_data)]


def published_payload(folder: Location) -> list[int]:
    records = [r for r in read_all(folder.parts()) if isinstance(r, dict)]
    if len(records) != 1 or not isinstance(records[0].get("payload"), list):
        raise StorageError(f"{folder} does not hold one published record")
    return records[0]["payload"]


def check(
    batches: list[Batch],
    published_a: Location,
    published_b: Location,
    n_rows: int,
    n_drop_batch: int = 0,
) -> list[str]:
    """Mismatches (empty when both servers published the expected counts for every kept batch)."""
    problems = []
    kept = {b.batch_id for b in kept_batches(batches, n_drop_batch)}
    for batch in batches:
        check_batch_id(batch.batch_id)  # ids become folder names
        folders = [p.join(f"batch_id={batch.batch_id}") for p in (published_a, published_b)]
        if batch.batch_id not in kept:
            for server, folder in zip("AB", folders):
                if folder.is_dir():
                    problems.append(
                        f"batch {batch.batch_id}: server {server} published a batch that had no data"
                    )
            continue
        expected = expected_counts(batch, n_rows)
        for server, folder in zip("AB", folders):
            try:
                counts = published_payload(folder)
            except StorageError as exc:
                problems.append(f"batch {batch.batch_id}: server {server}: {exc}")
                continue
            if len(counts) != len(expected):
                problems.append(
                    f"batch {batch.batch_id}: server {server} published {len(counts)} counts, "
                    f"expected {len(expected)}"
                )
                continue
            for index, (got, want) in enumerate(zip(counts, expected)):
                if got != want:
                    problems.append(
                        f"batch {batch.batch_id}: server {server}, index {index}: {got} != expected {want}"
                    )
                    break
    return problems
