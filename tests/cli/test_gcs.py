"""gs:// paths against a GCS API server on 127.0.0.1, through the real google-cloud-storage client."""

from __future__ import annotations

import json

from google.cloud import storage
from test_cli_chain import PEER, server_env

from runner import run_inprocess, run_subprocess
from vectors import VECTORS, Case, read_payloads


def _upload(bucket: str, name: str, data: bytes) -> str:
    storage.Client().bucket(bucket).blob(name).upload_from_string(data)
    return f"gs://{bucket}/{name}"


def _download(uri: str) -> bytes:
    bucket, _, name = uri[len("gs://") :].partition("/")
    return storage.Client().bucket(bucket).blob(name).download_as_bytes()


def _payloads(data: bytes) -> dict[str, str]:
    return {r["id"]: r["payload"] for r in map(json.loads, data.decode().splitlines())}


def test_vector_chain_through_buckets(gcs, tmp_path):
    case = Case(VECTORS / "prg-hashed" / "d_bad_input")
    bucket = gcs()
    root = f"gs://{bucket}"
    for s in PEER:
        # Spark-style folder: a part file and a completion marker.
        _upload(bucket, f"raw/{s}/part-00000.json", case.raw_path(s).read_bytes())
        _upload(bucket, f"raw/{s}/_SUCCESS", b"")
    for stage, prev in (("verify1", None), ("verify2", "verify1"), ("aggregate", "verify2")):
        for s in PEER:
            args = [
                stage,
                "--input",
                f"{root}/raw/{s}",
                "--output",
                f"{root}/{s}/{stage}",
                "--rejects",
                f"{root}/{s}/rejects",
            ]
            if prev:
                args += [
                    "--input-internal",
                    f"{root}/{s}/{prev}",
                    "--input-external",
                    f"{root}/{PEER[s]}/{prev}",
                ]
            env = server_env(case, s, "sequential")
            result = run_subprocess(args, env) if stage == "verify1" else run_inprocess(args, env)
            assert result.exit_code == 0, result.output
    for s in PEER:
        for stage in ("verify1", "verify2"):
            produced = _payloads(_download(f"{root}/{s}/{stage}/part-00000.json"))
            assert produced == read_payloads(case.intermediate(s, stage))
        rejects = _download(f"{root}/{s}/rejects/rejects-verify1-{s}.ndjson").decode().splitlines()
        assert len(rejects) == case.manifest["cli_counts"][s]["verify1"]["error"]
        aggregate = json.loads(_download(f"{root}/{s}/aggregate/aggregate.ndjson"))
        original = json.loads(case.intermediate(s, "aggregate").read_text())
        assert (aggregate["payload"], aggregate["error"], aggregate["total"]) == (
            original["payload"],
            original["error"],
            original["total"],
        )
    env = {
        k: v
        for k, v in server_env(case, "A", "sequential").items()
        if k in ("N_DATA", "BATCH_ID", "SERVER_ID", "PUBLIC_KEY_HEX_INTERNAL", "PUBLIC_KEY_HEX_EXTERNAL")
    }
    result = run_inprocess(
        [
            "publish",
            "--input-internal",
            f"{root}/A/aggregate",
            "--input-external",
            f"{root}/B/aggregate",
            "--output",
            f"{root}/A/publish",
        ],
        env,
    )
    assert result.exit_code == 0, result.output
    published = json.loads(_download(f"{root}/A/publish/publish.ndjson"))
    assert published["payload"] == case.manifest["expected_published_payload"]


def test_unreadable_bucket_is_a_configuration_error(gcs):
    case = Case(VECTORS / "prg-hashed" / "c_n1")
    result = run_inprocess(
        ["verify1", "--input", "gs://no-such-bucket-here/raw", "--output", "gs://no-such-bucket-here/out"],
        server_env(case, "A", "sequential"),
    )
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "gs://no-such-bucket-here/raw" in result.stderr
    assert case.keys("A")["private_key"] not in result.output


def test_bucket_commands(gcs, tmp_path):
    bucket = gcs()
    source = tmp_path / "source"
    (source / "batch_id=x").mkdir(parents=True)
    (source / "batch_id=x" / "part-0.json").write_text('{"id": "1"}\n')
    (source / "top.json").write_text("{}\n")
    target = f"gs://{bucket}/shared/verify1"
    _upload(bucket, "shared/verify1/stale.json", b"old")
    assert run_inprocess(["bucket", "exists", target + "/_SUCCESS"]).exit_code == 1
    assert run_inprocess(["bucket", "sync", str(source), target]).exit_code == 0
    listing = run_inprocess(["bucket", "ls", target]).stdout.split()
    assert listing == ["_SUCCESS", "batch_id=x/part-0.json", "top.json"]
    assert run_inprocess(["bucket", "exists", target + "/_SUCCESS"]).exit_code == 0
    assert run_inprocess(["bucket", "wait", target + "/_SUCCESS", "--retry-delay", "0"]).exit_code == 0
    missing = run_inprocess(
        ["bucket", "wait", target + "/nope", "--retry-limit", "2", "--retry-delay", "0.01"]
    )
    assert missing.exit_code == 1 and "maximum number of retries" in missing.stderr
    assert run_inprocess(["bucket", "rm", f"gs://{bucket}/shared"]).stdout.startswith("deleted 3 files")
    assert run_inprocess(["bucket", "rm", f"gs://{bucket}/shared"]).stdout.startswith("nothing to delete")


def test_uploads_leave_no_named_temporary_file(gcs, tmp_path, monkeypatch):
    """A killed upload must not leave prio-upload-* files behind: the spool file has no name."""
    import tempfile

    from prio_processor.storage import location

    bucket = gcs()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    target = location(f"gs://{bucket}/out/part-00000.json")
    with target.open_write() as f:
        f.write(b'{"id": "1"}\n')
        assert list(tmp_path.iterdir()) == []
    assert _download(target.uri) == b'{"id": "1"}\n'


def test_long_lines_read_back_from_a_bucket(gcs):
    from prio_processor.storage import location, read_records

    bucket = gcs()
    records = [{"id": str(k), "payload": "x" * (k * 50_000)} for k in range(5)]
    uri = _upload(bucket, "in/part-0.json", "".join(json.dumps(r) + "\n" for r in records).encode())
    assert list(read_records(location(uri))) == records
    bounded = list(read_records(location(uri), max_line=120_000))
    assert bounded[:3] == records[:3]
    assert [getattr(r, "problem", None) for r in bounded[3:]] == ["is longer than 120000 bytes"] * 2


def test_bucket_check_names_missing_buckets_and_the_prefix_that_has_the_data(gcs):
    """bin/process's up-front check, against gs:// buckets: one listing per folder, no waiting."""
    bucket, empty = gcs(), gcs()
    key = "AB" * 32
    _upload(bucket, f"test-data/v1/{key}/app/2026-11-27/raw/shares/batch_id=x/part-0.ndjson", b"{}\n")
    _upload(bucket, f"other/{key}/another-app/part-0.ndjson", b"{}\n")
    missing = run_inprocess(
        ["bucket", "check", f"gs://{bucket}", "gs://no-such-bucket-here", f"gs://{empty}"]
    )
    assert missing.exit_code == 2
    assert missing.stderr.splitlines() == [
        "bucket gs://no-such-bucket-here: cannot list gs://no-such-bucket-here: not found"
    ]
    found = run_inprocess(
        ["bucket", "check", f"gs://{bucket}", f"gs://{empty}", "--data", "test-data/v1", f"{key}/app"]
    )
    assert found.exit_code == 0, found.output
    mistyped = run_inprocess(["bucket", "check", f"gs://{bucket}", "--data", "data/v1", f"{key}/app"])
    assert mistyped.exit_code == 2
    assert mistyped.stderr.strip() == (
        f"nothing at all under gs://{bucket}/data/v1/{key}/app/; this partner key and app have data under "
        "another prefix: test-data/v1 (BUCKET_PREFIX?)"
    )
