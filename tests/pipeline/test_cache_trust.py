"""verify1's private cache is not taken on faith: any change to it is noticed, the shares are read
instead, and both servers publish exactly what they publish without a cache."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest

from prio_processor.engine.server import Schedule
from prio_processor.pipeline import runner
from prio_processor.pipeline.errors import InputError
from prio_processor.storage import location

from tests_support import PEER, Pair, run_server_chain, tampered_shares, write_parts


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 3 records: every part file of the cache holds several frames."""
    monkeypatch.setattr(runner, "_chunk_size", lambda server: 3)


def _frames(path: Path) -> list[tuple[int, int, dict]]:
    """(start, end, frame) of each frame in a cache file, however the frames are wrapped there."""
    data = path.read_bytes()
    unpacker = msgpack.Unpacker(io.BytesIO(data), raw=False)
    found, start = [], 0
    for item in unpacker:
        frame = item if isinstance(item, dict) else msgpack.unpackb(item[0], raw=False)
        found.append((start, unpacker.tell(), frame))
        start = unpacker.tell()
    return found


def _flip_bit_in(path: Path, field: str, pick: Callable[[dict], int]) -> None:
    """Flip one bit of frame 1's `field`, at the byte offset `pick(frame)` within the value."""
    data = bytearray(path.read_bytes())
    start, end, frame = _frames(path)[1]
    value = frame[field]
    at = bytes(data[start:end]).find(value)
    assert at >= 0 and bytes(data[start:end]).count(value) == 1
    data[start + at + pick(frame)] ^= 0x04
    path.write_bytes(bytes(data))


def _evaluated_h(frame: dict) -> int:
    """The last byte of h(r) of the first record verify1 evaluated."""
    return 11 * list(frame["evaluated"]).index(1) + 10


def _other_reason(path: Path) -> None:
    """A rejected share's reason replaced by another of the same length (decrypt_failed -> wrong_batch_id)."""
    data = path.read_bytes()
    assert b"decrypt_failed" in data
    path.write_bytes(data.replace(b"decrypt_failed", b"wrong_batch_id", 1))


def _cut_last_frame(path: Path) -> None:
    start, _, _ = _frames(path)[-1]
    path.write_bytes(path.read_bytes()[:start])


def _swap_first_frames(path: Path) -> None:
    data = path.read_bytes()
    (s0, e0, _), (s1, e1, _) = _frames(path)[:2]
    path.write_bytes(data[:s0] + data[s1:e1] + data[s0:e0] + data[e1:])


def _moved_from_another_part(path: Path) -> None:
    path.write_bytes((path.parent / "cache-part-00000.json.rows").read_bytes())


# What each fault does to server A's cache file of part 1 between verify1 and verify2.
FAULTS: dict[str, Callable[[Path], None]] = {
    "data_sum bit": lambda p: _flip_bit_in(p, "data_sum", lambda frame: 5),
    "h bit": lambda p: _flip_bit_in(p, "h", _evaluated_h),
    "reject reason": _other_reason,
    "last frame cut": _cut_last_frame,
    "frames reordered": _swap_first_frames,
    "frames of another part": _moved_from_another_part,
}


def _chain(pair: Pair, raw: dict[str, Path], out: Path, cache: Path | None, fault=None) -> list[str]:
    """Both servers through verify1, verify2, aggregate and publish; `fault` changes A's cache
    after verify1. The notices the stages gave."""
    notices: list[str] = []

    def before(stage: str, s: str) -> None:
        if fault is not None and cache is not None and stage == "verify2" and s == "A":
            fault(cache / "A" / "cache-part-00001.json.rows")

    run_server_chain({"A": pair.a, "B": pair.b}, raw, out, Schedule.FIXED, cache=cache, notice=notices.append,
                     before=before)
    for s in PEER:
        runner.run_stage(
            "publish",
            (pair.config, s),
            runner.Inputs(
                internal=location(out / s / "aggregate"), external=location(out / PEER[s] / "aggregate")
            ),
            location(out / s / "publish"),
        )
    return notices


def _written(out: Path) -> dict[str, object]:
    """Every file below `out`; of the published records, what does not change between runs."""
    files: dict[str, object] = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        name = str(path.relative_to(out))
        if "/publish/" in name:
            record = json.loads(path.read_text())
            files[name] = (record["payload"], record["error"], record["total"])
        else:
            files[name] = path.read_bytes()
    return files


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_changed_cache_is_noticed_and_outputs_stay_the_same(tmp_path, small_chunks, fault):
    pair = Pair(23)
    lines = tampered_shares(pair, 40, seed=5)
    raw = {s: tmp_path / "raw" / s for s in PEER}
    for s in PEER:
        write_parts(lines[s], raw[s], 4)
    assert _chain(pair, raw, tmp_path / "plain", None) == []
    notices = _chain(pair, raw, tmp_path / "cached", tmp_path / "cache", FAULTS[fault])
    assert _written(tmp_path / "cached") == _written(tmp_path / "plain")
    # A's verify2 and aggregate each stopped using the cache and said which file let them down.
    assert len(notices) == 2, notices
    for notice in notices:
        assert notice.startswith(f"stopped using the cache in {tmp_path / 'cache' / 'A'}: ")
        assert "cache-part-00001.json.rows" in notice, notice
        assert notice.endswith("; reading the shares from the start")


def test_a_changed_manifest_is_noticed(tmp_path):
    pair = Pair(9)
    lines = tampered_shares(pair, 20, seed=2)
    raw = {s: tmp_path / "raw" / s for s in PEER}
    for s in PEER:
        write_parts(lines[s], raw[s], 2)

    def fewer_frames(path: Path) -> None:
        manifest = path.parent / "_manifest.json"
        found = json.loads(manifest.read_text())
        found["frames"]["part-00001.json"] -= 1
        found["rows"]["part-00001.json"] -= 1
        manifest.write_text(json.dumps(found))

    notices = _chain(pair, raw, tmp_path / "cached", tmp_path / "cache", fewer_frames)
    assert (
        notices
        == [
            f"not using the cache in {tmp_path / 'cache' / 'A'}: its manifest _manifest.json does not "
            "authenticate (altered, or not written by this server); reading the shares"
        ]
        * 2
    )


# Where the cache may not be, relative to the stage's folders: (stage, cache, what it collides with).
PLACES = {
    "inside --output": ("verify1", "out/A/verify1/sub", "out/A/verify1"),
    "holding --output": ("verify1", "out/A", "out/A/verify1"),
    "inside --output through ..": ("verify1", "out/A/other/../verify1/sub", "out/A/verify1"),
    "inside --input": ("verify1", "raw/A/cache", "raw/A"),
    "inside --rejects": ("verify1", "rejects/A/cache", "rejects/A"),
    "holding --rejects": ("verify1", "rejects", "rejects/A"),
    "inside --input-external": ("verify2", "out/B/verify1/cache", "out/B/verify1"),
    "holding verify2's --output": ("verify2", "out/A", "out/A/verify2"),
    "inside aggregate's --output": ("aggregate", "out/A/aggregate/c", "out/A/aggregate"),
}


def _stage_at(pair: Pair, root: str, stage: str, cache: str) -> None:
    prev = {"verify2": "verify1", "aggregate": "verify2"}.get(stage)
    inputs = runner.Inputs(location(f"{root}/raw/A"))
    if prev:
        inputs = runner.Inputs(
            location(f"{root}/raw/A"), location(f"{root}/out/A/{prev}"), location(f"{root}/out/B/{prev}")
        )
    runner.run_stage(
        stage,
        pair.a,
        inputs,
        location(f"{root}/out/A/{stage}"),
        location(f"{root}/rejects/A"),
        schedule=Schedule.FIXED,
        cache=location(f"{root}/{cache}"),
    )


def _shares_at(pair: Pair, root: str) -> None:
    """Shares of both servers, and both servers' verify1 and verify2 without a cache, below `root`."""
    lines = tampered_shares(pair, 20, seed=1)
    for s in PEER:
        with location(f"{root}/raw/{s}/part-0.json").open_write() as f:
            f.write("".join(line + "\n" for line in lines[s]).encode())
    for stage, prev in (("verify1", None), ("verify2", "verify1")):
        for s, server in (("A", pair.a), ("B", pair.b)):
            inputs = runner.Inputs(location(f"{root}/raw/{s}"))
            if prev:
                inputs = runner.Inputs(
                    location(f"{root}/raw/{s}"),
                    location(f"{root}/out/{s}/{prev}"),
                    location(f"{root}/out/{PEER[s]}/{prev}"),
                )
            runner.run_stage(
                stage, server, inputs, location(f"{root}/out/{s}/{stage}"), schedule=Schedule.FIXED
            )


@pytest.mark.parametrize(
    ("place", "storage"),
    [(p, s) for p in sorted(PLACES) for s in ("local", "gs") if not (s == "gs" and ".." in PLACES[p][1])],
)
def test_the_cache_stays_apart_from_every_folder_of_the_stage(tmp_path, request, storage, place):
    """A cache inside an output (`--output out --cache out/sub`) would go to the partner with the
    next `prio bucket sync out partner/`: it is refused, as is one holding or inside any other
    input, output or rejects location of the stage, before anything is written."""
    stage, cache, collides = PLACES[place]
    pair = Pair(5)
    root = f"gs://{request.getfixturevalue('gcs')()}/d" if storage == "gs" else str(tmp_path)
    _shares_at(pair, root)
    before = sorted(name for name, _ in location(root).walk())
    with pytest.raises(InputError, match="must not be, lie inside or contain") as caught:
        _stage_at(pair, root, stage, cache)
    assert str(caught.value).endswith(
        f"{location(f'{root}/{collides}').uri}, an input, output or --rejects of the stage"
    )
    assert sorted(name for name, _ in location(root).walk()) == before
