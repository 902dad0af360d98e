"""The origin list of Firefox's origin telemetry: `[{name, hash, index}]` plus `__UNKNOWN__`.

Firefox's `TelemetryOriginData.inc` holds one `ORIGIN("name", "hash")` line per origin
(comments and blank lines aside); the position of a line is the origin's index in every
prio vector. Telemetry reports unlisted origins in one extra, last slot, `__UNKNOWN__`.
The list the original shipped is bundled, so nothing needs the network.
"""

from __future__ import annotations

import json
import re
import urllib.request
from importlib import resources
from typing import Any

TELEMETRY_ORIGIN_DATA_URL = (
    "https://hg.mozilla.org/mozilla-central/raw-file/tip/"
    "toolkit/components/telemetry/core/TelemetryOriginData.inc"
)
UNKNOWN = "__UNKNOWN__"
_STRING = r'"((?:[^"\\]|\\.)*)"'
_ORIGIN_LINE = re.compile(rf"^ORIGIN\(\s*{_STRING}\s*,\s*{_STRING}\s*\)\s*,?\s*$")

Origin = dict[str, Any]


class OriginError(Exception):
    """An origin list or .inc file that cannot be used."""


def _unquote(text: str) -> str:
    # C string escapes in the file are the JSON subset (\" and \\); json decodes them without eval.
    try:
        return json.loads(f'"{text}"')
    except ValueError:
        raise OriginError(f"bad string literal {text!r}") from None


def parse_inc(text: str) -> list[Origin]:
    """Origins of a TelemetryOriginData.inc text, with the final `__UNKNOWN__` entry."""
    origins: list[Origin] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("//"):
            continue
        match = _ORIGIN_LINE.match(line)
        if match is None:
            raise OriginError(f'line {number} is not ORIGIN("name", "hash"): {line[:80]!r}')
        origins.append({"name": _unquote(match[1]), "hash": _unquote(match[2]), "index": len(origins)})
    if not origins:
        raise OriginError("no ORIGIN lines found")
    origins.append({"name": UNKNOWN, "hash": UNKNOWN, "index": len(origins)})
    return origins


def read_inc(source: str, timeout: float = 30) -> list[Origin]:
    """Origins from an http(s) or file URL, or a local path to a .inc file."""
    try:
        if re.match(r"^[a-z][a-z0-9+.-]*://", source):
            with urllib.request.urlopen(source, timeout=timeout) as response:
                text = response.read().decode("utf-8")
        else:
            with open(source, encoding="utf-8") as f:
                text = f.read()
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise OriginError(f"cannot read {source}: {exc}") from None
    return parse_inc(text)


def validate(origins: Any) -> list[Origin]:
    """The list itself if every entry is {name: str, hash: str, index: its position}."""
    if not isinstance(origins, list) or not origins:
        raise OriginError("the origin list must be a non-empty JSON list")
    for position, entry in enumerate(origins):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("name"), str)
            or not isinstance(entry.get("hash"), str)
            or entry.get("index") != position
            or isinstance(entry.get("index"), bool)
        ):
            raise OriginError(f"origin entry {position} is not {{name, hash, index: {position}}}")
    return origins


def bundled() -> list[Origin]:
    """The origin list shipped with this package (2,487 entries, 2046 + 441)."""
    text = resources.files(__package__).joinpath("data", "telemetry_origin_data_inc.json").read_text("utf-8")
    return validate(json.loads(text))


def load(text: str | bytes) -> list[Origin]:
    try:
        data = json.loads(text)
    except ValueError:
        raise OriginError("the origin list is not JSON") from None
    return validate(data)
