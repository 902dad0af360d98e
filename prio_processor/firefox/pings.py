"""Firefox-shaped prio pings with planted counts, for the end-to-end check.

Every metric's origins are split over its batch ids `<metric>-0`, `<metric>-1`, ...
A ping carries one entry per batch id; bit i of a metric is set in ping p when
`planted(metric_number, p, i)`. Besides the valid pings, the sink holds a line that
is not JSON, a message that is not base64, a ping without prioData, an entry of an
unknown encoding, an entry without server B's share, a duplicate ping id and an
entry whose share for server A is not a packet (it reaches the servers, which
reject it). The expected counts per origin and the expected server errors are
written beside the pings.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from ..dataconfig import Batch
from ..engine.client import Client
from ..engine.config import Config
from ..engine.prg import PrgKeying
from ..storage import Location
from .indexing import split_batch_id

HOURS = ("00", "01")
FILES_PER_HOUR = 2


def planted(metric_number: int, ping: int, index: int) -> int:
    """Whether ping `ping` reports origin `index` of a metric: uneven counts across origins."""
    if index == 0:  # PAGELOAD: every ping
        return 1
    return int((ping + index * (metric_number + 1)) % (2 + index % 11) == 0)


@dataclass(frozen=True)
class Metric:
    name: str
    parts: list[Batch]

    @property
    def length(self) -> int:
        return sum(p.n_data for p in self.parts)


def metrics_of(batches: list[Batch]) -> list[Metric]:
    grouped: dict[str, list[tuple[int, Batch]]] = defaultdict(list)
    for batch in batches:
        name, part = split_batch_id(batch.batch_id)
        grouped[name].append((part, batch))
    out = []
    for name in sorted(grouped):
        parts = sorted(grouped[name], key=lambda pair: pair[0])
        if [p for p, _ in parts] != list(range(len(parts))):
            raise ValueError(f"metric {name} does not have parts 0..{len(parts) - 1}")
        out.append(Metric(name, [b for _, b in parts]))
    return out


def _ping(ping_id: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "prio",
        "id": ping_id,
        "creationDate": "2019-06-26T12:45:07.011Z",
        "version": 4,
        "application": {"name": "Firefox", "version": "69.0a1", "channel": "nightly"},
        "payload": {"version": "1", "reason": "shutdown", "prioData": entries},
    }


def _message(ping: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(ping).encode("utf-8")
    attributes = {"document_namespace": "telemetry", "document_type": "prio", "document_version": "4"}
    return {"attributeMap": attributes, "payload": base64.b64encode(text).decode("ascii")}


def generate(
    batches: list[Batch],
    public_key_a: X25519PublicKey,
    public_key_b: X25519PublicKey,
    sink: Location,
    date: str,
    n_pings: int,
    keying: PrgKeying = PrgKeying.HASHED,
) -> dict[str, Any]:
    """Write the sink layout for `date`; returns (and writes as expected.json) what must come out."""
    if n_pings < 3:
        raise ValueError("n_pings must be at least 3")
    metrics = metrics_of(batches)
    ids = [str(uuid.uuid4()) for _ in range(n_pings)]
    entries: list[list[dict[str, Any]]] = [[] for _ in range(n_pings)]
    expected_counts = {m.name: [0] * m.length for m in metrics}
    expected_errors: dict[str, int] = defaultdict(int)
    # Ping 1 has no share for server B in its first entry (staging drops it); ping 2's first share
    # for server A is not a packet (the servers reject it).
    dropped, corrupted = (1, 0), (2, 0)
    for number, metric in enumerate(metrics):
        bits = [[planted(number, p, i) for i in range(metric.length)] for p in range(n_pings)]
        offset = 0
        for batch in metric.parts:
            config = Config(batch.n_data, public_key_a, public_key_b, batch.batch_id.encode())
            vectors = [row[offset : offset + batch.n_data] for row in bits]
            packets = Client(config, keying).encode_batch(vectors)
            for p, (share_a, share_b) in enumerate(packets):
                prio = {"a": base64.b64encode(share_a).decode(), "b": base64.b64encode(share_b).decode()}
                position = len(entries[p])
                if (p, position) == dropped:
                    del prio["b"]
                elif (p, position) == corrupted:
                    prio["a"] = base64.b64encode(b"not a packet").decode()
                    expected_errors[batch.batch_id] += 1
                entries[p].append({"encoding": batch.batch_id, "prio": prio})
                if (p, position) not in (dropped, corrupted):
                    for i, bit in enumerate(vectors[p]):
                        expected_counts[metric.name][offset + i] += bit
            offset += batch.n_data
    entries[3 % n_pings].append(
        {"encoding": "content.blocking_unknown_metric-0", "prio": {"a": "AA==", "b": "AA=="}}
    )
    pings = [_ping(i, e) for i, e in zip(ids, entries)]
    lines: list[str] = [json.dumps(_message(p)) for p in pings]
    lines.append(json.dumps(_message(pings[0])))  # a duplicate ping id
    lines.append("{not json")
    lines.append(json.dumps({"attributeMap": {}, "payload": "%%% not base64 %%%"}))
    lines.append(json.dumps(_message({"type": "prio", "id": str(uuid.uuid4()), "payload": {}})))
    _write_sink(sink, date, lines)
    expected = {
        "date": date,
        "counts": expected_counts,
        "errors": dict(expected_errors),
        "staging_rejects": {
            "bad_json": 1,
            "bad_base64": 1,
            "bad_ping": 1,
            "missing_share": 1,
            "unknown_encoding": 1,
        },
        "duplicates": 1,
    }
    sink.join("expected.json").write_bytes(json.dumps(expected).encode("utf-8"))
    return expected


def _write_sink(sink: Location, date: str, lines: list[str]) -> None:
    slots = [(hour, k) for hour in HOURS for k in range(FILES_PER_HOUR)]
    for number, (hour, k) in enumerate(slots):
        path = sink.join(date, hour, "telemetry", "prio", "4", f"part-{k}.ndjson")
        with path.open_write() as f:
            for line in lines[number :: len(slots)]:
                f.write((line + "\n").encode("utf-8"))


def check(expected: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """Mismatches between the expected counts and errors and the database rows of the date."""
    problems = []
    got: dict[str, dict[int, int]] = defaultdict(dict)
    errors: dict[str, dict[str, int]] = defaultdict(dict)
    for row in rows:
        got[row["batch_id"]][row["index"]] = row["aggregate"]
        errors[row["batch_id"]][row["id"]] = row["error"]
    for metric, counts in expected["counts"].items():
        if metric not in got:
            problems.append(f"metric {metric}: no rows")
            continue
        if len(got[metric]) != len(counts):
            problems.append(f"metric {metric}: {len(got[metric])} origins, expected {len(counts)}")
        for index, want in enumerate(counts):
            if got[metric].get(index) != want:
                problems.append(
                    f"metric {metric}, origin index {index}: {got[metric].get(index)} != expected {want}"
                )
                break
    for metric in got.keys() - expected["counts"].keys():
        problems.append(f"metric {metric}: rows that were not generated")
    want_errors: dict[str, int] = defaultdict(int)
    for batch_id, n in expected["errors"].items():
        want_errors[split_batch_id(batch_id)[0]] += n
    for metric in expected["counts"]:
        have = sum(errors[metric].values())
        if have != want_errors[metric]:
            problems.append(f"metric {metric}: {have} errors, expected {want_errors[metric]}")
    return problems
