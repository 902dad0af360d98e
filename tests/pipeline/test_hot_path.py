"""The fast readers on a stage's hot path read exactly what the standard library and the careful
element reader read: JSON lines (orjson), base64 (pybase64), runs of field elements, line spans."""

from __future__ import annotations

import base64
import binascii
import json
import random

import numpy as np
import pytest

from prio_processor.engine import codec
from prio_processor.engine.errors import PacketError
from prio_processor.engine.field import MODULUS
from prio_processor.pipeline.errors import RecordError
from prio_processor.pipeline.stages import decode_base64, encode_base64
from prio_processor.storage import BadRecord, LocalLocation
from prio_processor.storage.records import parse_line, read_raw, read_span_lines, read_spans

LINES = [
    b'{"id": "a", "payload": "QUJD"}',
    b'{"id": "a", "id": "b"}',  # the later key wins in both readers
    b'{"n": 123456789012345678901234567890}',  # beyond 64 bits: orjson would make a float
    b'{"n": -9223372036854775809, "x": [1, {"y": 2.5}]}',
    b'{"n": 1.0000000000000002, "m": -0.0, "e": 1E400}',
    b'{"n": NaN}',
    b'{"s": "\\ud800"}',  # a lone surrogate
    b'\xef\xbb\xbf{"a": 1}',  # a byte-order mark
    b'{"a": "\xff"}',  # invalid UTF-8
    b'{"a": 1',
    b"[1, 2]",
    b'"text"',
    b"[" * 5000 + b"]" * 5000,
    b'{"a": ' * 600 + b"1" + b"}" * 600,
    b'{"unicode": "\xc3\xa9\\u00e9", "t": true, "f": false, "z": null}\n',
]


def _json_reference(line: bytes) -> object:
    try:
        record = json.loads(line)
    except RecursionError:
        return "nests too deeply"
    except ValueError:
        return "bad"
    return record if isinstance(record, dict) else "bad"


def _ours(line: bytes) -> object:
    record = parse_line(line, "mem", 1)
    if isinstance(record, BadRecord):
        return "nests too deeply" if record.problem == "nests too deeply" else "bad"
    return record


@pytest.mark.parametrize("line", LINES, ids=range(len(LINES)))
def test_lines_read_as_json_reads_them(line):
    ours, reference = _ours(line), _json_reference(line)
    assert repr(ours) == repr(reference)  # repr: NaN and -0.0 compare by their spelling


def _stdlib_base64(text: str) -> bytes | str:
    try:
        return base64.b64decode(text)
    except (binascii.Error, ValueError):
        return "error"


def _our_base64(text: str) -> bytes | str:
    try:
        return decode_base64(text)
    except RecordError:
        return "error"


def test_base64_decodes_as_the_standard_library_does():
    rng = random.Random(5)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
    texts = ["", "=", "QQ", "QQ=", "QQ==", "QQ===", "Q=Q=", "QR==", "QUJD\n", " QUJD", "QU JD", "QUJD=QUJD"]
    texts.append("é")
    for _ in range(20000):
        texts.append("".join(rng.choice(alphabet + " -_\n") for _ in range(rng.randint(0, 14))))
        valid = base64.b64encode(rng.randbytes(rng.randint(0, 12))).decode()
        texts.append(valid)
        if valid:
            k = rng.randrange(len(valid))
            texts.append(valid[:k] + rng.choice(alphabet) + valid[k + 1 :])
    mismatches = [t for t in texts if _our_base64(t) != _stdlib_base64(t)]
    assert not mismatches, mismatches[:5]
    data = rng.randbytes(3000)
    assert encode_base64(data) == base64.b64encode(data).decode()


def _element_array(values: list[int]) -> bytes:
    return b"".join(codec.pack_element(v) for v in values)


def _careful(data: bytes, count: int) -> np.ndarray:
    reader = codec._Reader(data)
    return codec._rows_from_ints([reader.element() for _ in range(count)])


@pytest.mark.parametrize("short_share", [0.0, 0.01, 0.3, 1.0])
def test_element_runs_read_as_the_careful_reader_reads_them(short_share):
    rng = random.Random(int(short_share * 100))
    values = [
        rng.randrange(1 << rng.choice([0, 8, 40, 72, 79]))
        if rng.random() < short_share
        else rng.randrange(MODULUS)
        for _ in range(3000)
    ]
    data = _element_array(values) + b"\x91\x00"  # whatever follows the array
    fast = codec._fast_elements(data, 0, len(values))
    assert fast is not None
    items, end = fast
    assert end == len(data) - 2
    assert np.array_equal(items[:, 1:], _careful(data, len(values)))


def test_element_runs_that_break_off_are_left_to_the_careful_reader():
    data = _element_array([MODULUS - 1] * 300)
    assert codec._fast_elements(data[:-5], 0, 300) is None  # truncated
    assert codec._fast_elements(data[:120] + b"\xc4" + data[121:], 0, 300) is None  # not a str
    with pytest.raises(PacketError):
        codec._Reader(b"\xdc\x01\x2c" + data[:-5]).elements(300, "test")


@pytest.mark.parametrize("last", [b"", b'{"id": "z"}', b"x" * 20, b"x" * 21, b"  "])
def test_line_spans_give_the_lines_read_raw_gives(tmp_path, last):
    path = tmp_path / "part-0.json"
    lines = [b'{"id": "x"}\n', b"\n", b"   \n", b'{"id": "' + b"y" * 5000 + b'"}\n', b"[1]\n"]
    lines += [b"y" * 20 + b"\n", b"y" * 21 + b"\n", b"\t{}\r\n", last]  # around the longest line, 20 bytes
    path.write_bytes(b"".join(lines))
    loc = LocalLocation(path)
    raw = list(read_raw(loc, 20))
    spans = list(read_spans(loc, 20))
    assert [type(r) for r in raw] == [type(s) for s in spans]
    assert [r for r in raw if isinstance(r, BadRecord)] == [s for s in spans if isinstance(s, BadRecord)]
    assert sum(isinstance(r, BadRecord) for r in raw) == 2 + (last == b"x" * 21)
    kept = [s for s in spans if isinstance(s, tuple)]
    assert read_span_lines(str(path), kept) == [r for r in raw if isinstance(r, tuple)]


def test_an_empty_file_has_no_spans(tmp_path):
    (tmp_path / "empty.json").write_bytes(b"")
    assert list(read_spans(LocalLocation(tmp_path / "empty.json"))) == []
