"""Drop-in compatibility with the original `prio`: options, stdout lines, output folders, secrets,
kept fields, A/B mismatches, hostile input and failing disks."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_behaviour import _encode, _keys, _server_env, run_all

from runner import run_inprocess, run_subprocess

PEER = {"A": "B", "B": "A"}
ROWS = [[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]]


@pytest.fixture(scope="module")
def keys() -> dict:
    return _keys(run_inprocess)


def _stage_args(stage: str, raw: str, out: Path, server: str, prev: str | None) -> list[str]:
    args = [stage, "--input", raw, "--output", str(out / server / stage)]
    if prev:
        args += [
            "--input-internal",
            str(out / server / prev / "data.ndjson"),
            "--input-external",
            str(out / PEER[server] / prev / "data.ndjson"),
        ]
    return args


def _publish_env(keys: dict, server: str, n_data: int = 4) -> dict[str, str]:
    return {
        k: v for k, v in _server_env(keys, server, n_data).items() if "PRIVATE" not in k and "SECRET" not in k
    }


def test_stdout_is_the_originals_and_outputs_hold_only_data(keys, tmp_path):
    client = tmp_path / "client"
    client.mkdir()
    (client / "data.ndjson").write_text("".join(json.dumps({"payload": r}) + "\n" for r in ROWS))
    encode = run_inprocess(
        [
            "encode-shares",
            "--n-data",
            "4",
            "--batch-id",
            "e2e",
            "--public-key-hex-internal",
            keys["A"]["public_key"],
            "--public-key-hex-external",
            keys["B"]["public_key"],
            "--input",
            str(client / "data.ndjson"),
            "--output-A",
            str(tmp_path / "raw_a"),
            "--output-B",
            str(tmp_path / "raw_b"),
        ]
    )
    assert encode.exit_code == 0
    assert encode.stdout == ""
    raw = {s: str(tmp_path / f"raw_{s.lower()}" / "data.ndjson") for s in PEER}
    assert os.listdir(tmp_path / "raw_a") == ["data.ndjson"]
    out = tmp_path / "work"
    for stage, prev in (("verify1", None), ("verify2", "verify1"), ("aggregate", "verify2")):
        for s in PEER:
            result = run_inprocess(_stage_args(stage, raw[s], out, s, prev), _server_env(keys, s, 4))
            assert result.exit_code == 0, result.output
            assert result.stdout == f"Running {stage}\n0 errors out of 6 total\n"
            assert os.listdir(out / s / stage) == ["data.ndjson"]
    # publish accepts the server options the original declares on it, inline or from files.
    (tmp_path / "key").write_text(keys["A"]["private_key"] + "\n")
    for secrets in (
        {"PRIVATE_KEY_HEX": keys["A"]["private_key"], "SHARED_SECRET": keys["seed"]},
        {"PRIVATE_KEY_FILE": str(tmp_path / "key"), "SHARED_SECRET": keys["seed"]},
    ):
        result = run_inprocess(
            [
                "publish",
                "--input-internal",
                str(out / "A" / "aggregate" / "data.ndjson"),
                "--input-external",
                str(out / "B" / "aggregate" / "data.ndjson"),
                "--output",
                str(out / "A" / "publish"),
            ],
            dict(_publish_env(keys, "A"), **secrets),
        )
        assert result.exit_code == 0, result.output
        assert result.stdout == "Running publish\n"
        assert result.stderr == "server A, batch e2e: published 6 valid clients (0 errors out of 6 total)\n"
        assert os.listdir(out / "A" / "publish") == ["data.ndjson"]
    published = json.loads((out / "A" / "publish" / "data.ndjson").read_text())
    assert published["payload"] == [sum(c) for c in zip(*ROWS)]


def test_rejects_go_only_where_asked(keys, tmp_path):
    raw = _encode(run_inprocess, keys, 4, ROWS, tmp_path)
    Path(raw["A"]).write_text(Path(raw["A"]).read_text() + "{broken\n")
    env = _server_env(keys, "A", 4)
    result = run_inprocess(
        [
            "verify1",
            "--input",
            raw["A"],
            "--output",
            str(tmp_path / "out"),
            "--rejects",
            str(tmp_path / "rejects"),
        ],
        env,
    )
    assert result.exit_code == 0, result.output
    assert os.listdir(tmp_path / "out") == ["data.ndjson"]
    (entry,) = [
        json.loads(line)
        for line in (tmp_path / "rejects" / "rejects-verify1-A.ndjson").read_text().splitlines()
    ]
    assert entry == {"id": None, "reason": "bad_json", "detail": f"line 7 of {raw['A']} is not a JSON object"}
    same = run_inprocess(
        [
            "verify1",
            "--input",
            raw["A"],
            "--output",
            str(tmp_path / "out"),
            "--rejects",
            str(tmp_path / "out"),
        ],
        env,
    )
    assert same.exit_code == 2
    assert "--rejects must not be in an output folder" in same.stderr
    # A file name (as bin/process gives) is used as is.
    named = tmp_path / "rejected" / "verify1" / "batch_id=e2e" / "rejects.ndjson"
    args = ["verify1", "--input", raw["A"], "--output", str(tmp_path / "out")]
    assert run_inprocess(args, dict(env, REJECTS=str(named))).exit_code == 0
    assert [json.loads(line)["reason"] for line in named.read_text().splitlines()] == ["bad_json"]
    inside = run_inprocess(args, dict(env, REJECTS=str(tmp_path / "out" / "rejects.ndjson")))
    assert inside.exit_code == 2


def test_client_data_rejects_from_encode_shares(keys, tmp_path):
    client = tmp_path / "client.ndjson"
    client.write_text(
        json.dumps({"payload": [1, 0, 1, 0]}) + "\n" + json.dumps({"payload": [1, 2, 0, 0]}) + "\n"
    )
    result = run_inprocess(
        [
            "encode-shares",
            "--n-data",
            "4",
            "--batch-id",
            "e2e",
            "--public-key-hex-internal",
            keys["A"]["public_key"],
            "--public-key-hex-external",
            keys["B"]["public_key"],
            "--input",
            str(client),
            "--output-A",
            str(tmp_path / "a"),
            "--output-B",
            str(tmp_path / "b"),
        ],
        {"REJECTS": str(tmp_path / "rejects")},
    )
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "1 errors out of 2 total (out_of_range: 1)" in result.stderr
    assert os.listdir(tmp_path / "a") == ["client.ndjson"]
    (entry,) = [
        json.loads(line)
        for line in (tmp_path / "rejects" / "rejects-encode-shares.ndjson").read_text().splitlines()
    ]
    assert entry["reason"] == "out_of_range"


def test_encode_shares_refuses_unusable_public_keys(keys, tmp_path):
    client = tmp_path / "client.ndjson"
    client.write_text(json.dumps({"payload": [1, 0, 1, 0]}) + "\n")
    result = run_subprocess(
        [
            "encode-shares",
            "--n-data",
            "4",
            "--batch-id",
            "e2e",
            "--public-key-hex-internal",
            "00" * 32,
            "--public-key-hex-external",
            keys["B"]["public_key"],
            "--input",
            str(client),
            "--output-A",
            str(tmp_path / "a"),
            "--output-B",
            str(tmp_path / "b"),
        ]
    )
    assert result.exit_code == 2
    assert result.stderr == "Error: bad --public-key-hex-internal: not a usable Curve25519 public key\n"
    assert not (tmp_path / "a").exists()


def test_secrets_with_white_space_and_long_seeds(keys, tmp_path):
    """A trailing newline (as `$(cat file)` keeps) is ignored; a seed longer than 16 bytes is cut
    to its first 16 as libprio does, with a warning that never shows it."""
    raw = _encode(run_inprocess, keys, 4, ROWS, tmp_path)
    plain = run_all(run_inprocess, keys, 4, raw, tmp_path / "plain")
    seed = base64.b64decode(keys["seed"])
    long_seed = base64.b64encode(seed + b"ignored tail").decode()
    padded = {**keys, "seed": f"  {long_seed}\n", "A": {k: v + "\n" for k, v in keys["A"].items()}}
    record = run_all(run_inprocess, padded, 4, raw, tmp_path / "padded")
    assert record["payload"] == plain["payload"]
    result = run_inprocess(
        ["verify1", "--input", raw["A"], "--output", str(tmp_path / "again")], _server_env(padded, "A", 4)
    )
    assert result.exit_code == 0
    assert "the shared secret has 28 bytes; using its first 16, as libprio does" in result.stderr
    assert long_seed not in result.output
    assert keys["seed"] not in result.output


def test_public_key_internal_that_does_not_match_is_a_warning(keys, tmp_path):
    raw = _encode(run_inprocess, keys, 4, ROWS, tmp_path)
    env = dict(_server_env(keys, "A", 4), PUBLIC_KEY_HEX_INTERNAL=keys["B"]["public_key"])
    result = run_inprocess(["verify1", "--input", raw["A"], "--output", str(tmp_path / "out")], env)
    assert result.exit_code == 0, result.output
    assert "the private key does not match --public-key-hex-internal" in result.stderr
    # The batch is encrypted to A's key as the private key says; the config's key A is now B's,
    # and libprio binds no public key into a packet, so the shares still open.
    assert result.stdout.endswith("0 errors out of 6 total\n")


def test_outputs_keep_every_input_field_but_payload(keys, tmp_path):
    raw = _encode(run_inprocess, keys, 4, ROWS, tmp_path)
    for s in PEER:
        lines = [json.loads(line) for line in Path(raw[s]).read_text().splitlines()]
        Path(raw[s]).write_text(
            "".join(json.dumps({"submission_date": "2026-11-28", **r, "os": "Linux"}) + "\n" for r in lines)
        )
    run_all(run_inprocess, keys, 4, raw, tmp_path)
    for stage in ("verify1", "verify2"):
        first = json.loads((tmp_path / "A" / stage / "data.ndjson").read_text().splitlines()[0])
        assert list(first)[:4] == ["submission_date", "id", "payload", "os"]
        assert first["submission_date"] == "2026-11-28"
        assert set(first) >= {"digest", "prio_settings"}


def test_mostly_failing_batch_names_likely_causes(keys, tmp_path):
    raw = _encode(run_inprocess, keys, 4, ROWS, tmp_path)
    # B's shares given to A: none opens.
    result = run_inprocess(
        ["verify1", "--input", raw["B"], "--output", str(tmp_path / "out")], _server_env(keys, "A", 4)
    )
    assert result.exit_code == 0
    assert "more than half of the batch failed verify1 (6 of 6, mostly decrypt_failed)" in result.stderr
    assert "check --private-key-hex and --server-id" in result.stderr


def _strip_settings(folder: Path) -> None:
    """Make a stage's output look like the original's (no settings stamp)."""
    for path in folder.iterdir():
        records = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text(
            "".join(json.dumps({k: v for k, v in r.items() if k != "prio_settings"}) + "\n" for r in records)
        )


def test_schedule_mismatch_with_an_unstamped_partner_shows_at_aggregate(keys, tmp_path):
    """Packets without stamps (the original's) cannot be checked up front: the hint names the settings."""
    raw = _encode(run_inprocess, keys, 4, ROWS, tmp_path)
    out = tmp_path / "work"
    for stage, prev in (("verify1", None), ("verify2", "verify1")):
        for s in PEER:
            schedule = "fixed" if s == "B" else "sequential"
            result = run_inprocess(
                [*_stage_args(stage, raw[s], out, s, prev), "--evaluation-point", schedule],
                _server_env(keys, s, 4),
            )
            assert result.exit_code == 0, result.output
            _strip_settings(out / s / stage)
    result = run_inprocess(_stage_args("aggregate", raw["A"], out, "A", "verify2"), _server_env(keys, "A", 4))
    assert result.exit_code == 0
    assert "more than half of the batch failed aggregate" in result.stderr
    assert "--evaluation-point, --prg-keying, the keys or the shared secret" in result.stderr


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            {"EVALUATION_POINT": "fixed"},
            "--evaluation-point differs: sequential here, fixed in the partner's verify1",
        ),
        ({"PRG_KEYING": "raw"}, "--prg-keying differs: hashed here, raw in the partner's verify1"),
        (
            {"SHARED_SECRET": base64.b64encode(b"another secret!!").decode()},
            "the shared secret, the batch id or n_data differs between this server and the partner's verify1",
        ),
    ],
)
def test_partner_settings_mismatch_is_refused(keys, tmp_path, change, words):
    raw = _encode(run_inprocess, keys, 4, ROWS, tmp_path)
    out = tmp_path / "work"
    for s in PEER:
        env = dict(_server_env(keys, s, 4), **(change if s == "B" else {}))
        assert run_inprocess(_stage_args("verify1", raw[s], out, s, None), env).exit_code == 0
    result = run_inprocess(_stage_args("verify2", raw["A"], out, "A", "verify1"), _server_env(keys, "A", 4))
    assert result.exit_code == 2, result.output
    assert result.stderr == f"Error: server A, batch e2e: {words} records\n"
    assert not (out / "A" / "verify2").exists() or os.listdir(out / "A" / "verify2") == []
    assert keys["seed"] not in result.output


def test_publish_refuses_partners_with_other_settings_or_counts(keys, tmp_path):
    raw = _encode(run_inprocess, keys, 4, ROWS, tmp_path)
    run_all(run_inprocess, keys, 4, raw, tmp_path)
    aggregates = {s: json.loads((tmp_path / s / "aggregate" / "data.ndjson").read_text()) for s in PEER}

    def publish(peer: dict) -> tuple[int, str]:
        (tmp_path / "peer.ndjson").write_text(json.dumps(peer) + "\n")
        result = run_inprocess(
            [
                "publish",
                "--input-internal",
                str(tmp_path / "A" / "aggregate" / "data.ndjson"),
                "--input-external",
                str(tmp_path / "peer.ndjson"),
                "--output",
                str(tmp_path / "refused"),
            ],
            _publish_env(keys, "A"),
        )
        return result.exit_code, result.stderr

    stamp = aggregates["B"]["prio_settings"]
    code, err = publish(dict(aggregates["B"], prio_settings=dict(stamp, mac="0" * 32)))
    assert code == 2
    assert "the shared secret, the batch id or n_data differs between the two servers" in err
    code, err = publish(dict(aggregates["B"], prio_settings=dict(stamp, evaluation_point="fixed")))
    assert code == 2
    assert "--evaluation-point differs: sequential here, fixed at the partner" in err
    code, err = publish(dict(aggregates["B"], error=1))
    assert code == 2
    assert "this server aggregated 6 valid clients and the partner 5" in err
    assert not (tmp_path / "refused").exists() or os.listdir(tmp_path / "refused") == []
    # An original server's aggregate carries only payload, error and total: accepted.
    code, err = publish({k: aggregates["B"][k] for k in ("payload", "error", "total")})
    assert code == 0, err


def test_original_servers_unstamped_packets_are_accepted(keys, tmp_path):
    raw = _encode(run_inprocess, keys, 4, ROWS, tmp_path)
    out = tmp_path / "work"
    for stage, prev in (("verify1", None), ("verify2", "verify1"), ("aggregate", "verify2")):
        for s in PEER:
            result = run_inprocess(_stage_args(stage, raw[s], out, s, prev), _server_env(keys, s, 4))
            assert result.exit_code == 0, result.output
            assert result.stdout.endswith("0 errors out of 6 total\n")
            if s == "B" and stage != "aggregate":
                _strip_settings(out / "B" / stage)


NESTED = '{"id": "x", "payload": ' + "[" * 1000 + "]" * 1000 + "}"


def test_deeply_nested_lines_are_counted_not_fatal(keys, tmp_path):
    raw = _encode(run_inprocess, keys, 4, ROWS, tmp_path)
    for s in PEER:
        Path(raw[s]).write_text(Path(raw[s]).read_text() + NESTED + "\n")
    out = tmp_path / "work"
    for stage, prev in (("verify1", None), ("verify2", "verify1"), ("aggregate", "verify2")):
        for s in PEER:
            if prev:  # the side inputs get one too
                path = out / s / prev / "data.ndjson"
                path.write_text(path.read_text() + NESTED + "\n")
            result = run_subprocess(_stage_args(stage, raw[s], out, s, prev), _server_env(keys, s, 4))
            assert result.exit_code == 0, result.output
            assert result.stdout.endswith("1 errors out of 7 total\n")
            assert "Traceback" not in result.stderr
    aggregate = out / "A" / "aggregate" / "data.ndjson"
    aggregate.write_text(aggregate.read_text() + NESTED + "\n")
    result = run_subprocess(
        [
            "publish",
            "--input-internal",
            str(aggregate),
            "--input-external",
            str(out / "B" / "aggregate" / "data.ndjson"),
            "--output",
            str(tmp_path / "p"),
        ],
        _publish_env(keys, "A"),
    )
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr
    assert "refusing to publish: the internal aggregate is not a valid aggregate record" in result.stderr


def test_stale_temporary_files_are_cleared(keys, tmp_path):
    raw = _encode(run_inprocess, keys, 4, ROWS, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".data.ndjson.k2j4h5x9.tmp").write_text("half a file from a killed run")
    (out / "notes.txt").write_text("not ours")
    result = run_inprocess(["verify1", "--input", raw["A"], "--output", str(out)], _server_env(keys, "A", 4))
    assert result.exit_code == 0
    assert sorted(os.listdir(out)) == ["data.ndjson", "notes.txt"]


def test_killed_stage_leaves_only_temporaries_the_next_run_clears(keys, tmp_path):
    rows = [[i % 2 for i in range(k, k + 40)] for k in range(3000)]
    raw = _encode(run_inprocess, keys, 40, rows, tmp_path)
    out = tmp_path / "out"
    env = {**os.environ, **_server_env(keys, "A", 40)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "prio_processor", "verify1", "--input", raw["A"], "--output", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Kill it while its output is being written (the temporary file exists), not before or after.
    while proc.poll() is None and not (out.is_dir() and any(p.suffix == ".tmp" for p in out.iterdir())):
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "verify1 ended before it could be killed mid-write"
    (stale,) = os.listdir(out)
    assert stale.startswith(".data.ndjson.")
    result = run_inprocess(["verify1", "--input", raw["A"], "--output", str(out)], _server_env(keys, "A", 40))
    assert result.exit_code == 0
    assert os.listdir(out) == ["data.ndjson"]


@contextlib.contextmanager
def _tiny_disk(path: Path):
    """A 64 KiB tmpfs at `path` when mounting is allowed; else None (the caller limits file sizes)."""
    path.mkdir()
    mounted = (
        shutil.which("mount") is not None
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], check=True)


def test_full_disk_is_one_line_exit_2_and_nothing_half_written(keys, tmp_path):
    raw = _encode(run_inprocess, keys, 40, [[1, 0] * 20] * 300, tmp_path)
    out = tmp_path / "disk"
    with _tiny_disk(out) as mounted:

        def limit_file_size() -> None:
            if not mounted:  # the kernel refuses writes past 64 KiB, as a full disk does
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

        env = {**os.environ, **_server_env(keys, "A", 40)}
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "prio_processor",
                "verify1",
                "--input",
                raw["A"],
                "--output",
                str(out / "verify1"),
            ],
            env=env,
            capture_output=True,
            text=True,
            preexec_fn=limit_file_size,
        )
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.splitlines()
        expected = "No space left on device" if mounted else "File too large"
        assert line.startswith("Error: server A, batch e2e: cannot write ")
        assert line.endswith(expected)
        assert os.listdir(out / "verify1") == []
