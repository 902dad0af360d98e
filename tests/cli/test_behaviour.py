"""The command line as an operator meets it: fresh keys end to end, folders, Parquet,
rejects, re-runs, configuration errors and secrets."""

from __future__ import annotations

import base64
import json
import random
import re
from pathlib import Path

import pytest

from prio_processor.cli import progress

from runner import RUNNERS, run_inprocess, run_subprocess


def _keys(run) -> dict:
    out = {}
    for server in "AB":
        result = run(["keygen"])
        assert result.exit_code == 0
        out[server] = json.loads(result.stdout)
        assert len(out[server]["private_key"]) == 64 and out[server]["public_key"].isupper()
    seed = json.loads(run(["shared-seed"]).stdout)["shared_seed"]
    assert len(base64.b64decode(seed)) == 16
    out["seed"] = seed
    return out


def _server_env(keys: dict, server: str, n_data: int, batch_id: str = "e2e") -> dict[str, str]:
    other = "B" if server == "A" else "A"
    return {
        "N_DATA": str(n_data),
        "BATCH_ID": batch_id,
        "SERVER_ID": server,
        "PRIVATE_KEY_HEX": keys[server]["private_key"],
        "SHARED_SECRET": keys["seed"],
        "PUBLIC_KEY_HEX_INTERNAL": keys[server]["public_key"],
        "PUBLIC_KEY_HEX_EXTERNAL": keys[other]["public_key"],
    }


def run_all(
    run, keys, n_data, raw: dict[str, str], work: Path, extra_publish=(), schedule="sequential", cache=None
):
    """verify1 .. publish for both servers over raw inputs (files or folders); A's published record.
    With `cache`, a folder: verify1, verify2 and aggregate get CACHE=<cache>/<server>."""
    out = {s: work / s for s in "AB"}
    peer = {"A": "B", "B": "A"}

    def named(stage_dir: Path) -> str:
        """The stage's single output file, or its folder when it wrote several parts."""
        parts = [p for p in stage_dir.iterdir() if not p.name.startswith("_")]
        return str(parts[0]) if len(parts) == 1 else str(stage_dir)

    for stage, prev in (("verify1", None), ("verify2", "verify1"), ("aggregate", "verify2")):
        for s in "AB":
            args = [stage, "--input", raw[s], "--output", str(out[s] / stage)]
            if prev:
                args += [
                    "--input-internal",
                    named(out[s] / prev),
                    "--input-external",
                    named(out[peer[s]] / prev),
                ]
            if stage != "aggregate":
                args += ["--evaluation-point", schedule]
            env = _server_env(keys, s, n_data)
            if cache is not None:
                env["CACHE"] = str(cache / s)
            result = run(args, env)
            assert result.exit_code == 0, result.output
    records = {}
    for s in "AB":
        env = {
            k: v for k, v in _server_env(keys, s, n_data).items() if "PRIVATE" not in k and "SECRET" not in k
        }
        result = run(
            [
                "publish",
                "--input-internal",
                named(out[s] / "aggregate"),
                "--input-external",
                named(out[peer[s]] / "aggregate"),
                "--output",
                str(out[s] / "publish"),
                *extra_publish,
            ],
            env,
        )
        assert result.exit_code == 0, result.output
        (published,) = [p for p in (out[s] / "publish").iterdir() if not p.name.startswith("_")]
        records[s] = json.loads(published.read_text())
    assert records["A"]["payload"] == records["B"]["payload"]
    return records["A"]


def _encode(run, keys, n_data, rows, work: Path, name="data.ndjson", prec=None) -> dict[str, str]:
    client = work / "client"
    client.mkdir(parents=True, exist_ok=True)
    (client / name).write_text("".join(json.dumps({"payload": r}) + "\n" for r in rows))
    args = [
        "encode-shares",
        "--n-data",
        str(n_data),
        "--batch-id",
        "e2e",
        "--public-key-hex-internal",
        keys["A"]["public_key"],
        "--public-key-hex-external",
        keys["B"]["public_key"],
        "--input",
        str(client / name),
        "--output-A",
        str(work / "raw_a"),
        "--output-B",
        str(work / "raw_b"),
    ]
    if prec:
        args += ["--prec", str(prec)]
    result = run(args)
    assert result.exit_code == 0, result.output
    return {"A": str(work / "raw_a" / name), "B": str(work / "raw_b" / name)}


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_end_to_end_on_fresh_keys(runner, tmp_path):
    run = RUNNERS[runner]
    keys = _keys(run)
    rng = random.Random(7)
    rows = [[rng.randint(0, 1) for _ in range(30)] for _ in range(25)]
    raw = _encode(run, keys, 30, rows, tmp_path)
    record = run_all(run, keys, 30, raw, tmp_path)
    assert record["payload"] == [sum(c) for c in zip(*rows)]
    assert (record["error"], record["total"]) == (0, 25)


def test_cache_gives_the_same_outputs_and_says_when_it_is_not_used(tmp_path):
    keys = _keys(run_inprocess)
    rng = random.Random(3)
    rows = [[rng.randint(0, 1) for _ in range(30)] for _ in range(20)]
    raw = _encode(run_inprocess, keys, 30, rows, tmp_path)
    plain = run_all(run_inprocess, keys, 30, raw, tmp_path / "plain", schedule="fixed")
    cached = run_all(
        run_inprocess, keys, 30, raw, tmp_path / "cached", schedule="fixed", cache=tmp_path / "c"
    )
    assert cached["payload"] == plain["payload"] == [sum(c) for c in zip(*rows)]
    for s in "AB":
        for stage in ("verify1", "verify2", "aggregate"):
            written = {p.name: p.read_bytes() for p in (tmp_path / "cached" / s / stage).iterdir()}
            assert written == {p.name: p.read_bytes() for p in (tmp_path / "plain" / s / stage).iterdir()}
    assert not [p for p in (tmp_path / "cached").rglob("*") if "cache" in p.name]  # outputs hold no cache

    Path(raw["A"]).write_bytes(Path(raw["A"]).read_bytes())  # rewritten: another file for the cache
    verify1 = tmp_path / "cached"
    result = run_inprocess(
        ["verify2", "--input", raw["A"], "--output", str(tmp_path / "again"), "--evaluation-point", "fixed",
         "--input-internal", str(next((verify1 / "A" / "verify1").iterdir())),
         "--input-external", str(next((verify1 / "B" / "verify1").iterdir())),
         "--cache", str(tmp_path / "c" / "A")],
        _server_env(keys, "A", 30),
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["Running verify2", "0 errors out of 20 total"]
    assert f"server A, batch e2e: verify2: not using the cache in {tmp_path / 'c' / 'A'}: --input is not" in (
        result.stderr
    )
    again = next((tmp_path / "again").iterdir()).read_bytes()
    assert again == next((tmp_path / "plain" / "A" / "verify2").iterdir()).read_bytes()


def test_unsigned_integers(tmp_path):
    keys = _keys(run_inprocess)
    rows = [[3, 250, 17], [255, 0, 1], [9, 9, 9]]
    raw = _encode(run_inprocess, keys, 24, rows, tmp_path, prec=8)
    record = run_all(run_inprocess, keys, 24, raw, tmp_path, extra_publish=["--prec", "8"])
    assert record["payload"] == [sum(c) for c in zip(*rows)]


def test_folders_of_parts_and_parquet(tmp_path):
    """Spark-style folders: part files, _SUCCESS and hidden files ignored; Parquet read and written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = _keys(run_inprocess)
    rows = [[i % 2, (i // 2) % 2, 1] for i in range(12)]
    raw = _encode(run_inprocess, keys, 3, rows, tmp_path)
    folders = {}
    for s in "AB":
        lines = Path(raw[s]).read_text().splitlines()
        folder = tmp_path / f"parts_{s}"
        folder.mkdir()
        (folder / "part-00000.json").write_text("\n".join(lines[:5]) + "\n")
        records = [json.loads(line) for line in lines[5:]]
        pq.write_table(pa.Table.from_pylist(records), folder / "part-00001.parquet")
        (folder / "_SUCCESS").write_text("")
        (folder / ".part-00002.json.crc").write_text("junk")
        folders[s] = str(folder)
    record = run_all(run_inprocess, keys, 3, folders, tmp_path / "work")
    assert record["payload"] == [sum(c) for c in zip(*rows)]
    out = tmp_path / "work" / "A" / "verify1"
    # Nothing in an output folder but what the original wrote there.
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.json", "part-00001.parquet"]
    assert pq.read_table(out / "part-00001.parquet").column_names == [
        "id",
        "payload",
        "digest",
        "prio_settings",
    ]


def test_corrupted_input_lists_rejects_and_reruns_identically(tmp_path):
    keys = _keys(run_inprocess)
    raw = _encode(run_inprocess, keys, 4, [[1, 0, 1, 0]] * 6, tmp_path)
    lines = Path(raw["A"]).read_text().splitlines()
    good = [json.loads(line) for line in lines]
    truncated = dict(good[2], payload=base64.b64encode(base64.b64decode(good[2]["payload"])[:-9]).decode())
    bad_padding = dict(good[3], payload=good[3]["payload"].rstrip("=")[:-1])
    corrupted = [
        lines[0],
        "{not json",
        json.dumps(truncated),
        json.dumps(bad_padding),
        lines[1],
        lines[1],  # duplicate id
        json.dumps({"id": 5}),
    ]
    source = tmp_path / "corrupted.ndjson"
    source.write_text("\n".join(corrupted) + "\n")
    args = ["verify1", "--input", str(source), "--output", str(tmp_path / "out")]
    env = dict(_server_env(keys, "A", 4), REJECTS=str(tmp_path / "rejects"))
    first = run_inprocess(args, env)
    assert first.exit_code == 0, first.output
    assert first.stdout == "Running verify1\n5 errors out of 7 total\n"
    assert "bad_base64: 1, bad_json: 2, decrypt_failed: 1, duplicate_id: 1" in first.stderr
    assert all(line.startswith("server A, batch e2e: ") for line in first.stderr.splitlines())
    rejects = [
        json.loads(line)
        for line in (tmp_path / "rejects" / "rejects-verify1-A.ndjson").read_text().splitlines()
    ]
    assert [(r["id"], r["reason"]) for r in rejects] == [
        (None, "bad_json"),
        (good[2]["id"], "decrypt_failed"),
        (good[3]["id"], "bad_base64"),
        (good[1]["id"], "duplicate_id"),
        ("5", "bad_json"),  # an integer id is an id, listed as its digits; the payload is missing
    ]
    assert not any("payload" in r for r in rejects)
    output = (tmp_path / "out" / "corrupted.ndjson").read_bytes()
    assert [json.loads(line)["id"] for line in output.splitlines()] == [good[0]["id"], good[1]["id"]]
    second = run_inprocess(args, env)
    assert second.exit_code == 0 and (tmp_path / "out" / "corrupted.ndjson").read_bytes() == output
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


def test_publish_refuses_aggregates_that_do_not_belong_together(tmp_path):
    keys = _keys(run_inprocess)
    raw = _encode(run_inprocess, keys, 5, [[1, 1, 0, 0, 1]] * 4, tmp_path)
    run_all(run_inprocess, keys, 5, raw, tmp_path)
    agg = {s: tmp_path / s / "aggregate" / "data.ndjson" for s in "AB"}

    def publish(internal, external, n_data=5, batch_id="e2e", extra=()):
        env = {
            k: v
            for k, v in _server_env(keys, "A", n_data, batch_id).items()
            if "PRIVATE" not in k and "SECRET" not in k
        }
        return run_inprocess(
            [
                "publish",
                "--input-internal",
                str(internal),
                "--input-external",
                str(external),
                "--output",
                str(tmp_path / "refused"),
                *extra,
            ],
            env,
        )

    for result, words in [
        (publish(agg["A"], agg["A"]), "server A's, expected server B's"),
        (publish(agg["B"], agg["A"]), "server B's, expected server A's"),
        (publish(agg["A"], agg["B"], batch_id="other"), "for batch 'e2e'"),
        (publish(agg["A"], agg["B"], n_data=6), "n_data 5"),
        (publish(agg["A"], agg["B"], extra=["--min-batch-size", "5"]), "only 4 valid clients"),
    ]:
        assert result.exit_code == 2, result.output  # as every other refusal
        assert "refusing to publish" in result.stderr and words in result.stderr
    assert not (tmp_path / "refused" / "data.ndjson").exists()
    assert publish(agg["A"], agg["B"], extra=["--min-batch-size", "4"]).exit_code == 0


SECRET_KEY = "3F" * 32


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_configuration_errors_exit_2_without_secrets(runner, tmp_path):
    run = RUNNERS[runner]
    keys = _keys(run_inprocess)
    raw = _encode(run_inprocess, keys, 4, [[1, 0, 0, 1]], tmp_path)
    base = _server_env(keys, "A", 4)
    secrets = [keys["A"]["private_key"], keys["seed"], SECRET_KEY, "c2VjcmV0LXNlZWQ="]
    key_file = tmp_path / "key.hex"
    key_file.write_text(keys["A"]["private_key"] + "\n")
    cases = [
        ({"PRIVATE_KEY_HEX": SECRET_KEY[:-2] + "ZZ"}, [], "bad private key"),
        ({"SHARED_SECRET": " "}, [], "16 bytes"),
        ({"BATCH_ID": "\udcff"}, [], "--batch-id is not valid UTF-8"),
        ({"PUBLIC_KEY_HEX_EXTERNAL": "00" * 32}, [], "not a usable Curve25519 public key"),
        ({"PRIVATE_KEY_HEX": ""}, ["--private-key-file", "/dev/zero"], "larger than 4096 bytes"),
        ({"SHARED_SECRET": "c2VjcmV0LXNlZWQ="}, [], "16 bytes"),
        ({"SHARED_SECRET": "%%%"}, [], "not valid base64"),
        ({"N_DATA": "0"}, [], "between 1 and 262143"),
        ({"N_DATA": "262144"}, [], "between 1 and 262143"),
        ({"PUBLIC_KEY_HEX_EXTERNAL": "12"}, [], "bad --public-key-hex-external"),
        ({}, ["--private-key-file", str(key_file)], "exactly one of --private-key-hex or --private-key-file"),
        (
            {"PRIVATE_KEY_HEX": ""},
            ["--private-key-file", str(tmp_path / "missing")],
            "cannot read the private key file",
        ),
        ({}, ["--input", str(tmp_path / "nothing-here")], "does not exist"),
    ]
    for env_change, extra, words in cases:
        env = dict(base, **env_change)
        env = {k: v for k, v in env.items() if v != ""}
        args = ["verify1", "--input", raw["A"], "--output", str(tmp_path / "out"), *extra]
        result = run(args, env)
        assert result.exit_code == 2, (words, result.output)
        assert words in result.stderr, (words, result.stderr)
        assert "Traceback" not in result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        for secret in secrets:
            assert secret not in result.output
            assert secret.lower() not in result.output


def test_secrets_from_files(tmp_path):
    keys = _keys(run_inprocess)
    raw = _encode(run_inprocess, keys, 4, [[1, 0, 0, 1]] * 3, tmp_path)
    (tmp_path / "key").write_text(keys["A"]["private_key"] + "\n")
    (tmp_path / "seed").write_text(keys["seed"] + "\n")
    env = {
        k: v for k, v in _server_env(keys, "A", 4).items() if k not in ("PRIVATE_KEY_HEX", "SHARED_SECRET")
    }
    result = run_subprocess(
        [
            "verify1",
            "--input",
            raw["A"],
            "--output",
            str(tmp_path / "out"),
            "--private-key-file",
            str(tmp_path / "key"),
            "--shared-secret-file",
            str(tmp_path / "seed"),
        ],
        env,
    )
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "out" / "data.ndjson").read_text().splitlines()) == 3


def test_help_explains_the_new_options():
    result = run_inprocess(["verify1", "--help"])
    assert (
        "--prg-keying [hashed|raw]" in result.stdout
        and "--evaluation-point [sequential|fixed]" in result.stdout
    )
    assert "libprio 1.6" in result.stdout and "Spark" in result.stdout
    for option in (
        "--n-data",
        "--batch-id",
        "--server-id",
        "--private-key-hex",
        "--shared-secret",
        "--public-key-hex-internal",
        "--public-key-hex-external",
        "--input",
        "--output",
    ):
        assert option in result.stdout


def test_publish_merges_partial_aggregates(tmp_path):
    """Aggregates of several parts of one batch (a folder of partial totals) add up."""
    keys = _keys(run_inprocess)
    rows = [[1, 0, 1], [1, 1, 1], [0, 0, 1], [1, 0, 0]]
    raw = _encode(run_inprocess, keys, 3, rows, tmp_path)
    for s in "AB":  # split each server's shares into two part files, aggregated separately
        lines = Path(raw[s]).read_text().splitlines()
        for k, part in enumerate((lines[:2], lines[2:])):
            (tmp_path / f"{s}-part{k}.ndjson").write_text("\n".join(part) + "\n")
    whole = run_all(run_inprocess, keys, 3, raw, tmp_path / "whole")
    # Aggregate each half against the whole run's verify2 packets, into one folder per server.
    for s in "AB":
        other = "B" if s == "A" else "A"
        for k in range(2):
            result = run_inprocess(
                [
                    "aggregate",
                    "--input",
                    str(tmp_path / f"{s}-part{k}.ndjson"),
                    "--input-internal",
                    str(tmp_path / "whole" / s / "verify2" / "data.ndjson"),
                    "--input-external",
                    str(tmp_path / "whole" / other / "verify2" / "data.ndjson"),
                    "--output",
                    str(tmp_path / "partial" / s / f"tmp{k}"),
                ],
                _server_env(keys, s, 3),
            )
            assert result.exit_code == 0, result.output
            (tmp_path / "partial" / s / f"tmp{k}" / "data.ndjson").rename(
                tmp_path / "partial" / s / f"part-{k}.ndjson"
            )
    env = {k: v for k, v in _server_env(keys, "A", 3).items() if "PRIVATE" not in k and "SECRET" not in k}
    result = run_inprocess(
        [
            "publish",
            "--input-internal",
            str(tmp_path / "partial" / "A"),
            "--input-external",
            str(tmp_path / "partial" / "B"),
            "--output",
            str(tmp_path / "pub"),
        ],
        env,
    )
    assert result.exit_code == 0, result.output
    merged = json.loads((tmp_path / "pub" / "publish.ndjson").read_text())
    assert merged["payload"] == whole["payload"] == [3, 1, 3]
    assert (merged["error"], merged["total"]) == (0, 4)


def test_many_parts_one_open_output_at_a_time(tmp_path):
    """Spark writes hundreds of parts; outputs are written one part at a time."""
    import resource
    import subprocess
    import sys

    keys = _keys(run_inprocess)
    raw = _encode(run_inprocess, keys, 3, [[1, 0, 1]] * 60, tmp_path)
    parts = tmp_path / "parts"
    parts.mkdir()
    for k, line in enumerate(Path(raw["A"]).read_text().splitlines()):
        (parts / f"part-{k:05d}.json").write_text(line + "\n")
    env = dict(_server_env(keys, "A", 3), PATH="/usr/bin:/bin")

    def few_files():
        resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "prio_processor",
            "verify1",
            "--input",
            str(parts),
            "--output",
            str(tmp_path / "out"),
        ],
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=few_files,
    )
    assert proc.returncode == 0, proc.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.startswith("part-"))
    assert len(written) == 60
    assert (tmp_path / "out" / "part-00000.json").stat().st_mode & 0o044 == 0o044  # follows the umask


def test_publish_rejects_malformed_counts(tmp_path):
    keys = _keys(run_inprocess)
    raw = _encode(run_inprocess, keys, 3, [[1, 1, 0]] * 2, tmp_path)
    run_all(run_inprocess, keys, 3, raw, tmp_path)
    for bad in ({"error": "x"}, {"total": None}, {"error": 5, "total": 2}, {"n_data": 3.0}):
        record = json.loads((tmp_path / "A" / "aggregate" / "data.ndjson").read_text())
        record.update(bad)
        (tmp_path / "bad.ndjson").write_text(json.dumps(record) + "\n")
        env = {k: v for k, v in _server_env(keys, "A", 3).items() if "PRIVATE" not in k and "SECRET" not in k}
        result = run_inprocess(
            [
                "publish",
                "--input-internal",
                str(tmp_path / "bad.ndjson"),
                "--input-external",
                str(tmp_path / "B" / "aggregate" / "data.ndjson"),
                "--output",
                str(tmp_path / "p"),
            ],
            env,
        )
        assert result.exit_code == 2 and "refusing to publish" in result.stderr, (bad, result.output)


def test_bucket_sync_and_exists_on_folders(tmp_path):
    target = tmp_path / "target"
    (target / "batch_id=x").mkdir(parents=True)
    (target / "batch_id=x" / "part-0.json").write_text("{}\n")
    missing = run_inprocess(["bucket", "sync", str(tmp_path / "typo"), str(target)])
    assert missing.exit_code == 2 and (target / "batch_id=x" / "part-0.json").exists()
    assert run_inprocess(["bucket", "exists", str(target / "batch_id=x")]).exit_code == 0
    assert run_inprocess(["bucket", "rm", str(target)]).exit_code == 0
    assert run_inprocess(["bucket", "exists", str(target / "batch_id=x")]).exit_code == 1
    (target / "only-markers").mkdir()
    (target / "only-markers" / "_SUCCESS").write_text("")
    assert run_inprocess(["bucket", "exists", str(target / "only-markers")]).exit_code == 1


def test_long_stages_report_progress_at_a_steady_pace_in_logs(tmp_path):
    """Not only on a terminal: a line every PROGRESS_INTERVAL seconds, records done of the total, rate."""
    keys = _keys(run_subprocess)
    rows = [[i % 2, 1, 0] for i in range(3000)]
    raw = _encode(run_subprocess, keys, 3, rows, tmp_path)
    env = {**_server_env(keys, "A", 3), "PROGRESS_INTERVAL": "0.01", "WORKERS": "1"}
    args = ["verify1", "--input", raw["A"], "--output", str(tmp_path / "verify1")]
    result = run_subprocess(args, env)
    assert result.exit_code == 0, result.output
    line = r"server A, batch e2e: verify1: ([\d,]+) of 3,000 records, [\d,]+/s, \d+s"
    assert re.findall(line, result.stderr), result.stderr
    # stdout keeps the original's lines
    assert result.stdout.splitlines() == ["Running verify1", "0 errors out of 3000 total"]
    quiet = run_subprocess(args, {**env, "PROGRESS_INTERVAL": "0"})
    assert "records," not in quiet.stderr


def test_progress_line_words():
    counter = progress.RecordCounter("server A, batch b: verify2", lambda: 12_000)
    counter.add(5_000)
    assert counter.describe(2.0) == "server A, batch b: verify2: 5,000 of 12,000 records, 2,500/s, 2s"
    unknown = progress.RecordCounter("x", lambda: None)
    assert unknown.describe(0.0) == "x: 0 records, -, 0s"
