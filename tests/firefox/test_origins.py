"""The origin list: the bundled copy, parsing TelemetryOriginData.inc without eval, --url."""

from __future__ import annotations

import functools
import http.server
import json
import threading

import pytest
from click.testing import CliRunner

from prio_processor.firefox import origins
from prio_processor.firefox.commands import entry_point

INC = """\
// This Source Code Form is subject to the terms of the Mozilla Public
// License, v. 2.0.

ORIGIN("PAGELOAD", "PAGELOAD")
ORIGIN("advertstream.com", "lzPiT1FuoHNMKQ1Hw8AaTi68TokOB24ciFBqmCk62ek=")

ORIGIN("odd\\"name.example", "hash/with+chars=")
"""


def test_bundled_list_is_the_originals():
    data = origins.bundled()
    assert len(data) == 2487 == 2046 + 441
    assert data[0] == {"name": "PAGELOAD", "hash": "PAGELOAD", "index": 0}
    assert data[-1] == {"name": "__UNKNOWN__", "hash": "__UNKNOWN__", "index": 2486}
    assert [d["index"] for d in data] == list(range(2487))


def test_parse_inc():
    data = origins.parse_inc(INC)
    assert data == [
        {"name": "PAGELOAD", "hash": "PAGELOAD", "index": 0},
        {"name": "advertstream.com", "hash": "lzPiT1FuoHNMKQ1Hw8AaTi68TokOB24ciFBqmCk62ek=", "index": 1},
        {"name": 'odd"name.example', "hash": "hash/with+chars=", "index": 2},
        {"name": "__UNKNOWN__", "hash": "__UNKNOWN__", "index": 3},
    ]


@pytest.mark.parametrize(
    "line", ['__import__("os").system("true")', 'ORIGIN("a", "b") + ORIGIN("c", "d")', 'ORIGIN("a")']
)
def test_code_is_not_run_but_named(line):
    with pytest.raises(origins.OriginError, match="line 2 is not ORIGIN"):
        origins.parse_inc('ORIGIN("a", "b")\n' + line + "\n")


def test_validate_names_the_bad_entry():
    with pytest.raises(origins.OriginError, match="entry 1"):
        origins.validate([{"name": "a", "hash": "a", "index": 0}, {"name": "b", "hash": "b", "index": 5}])


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _fetch(*args: str):
    return CliRunner().invoke(entry_point, ["fetch-origins", *args])


def test_fetch_origins_default_local_file_and_url(tmp_path):
    result = _fetch()
    assert result.exit_code == 0
    assert json.loads(result.output) == origins.bundled()

    inc = tmp_path / "TelemetryOriginData.inc"
    inc.write_text(INC)
    out = tmp_path / "origins.json"
    result = _fetch("--url", str(inc), "--output", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) == origins.parse_inc(INC)

    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/TelemetryOriginData.inc"
        result = _fetch("--url", url)
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)[-2]["name"] == 'odd"name.example'
        missing = _fetch("--url", url.replace(".inc", ".missing"))
        assert missing.exit_code == 2 and "cannot read" in missing.output
    finally:
        server.shutdown()
        server.server_close()
