"""bin/ scripts on S3 API servers with v4.1's variables: two organisations, each on its own
endpoint with its own keys, secret keys never on a command line; and A on the GCS API server
with B on an S3 API server (bin/integrate --storage mixed)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests_support import VENV_BIN, prio_output, script_env

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "bin"
DATE = "2026-11-27"
BATCHES = [{"batch_id": "test-0", "n_data": 10}, {"batch_id": "test-1", "n_data": 3}]

# Records each prio command line and the S3 configuration it was given, then runs prio.
_RECORDING_PRIO = """#!/usr/bin/env bash
printf '%s\\n' "$*" "config=${PRIO_S3_CONFIG:-}" >>"$PRIO_CALLS"
exec "$REAL_PRIO" "$@"
"""


def _side(side: str, server, user: str, secret_as: str) -> dict[str, str]:
    """v4.1's BUCKET_<SIDE>_* for `server` as `user`, the secret key as a value or as a file."""
    env = {f"BUCKET_{side}_ENDPOINT": server.endpoint, f"BUCKET_{side}_ACCESS_KEY": server.access_key(user)}
    if secret_as == "value":
        env[f"BUCKET_{side}_SECRET_KEY"] = server.secret_file(user).read_text().strip()
    else:
        env[f"BUCKET_{side}_SECRET_KEY_FILE"] = str(server.secret_file(user))
    return env


def _secrets(servers) -> list[str]:
    users = ("admin", "partner")
    return [server.secret_file(user).read_text().strip() for server in servers.values() for user in users]


@pytest.mark.slow
def test_two_servers_on_two_s3_endpoints_with_v41_variables(s3_servers, tmp_path):
    a, b = s3_servers["a"], s3_servers["b"]
    keys = {s: json.loads(prio_output("keygen")) for s in "AB"}
    seed = json.loads(prio_output("shared-seed"))["shared_seed"]
    config = tmp_path / "data-config.json"
    config.write_text(json.dumps(BATCHES))
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "prio").write_text(_RECORDING_PRIO)
    (shim / "prio").chmod(0o755)
    calls = tmp_path / "calls"
    common = {
        "APP_NAME": "test-app",
        "SUBMISSION_DATE": DATE,
        # The servers live for the session: a prefix of this test's own.
        "BUCKET_PREFIX": f"t{uuid.uuid4().hex[:8]}/v1",
        "DATA_CONFIG": str(config),
        "RETRY_LIMIT": "8",
        "RETRY_DELAY": "0.5",
        "PATH": f"{shim}{os.pathsep}{script_env()['PATH']}",
        "PRIO_CALLS": str(calls),
        "REAL_PRIO": str(VENV_BIN / "prio"),
    }
    # The admin drops A's shares into A's ingest bucket (not its private one) and B's into B's private.
    admin = script_env(
        **common,
        PUBLIC_KEY_HEX_INTERNAL=keys["A"]["public_key"],
        PUBLIC_KEY_HEX_EXTERNAL=keys["B"]["public_key"],
        BUCKET_INTERNAL_PRIVATE="a-private",
        BUCKET_INTERNAL_INGEST="a-ingest",
        BUCKET_EXTERNAL_PRIVATE="b-private",
        **_side("INTERNAL", a, "admin", "value"),
        **_side("EXTERNAL", b, "admin", "file"),
    )
    generated = subprocess.run([str(BIN / "generate"), "--n-rows", "8"], env=admin, capture_output=True,
                               text=True, timeout=600)
    assert generated.returncode == 0, generated.stderr
    assert "upload for A: synced 4 files to s3://a-ingest/" in generated.stderr
    servers = {}
    for s, own, other, secret_as in (("A", a, b, "value"), ("B", b, a, "file")):
        org, partner_org = s.lower(), "b" if s == "A" else "a"
        env = script_env(
            **common,
            SERVER_ID=s,
            SHARED_SECRET=seed,
            PRIVATE_KEY_HEX=keys[s]["private_key"],
            PUBLIC_KEY_HEX_INTERNAL=keys[s]["public_key"],
            PUBLIC_KEY_HEX_EXTERNAL=keys["B" if s == "A" else "A"]["public_key"],
            BUCKET_INTERNAL_PRIVATE=f"{org}-private",
            BUCKET_INTERNAL_SHARED=f"{org}-shared",
            BUCKET_EXTERNAL_SHARED=f"{partner_org}-shared",
            **_side("INTERNAL", own, "admin", secret_as),
            # The partner's key reaches the partner's shared bucket only.
            **_side("EXTERNAL", other, "partner", "file" if secret_as == "value" else "value"),
        )
        if s == "A":
            env["BUCKET_INTERNAL_INGEST"] = "a-ingest"
        servers[s] = subprocess.Popen([str(BIN / "process")], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, start_new_session=True)
    logs = {}
    for s, proc in servers.items():
        out, err = proc.communicate(timeout=900)
        logs[s] = out + err
        assert proc.returncode == 0, err[-3000:]
    assert "waiting for s3://a-ingest/" in logs["A"] and "waiting for s3://b-private/" in logs["B"]
    assert "waiting for s3://a-shared/" in logs["A"] and "waiting for s3://b-shared/" in logs["B"]
    # Published totals, read back with each organisation's admin key.
    read_env = {"PRIO_S3_CONFIG": json.dumps({"a-private": a.entry("admin"), "b-private": b.entry("admin")})}
    prefix = common["BUCKET_PREFIX"]
    published = {
        s: f"s3://{s.lower()}-private/{prefix}/{keys['B' if s == 'A' else 'A']['public_key'].upper()}"
        f"/test-app/{DATE}/processed/publish"
        for s in "AB"
    }
    check = subprocess.run(
        [str(VENV_BIN / "prio"), "integration", "check", "--data-config", str(config), "--n-rows", "8",
         "--n-drop-batch", "1", "--published-A", published["A"], "--published-B", published["B"]],
        env=script_env(**read_env), capture_output=True, text=True, timeout=300,
    )
    assert check.returncode == 0, check.stderr
    assert "both servers published the expected counts" in check.stdout
    # Secret keys reached no command line, no configuration and no log; the key given as a value is
    # named in the configuration, the one given as a file by its file.
    recorded = calls.read_text()
    assert "process --name process A " in recorded and " --raw s3://a-ingest/" in recorded
    for secret in _secrets(s3_servers):
        assert secret not in recorded
        assert all(secret not in log for log in logs.values())
    assert '"secret_key_env": "BUCKET_INTERNAL_SECRET_KEY"' in recorded
    assert f'"secret_key_file": "{b.secret_file("partner")}"' in recorded


def test_one_bucket_name_on_two_endpoints_and_incomplete_keys_are_refused(s3_servers, tmp_path):
    a, b = s3_servers["a"], s3_servers["b"]
    config = tmp_path / "data-config.json"
    config.write_text(json.dumps(BATCHES))
    key = json.loads(prio_output("keygen"))
    env = script_env(
        APP_NAME="test-app",
        DATA_CONFIG=str(config),
        SERVER_ID="A",
        SHARED_SECRET=json.loads(prio_output("shared-seed"))["shared_seed"],
        PRIVATE_KEY_HEX=key["private_key"],
        PUBLIC_KEY_HEX_INTERNAL=key["public_key"],
        PUBLIC_KEY_HEX_EXTERNAL=json.loads(prio_output("keygen"))["public_key"],
        BUCKET_INTERNAL_PRIVATE="a-private",
        BUCKET_INTERNAL_SHARED="common-shared",
        BUCKET_EXTERNAL_SHARED="common-shared",
        **_side("INTERNAL", a, "admin", "value"),
        BUCKET_EXTERNAL_ENDPOINT=b.endpoint,
        BUCKET_EXTERNAL_ACCESS_KEY=b.access_key("partner"),
    )
    result = subprocess.run([str(BIN / "process")], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert ("missing required variable(s): BUCKET_EXTERNAL_SECRET_KEY (or BUCKET_EXTERNAL_SECRET_KEY_FILE)"
            in result.stderr)
    assert ("bucket common-shared is named by BUCKET_INTERNAL_SHARED and BUCKET_EXTERNAL_SHARED with other "
            "endpoints or keys: one bucket name, one endpoint") in result.stderr
    assert "Traceback" not in result.stderr and "waiting" not in result.stderr
    assert all(secret not in result.stderr + result.stdout for secret in _secrets(s3_servers))


def test_cleanup_on_an_s3_endpoint_and_a_wrong_key(s3_servers, tmp_path):
    a = s3_servers["a"]
    prefix = f"t{uuid.uuid4().hex[:8]}"
    read_env = script_env(PRIO_S3_CONFIG=json.dumps({"a-private": a.entry("admin"),
                                                      "a-shared": a.entry("admin")}))
    for bucket in ("a-private", "a-shared"):
        subprocess.run([str(VENV_BIN / "prio"), "bucket", "touch", f"s3://{bucket}/{prefix}"], env=read_env,
                       check=True)
    wrong = script_env(BUCKET_INTERNAL_PRIVATE="a-private", BUCKET_INTERNAL_SHARED="a-shared",
                       BUCKET_INTERNAL_ENDPOINT=a.endpoint, BUCKET_INTERNAL_ACCESS_KEY=a.access_key("admin"),
                       BUCKET_INTERNAL_SECRET_KEY="x" * 40)
    refused = subprocess.run([str(BIN / "cleanup")], env=wrong, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr == ("Error: cannot list s3://a-private: access denied (SignatureDoesNotMatch): "
                              "check the bucket's endpoint and keys\n")
    assert "x" * 40 not in refused.stdout + refused.stderr
    right = {**wrong, **_side("INTERNAL", a, "admin", "value")}
    done = subprocess.run([str(BIN / "cleanup")], env=right, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "deleted" in done.stdout
    listing = subprocess.run([str(VENV_BIN / "prio"), "bucket", "ls", f"s3://a-private/{prefix}"],
                             env=read_env, capture_output=True, text=True, check=True)
    assert listing.stdout == ""
    assert all(secret not in done.stdout + done.stderr for secret in _secrets(s3_servers))


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["mixed", "s3"])
def test_integrate_across_clouds(storage):
    """--storage mixed: server A's buckets on the GCS API server, B's on an S3 API server (the
    original's "gcloud + self-host"); --storage s3: each on its own S3 API server."""
    result = subprocess.run(
        [str(BIN / "integrate"), "--storage", storage, "--n-rows", "10", "--server-b-delay", "1"],
        env=script_env(RETRY_DELAY="0.5"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "both servers published the expected counts" in result.stdout
    assert "batch test-0: [9, 0, 0, 9, 0, 9, 9, 0, 0, 9]" in result.stdout
    if storage == "mixed":
        assert "GCS API server on http://127.0.0.1:" in result.stderr
        assert "process A: waiting for gs://a-shared/" in result.stderr
    else:
        assert "S3 API server of A on http://127.0.0.1:" in result.stderr
        assert "process A: waiting for s3://a-shared/" in result.stderr
    assert "S3 API server of B on http://127.0.0.1:" in result.stderr
    assert "process B: waiting for s3://b-shared/" in result.stderr
    assert "using the cache" not in result.stderr  # verify1's cache in the private buckets served
