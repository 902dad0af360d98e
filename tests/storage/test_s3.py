"""s3:// locations against two S3 API servers on 127.0.0.1 (moto, authentication on), through boto3:
records, markers, the bucket commands, two organisations' keys in one process, refused keys, a
killed upload, conditional writes and an endpoint that goes away."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli_chain import PEER, server_env

from prio_processor.storage import RecordWriter, StorageError, location, read_records
from prio_processor.storage import s3 as s3_storage

from runner import run_inprocess, run_subprocess
from tests_support import S3Server
from vectors import VECTORS, Case, read_payloads


def _pending_uploads(bucket: str, key: str) -> list[str]:
    uploads = s3_storage.client(bucket).list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", [])
    return [u["UploadId"] for u in uploads if u["Key"] == key]


def test_records_markers_and_listing(s3):
    prefix = s3(a_private=("a", "admin"))
    root = location(f"s3://a-private/{prefix}")
    # Lines of about 65 KB, as shares are, and one beyond the reader's limit.
    records = [{"id": str(k), "payload": "x" * 65_000} for k in range(20)]
    records.append({"id": "big", "payload": "y" * 200_000})
    with RecordWriter(root.join("out", "part-00000.json")) as writer:
        for record in records:
            writer.write(record)
    root.join("out", "_SUCCESS").write_bytes(b"")
    with RecordWriter(root.join("tables", "part-0.parquet")) as writer:
        for record in records[:3]:
            writer.write(record)
    assert list(read_records(root.join("out", "part-00000.json"))) == records
    bounded = list(read_records(root.join("out", "part-00000.json"), max_line=100_000))
    assert bounded[:20] == records[:20]
    assert getattr(bounded[20], "problem", None) == "is longer than 100000 bytes"
    assert list(read_records(root.join("tables", "part-0.parquet"))) == records[:3]  # Parquet seeks
    out = root.join("out")
    assert out.is_dir() and out.has_data() and not out.is_file()
    assert [c.name for c in out.children()] == ["_SUCCESS", "part-00000.json"]
    assert [c.name for c in out.parts()] == ["part-00000.json"]
    names = [name for name, _ in root.walk()]
    assert names == ["out/_SUCCESS", "out/part-00000.json", "tables/part-0.parquet"]
    before = out.join("_SUCCESS").version()
    time.sleep(1.1)  # S3's modification times are whole seconds
    out.join("_SUCCESS").write_bytes(b"again")
    assert out.join("_SUCCESS").version() != before
    root.delete()
    assert root.walk() == [] and not root.is_dir()
    with pytest.raises(StorageError, match="no such object"):
        root.join("out", "part-00000.json").read_bytes()


def test_bucket_commands(s3, tmp_path):
    prefix = s3(a_shared=("a", "admin"))
    source = tmp_path / "source"
    (source / "batch_id=x").mkdir(parents=True)
    (source / "batch_id=x" / "part-0.json").write_text('{"id": "1"}\n')
    (source / "batch_id=x" / ".part-1.json.abcdefgh.tmp").write_text("unfinished")
    (source / "top.json").write_text("{}\n")
    target = f"s3://a-shared/{prefix}/verify1"
    location(f"{target}/stale.json").write_bytes(b"old")
    assert run_inprocess(["bucket", "create", "s3://a-shared"]).exit_code == 0  # exists already: fine
    assert run_inprocess(["bucket", "exists", target + "/_SUCCESS"]).exit_code == 1
    synced = run_inprocess(["bucket", "sync", "--stamp", "b=3", str(source), target])
    assert synced.exit_code == 0 and synced.stdout == f"synced 2 files to {target}\n"
    listing = run_inprocess(["bucket", "ls", target]).stdout.split()
    assert listing == ["_SUCCESS", "batch_id=x/part-0.json", "top.json"]
    assert location(f"{target}/_SUCCESS").read_bytes() == b"b=3"
    assert run_inprocess(["bucket", "exists", target]).exit_code == 0
    waited = run_inprocess(["bucket", "wait", target + "/_SUCCESS", "--stamp", "b=3", "--retry-delay", "0"])
    assert waited.exit_code == 0
    missing = run_inprocess(["bucket", "wait", f"{target}/nope", "--retry-limit", "1", "--retry-delay", "0"])
    assert missing.exit_code == 1 and "maximum number of retries" in missing.stderr
    assert run_inprocess(["bucket", "rm", f"s3://a-shared/{prefix}"]).stdout.startswith("deleted 3 files")
    assert run_inprocess(["bucket", "rm", f"s3://a-shared/{prefix}"]).stdout.startswith("nothing to delete")


def test_stage_chain_with_two_organisations_keys_in_one_process(s3):
    """Each server's packets in its own organisation's bucket, on its own endpoint with its own key;
    every joining stage reads both at once (the internal and the external side)."""
    case = Case(VECTORS / "prg-hashed" / "d_bad_input")
    prefix = s3(a_private=("a", "admin"), b_private=("b", "admin"))
    root = {"A": f"s3://a-private/{prefix}", "B": f"s3://b-private/{prefix}"}
    for s in PEER:
        location(f"{root[s]}/raw/part-00000.json").write_bytes(case.raw_path(s).read_bytes())
    for stage, prev in (("verify1", None), ("verify2", "verify1"), ("aggregate", "verify2")):
        for s in PEER:
            args = [stage, "--input", f"{root[s]}/raw", "--output", f"{root[s]}/{stage}",
                    "--rejects", f"{root[s]}/rejects"]
            if prev:
                args += ["--input-internal", f"{root[s]}/{prev}",
                         "--input-external", f"{root[PEER[s]]}/{prev}"]
            env = server_env(case, s, "sequential")
            result = run_subprocess(args, env) if stage == "verify1" else run_inprocess(args, env)
            assert result.exit_code == 0, result.output
    for s in PEER:
        for stage in ("verify1", "verify2"):
            lines = location(f"{root[s]}/{stage}/part-00000.json").read_bytes().decode().splitlines()
            produced = {r["id"]: r["payload"] for r in map(json.loads, lines)}
            assert produced == read_payloads(case.intermediate(s, stage))
        aggregate = json.loads(location(f"{root[s]}/aggregate/aggregate.ndjson").read_bytes())
        original = json.loads(case.intermediate(s, "aggregate").read_text())
        assert (aggregate["payload"], aggregate["error"], aggregate["total"]) == (
            original["payload"], original["error"], original["total"])


def test_each_key_reaches_its_own_buckets_only_and_a_wrong_key_is_refused(
    s3, s3_servers, monkeypatch, tmp_path
):
    a, b = s3_servers["a"], s3_servers["b"]
    prefix = s3(a_private=("a", "admin"))
    secret = location(f"s3://a-private/{prefix}/secret.json")
    secret.write_bytes(b'{"id": "1"}\n')

    def refused(entry: dict[str, str]) -> str:
        monkeypatch.setenv("PRIO_S3_CONFIG", json.dumps({"a-private": entry}))
        s3_storage.reset()
        result = run_inprocess(["bucket", "ls", f"s3://a-private/{prefix}"])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
        assert "Traceback" not in result.output
        for key_holder in (a, b):
            for user in ("admin", "partner"):
                assert key_holder.secret_file(user).read_text().strip() not in result.output
        with pytest.raises(StorageError, match="access denied"):
            secret.read_bytes()
        return result.stderr

    # B's key for A's shared bucket reaches that bucket, not A's private one.
    assert "access denied (AccessDenied)" in refused(a.entry("partner"))
    # B's own key means nothing to A's server.
    assert "InvalidAccessKeyId" in refused({**a.entry("admin"), "access_key": b.access_key("admin")})
    # A's access key with a wrong secret: the signature is checked, not ignored.
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("x" * 40)
    assert "SignatureDoesNotMatch" in refused({**a.entry("admin"), "secret_key_file": str(wrong)})
    # And A's admin key for B's private bucket, on B's endpoint.
    monkeypatch.setenv("PRIO_S3_CONFIG", json.dumps(
        {"b-private": {**b.entry("admin"), "access_key": a.access_key("admin"),
                       "secret_key_file": str(a.secret_file("admin"))}}))
    s3_storage.reset()
    with pytest.raises(StorageError, match="access denied"):
        location("s3://b-private/x").is_dir()


def test_the_aws_chain_and_aws_endpoint_url(s3_servers, monkeypatch):
    """Without PRIO_S3_CONFIG: the standard AWS variables, AWS_ENDPOINT_URL for the endpoint."""
    a = s3_servers["a"]
    monkeypatch.delenv("PRIO_S3_CONFIG", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", a.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", a.access_key("partner"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", a.secret_file("partner").read_text().strip())
    s3_storage.reset()
    try:
        target = location("s3://a-shared/chain/_SUCCESS")
        target.write_bytes(b"ok")
        assert location("s3://a-shared/chain").walk()[0][0] == "_SUCCESS"
        with pytest.raises(StorageError, match="access denied"):
            location("s3://a-private/chain/_SUCCESS").write_bytes(b"no")
        target.delete()
    finally:
        s3_storage.reset()


_KILLED_WRITER = """
import os, signal, sys
from prio_processor.storage import location, s3
target = location(sys.argv[1])
# Killed for real once the first part of its multipart upload is stored.
s3.client(target.bucket_name).meta.events.register(
    "after-call.s3.UploadPart", lambda **_: os.kill(os.getpid(), signal.SIGKILL))
with target.open_write() as f:
    f.write(os.urandom(33 * 1024 * 1024))
"""


@pytest.mark.slow
def test_a_killed_upload_leaves_nothing_a_reader_takes_and_the_next_write_aborts_it(s3):
    prefix = s3(a_private=("a", "admin"))
    folder = s3_storage.s3_location(f"s3://a-private/{prefix}/verify1")
    target = folder.join("part-00000.json")
    killed = subprocess.run([sys.executable, "-c", _KILLED_WRITER, target.uri], capture_output=True,
                            timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert not target.is_file() and not folder.is_dir() and folder.walk() == []
    stale = _pending_uploads("a-private", target.key)
    assert len(stale) == 1  # stored parts, invisible to readers
    target.write_bytes(b'{"id": "1"}\n')  # the re-run's write
    assert _pending_uploads("a-private", target.key) == []
    assert target.read_bytes() == b'{"id": "1"}\n'
    # A stage starting on its output folder aborts what killed writers left in it.
    other = folder.join("part-00001.json")
    assert subprocess.run([sys.executable, "-c", _KILLED_WRITER, other.uri], timeout=300).returncode == -9
    assert folder.clear_stale_temporaries() == 1
    assert _pending_uploads("a-private", other.key) == []
    # And so does deleting a folder (bin/process clears its outputs first).
    assert subprocess.run([sys.executable, "-c", _KILLED_WRITER, other.uri], timeout=300).returncode == -9
    assert len(_pending_uploads("a-private", other.key)) == 1
    assert run_inprocess(["bucket", "rm", folder.uri]).exit_code == 0
    assert _pending_uploads("a-private", other.key) == [] and folder.walk() == []


def test_configuration_errors_are_one_line():
    twice = '{"x-bucket": {"endpoint": "http://127.0.0.1:1"}, "x-bucket": {"endpoint": "http://127.0.0.1:2"}}'
    with pytest.raises(StorageError, match="bucket x-bucket is named twice"):
        s3_storage.load_config(twice)
    with pytest.raises(StorageError, match="an access key needs its secret key"):
        s3_storage.load_config('{"x-bucket": {"access_key": "AKIA"}}')
    with pytest.raises(StorageError, match="not a JSON object"):
        s3_storage.load_config("x-bucket=http://127.0.0.1")
    result = run_subprocess(["bucket", "ls", "s3://x-bucket/a"], {"PRIO_S3_CONFIG": twice})
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "named twice" in result.stderr


@pytest.mark.slow
def test_an_endpoint_that_goes_away_during_a_wait_is_one_clear_line(tmp_path):
    server = S3Server("c", tmp_path / "s3-c")
    try:
        server.wait_ready()
        env = {**os.environ, "PRIO_S3_CONFIG": json.dumps({"c-private": server.entry("admin")})}
        marker = "s3://c-private/run/_SUCCESS"
        wait = subprocess.Popen(
            [sys.executable, "-m", "prio_processor", "bucket", "wait", marker, "--retry-limit", "30",
             "--retry-delay", "1", "--retry-backoff-exponent", "1"],
            env=env, stderr=subprocess.PIPE, text=True,
        )
        assert wait.stderr is not None
        first = wait.stderr.readline()
        assert first.startswith(f"waiting 1s for {marker}"), first
    finally:
        server.stop()
    _, rest = wait.communicate(timeout=300)
    assert wait.returncode == 2
    lines = (first + rest).splitlines()
    assert lines[-1] == f"Error: cannot read {marker}: cannot reach the S3 endpoint (EndpointConnectionError)"
    assert "Traceback" not in rest


def test_prio_processor_stages_pings_between_s3_buckets(s3):
    """prio-processor takes s3:// paths as prio does: pings in one bucket, staged shares in another."""
    from click.testing import CliRunner

    from prio_processor.firefox.commands import entry_point as firefox

    prefix = s3(a_ingest=("a", "admin"), a_private=("a", "admin"))
    case = Case(VECTORS / "prg-hashed" / "c_n1")
    config = location(f"s3://a-private/{prefix}/config.json")
    config.write_bytes((Path(__file__).resolve().parents[2] / "config" / "content.json").read_bytes())
    sink, staged = f"s3://a-ingest/{prefix}/sink", f"s3://a-private/{prefix}/staged"
    keys = ["--public-key-hex-internal", case.keys("A")["public_key"],
            "--public-key-hex-external", case.keys("B")["public_key"]]
    made = CliRunner().invoke(firefox, ["generate-pings", "--config", config.uri, *keys, "--output", sink,
                                        "--date", "2026-11-27", "--n-pings", "4"])
    assert made.exit_code == 0, made.output
    result = CliRunner().invoke(firefox, ["staging", "--date", "2026-11-27", "--input", sink,
                                          "--output", staged, "--config", config.uri])
    assert result.exit_code == 0, result.output
    names = [name for name, _ in location(staged).walk()]
    assert "submission_date=2026-11-27/server_id=a/_SUCCESS" in names
    assert any(name.startswith("submission_date=2026-11-27/server_id=b/batch_id=") for name in names)
