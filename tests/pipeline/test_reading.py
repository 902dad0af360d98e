"""Reading record files: hostile lines are counted records, never a crash or a memory blow-up."""

from __future__ import annotations

import tracemalloc

from prio_processor.engine import keys
from prio_processor.engine.client import Client
from prio_processor.engine.config import Config
from prio_processor.pipeline import stages
from prio_processor.storage import BadRecord, location, read_records


def test_deep_nesting_is_a_bad_record(tmp_path):
    path = tmp_path / "nested.ndjson"
    path.write_text('{"id": "x", "payload": ' + "[" * 100_000 + "]" * 100_000 + '}\n{"id": "y"}\n')
    first, second = read_records(location(path))
    assert isinstance(first, BadRecord)
    assert first.describe() == f"line 1 of {path} nests too deeply"
    assert second == {"id": "y"}


def test_long_lines_are_rejected_without_being_held(tmp_path):
    path = tmp_path / "junk.ndjson"
    junk = b"x" * (1 << 20)
    with open(path, "wb") as f:
        f.write(b'{"id": "a"}\n')
        for _ in range(40):  # one 40 MiB line
            f.write(junk)
        f.write(b'\n{"id": "b"}\n')
    tracemalloc.start()
    try:
        records = list(read_records(location(path), max_line=64 * 1024))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert records[0] == {"id": "a"}
    assert records[2] == {"id": "b"}
    assert isinstance(records[1], BadRecord)
    assert records[1].problem == "is longer than 65536 bytes"
    assert peak < 8 * (1 << 20)


def test_line_limit_is_about_twice_the_largest_packet():
    public = keys.generate_keypair()[1]
    for n_data in (1, 441, 2046, 30_000):
        config = Config(n_data, public, public, b"batch")
        packet_a, _ = Client(config).encode_batch([[1] * n_data])[0]
        base64_length = (len(packet_a) + 2) // 3 * 4
        limit = stages.max_line_bytes(config)
        assert 2 * base64_length < limit < 2.5 * base64_length + 70_000
