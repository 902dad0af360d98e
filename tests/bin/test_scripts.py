"""bin/ scripts for real: local folder buckets and a GCS API server, concurrency and faults."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from prio_processor.storage.locations import is_part_name

from tests_support import VENV_BIN, prio_output, script_env

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "bin"
SMALL_CONFIG = ROOT / "config" / "test-small.json"
SCRIPTS = ("cleanup", "generate", "process", "integrate")

# Two batches: test-0 gets data, test-1 (sorting last) is dropped by generate and skipped by the servers.
TWO_BATCHES = [{"batch_id": "test-0", "n_data": 10}, {"batch_id": "test-1", "n_data": 3}]
DATE = "2026-11-27"


class Deployment:
    """Two servers' buckets as local folders, fresh keys, and the environments of admin, A and B."""

    def __init__(self, root: Path, n_rows: int = 12, batches: list | None = None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.n_rows = n_rows
        self.data_config = root / "data-config.json"
        self.data_config.write_text(json.dumps(batches or TWO_BATCHES))
        keys = {s: json.loads(prio_output("keygen")) for s in "AB"}
        self.keys = keys
        self.seed = json.loads(prio_output("shared-seed"))["shared_seed"]
        common = {
            "APP_NAME": "test-app",
            "SUBMISSION_DATE": DATE,
            "BUCKET_PREFIX": "test-app/v1",
            "DATA_CONFIG": str(self.data_config),
            "RETRY_LIMIT": "8",
            "RETRY_DELAY": "0.25",
            "RETRY_BACKOFF_EXPONENT": "2",
        }
        bucket = {name: root / name for name in ("a-private", "a-shared", "b-private", "b-shared")}
        for folder in bucket.values():  # buckets exist before any server runs
            folder.mkdir(exist_ok=True)
        self.bucket = bucket
        self.admin = script_env(
            **common,
            PUBLIC_KEY_HEX_INTERNAL=keys["A"]["public_key"],
            PUBLIC_KEY_HEX_EXTERNAL=keys["B"]["public_key"],
            BUCKET_INTERNAL_PRIVATE=str(bucket["a-private"]),
            BUCKET_EXTERNAL_PRIVATE=str(bucket["b-private"]),
        )
        self.server = {}
        for s, own, other in (("A", "a", "b"), ("B", "b", "a")):
            self.server[s] = script_env(
                **common,
                SERVER_ID=s,
                SHARED_SECRET=self.seed,
                PRIVATE_KEY_HEX=keys[s]["private_key"],
                PUBLIC_KEY_HEX_INTERNAL=keys[s]["public_key"],
                PUBLIC_KEY_HEX_EXTERNAL=keys[self.peer(s)]["public_key"],
                BUCKET_INTERNAL_PRIVATE=str(bucket[f"{own}-private"]),
                BUCKET_INTERNAL_SHARED=str(bucket[f"{own}-shared"]),
                BUCKET_EXTERNAL_SHARED=str(bucket[f"{other}-shared"]),
            )

    @staticmethod
    def peer(server: str) -> str:
        return "B" if server == "A" else "A"

    def data_root(self, server: str, bucket: str = "private") -> Path:
        """BUCKET/BUCKET_PREFIX/<partner key>/APP_NAME/SUBMISSION_DATE of a server's bucket."""
        partner_key = self.keys[self.peer(server)]["public_key"]
        return self.bucket[f"{server.lower()}-{bucket}"] / "test-app/v1" / partner_key / "test-app" / DATE

    def generate(self) -> None:
        subprocess.run(
            [str(BIN / "generate"), "--n-rows", str(self.n_rows)],
            env=self.admin,
            check=True,
            capture_output=True,
            text=True,
        )

    def process(self, server: str, **popen) -> subprocess.Popen:
        return subprocess.Popen(
            [str(BIN / "process")],
            env=self.server[server],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            **popen,
        )

    def run_both(self) -> tuple[str, str]:
        a, b = self.process("A"), self.process("B")
        (code_a, log_a), (code_b, log_b) = _finish(a), _finish(b)
        assert (code_a, code_b) == (0, 0), log_a + log_b
        return log_a, log_b

    def published(self, server: str) -> Path:
        return self.data_root(server) / "processed/publish"

    def published_record(self, server: str, batch: str = "test-0") -> dict:
        return json.loads((self.published(server) / f"batch_id={batch}" / "publish.ndjson").read_text())

    def check(self) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                str(VENV_BIN / "prio"),
                "integration",
                "check",
                "--data-config",
                str(self.data_config),
                "--n-rows",
                str(self.n_rows),
                "--n-drop-batch",
                "1",
                "--published-A",
                str(self.published("A")),
                "--published-B",
                str(self.published("B")),
            ],
            capture_output=True,
            text=True,
        )


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, out + err


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def _data_files(root: Path) -> list[Path]:
    """Files a reader takes for data (part-*, *.json, *.ndjson: not markers, temporaries or caches)."""
    return [p for p in _files(root) if is_part_name(p.name)]


# ------------------------------------------------------------------ static checks and usage


def test_shellcheck_clean():
    scripts = [
        BIN / "common.sh",
        *(BIN / n for n in SCRIPTS),
        *sorted((ROOT / "tests/acceptance").glob("*.sh")),
    ]
    scripts += [ROOT / "scripts" / name
                for name in ("install-oracle", "base-image", "compose-integrate", "test-containers")]
    scripts += [ROOT / ".ci" / "run"]
    result = subprocess.run(
        [str(VENV_BIN / "shellcheck"), "-x", *map(str, scripts)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_needs_no_variables(script):
    result = subprocess.run(
        [str(BIN / script), "--help"], env={"PATH": os.environ["PATH"]}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: bin/" + script in result.stdout


def test_process_names_every_missing_variable_at_once():
    result = subprocess.run([str(BIN / "process")], env=script_env(), capture_output=True, text=True)
    assert result.returncode == 2
    for name in (
        "APP_NAME",
        "DATA_CONFIG",
        "SERVER_ID",
        "BUCKET_EXTERNAL_SHARED",
        "PRIVATE_KEY_HEX (or PRIVATE_KEY_FILE)",
        "SHARED_SECRET (or SHARED_SECRET_FILE)",
    ):
        assert name in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("script", "needed"),
    [
        ("process", "SHARED_SECRET"),
        ("generate", "DATA_CONFIG"),
        ("cleanup", "BUCKET_INTERNAL_SHARED"),
    ],
)
def test_missing_variable_names_itself(tmp_path, script, needed):
    deployment = Deployment(tmp_path)
    env = dict(deployment.server["A"] if script != "generate" else deployment.admin)
    env.pop(needed)
    result = subprocess.run([str(BIN / script)], env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert needed in result.stderr
    assert "missing required variable" in result.stderr
    for secret in (deployment.keys["A"]["private_key"], deployment.seed):
        assert secret not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--keep"], "unknown argument: --keep"),  # integrate's flag, not generate's
        (["--gcs-emulator"], "unknown argument: --gcs-emulator"),
        (["--n-rows"], "--n-rows needs a value"),
        (["extra"], "unknown argument: extra"),
    ],
)
def test_generate_accepts_only_its_own_flags(tmp_path, args, message):
    deployment = Deployment(tmp_path)
    result = subprocess.run(
        [str(BIN / "generate"), *args], env=deployment.admin, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert not _files(tmp_path / "a-private")


# ------------------------------------------------------------------ configuration checked up front

BAD_DATA_CONFIGS = {
    "surrogate id": '[{"batch_id": "\\ud800", "n_data": 3}]',
    "dot-dot id": '[{"batch_id": "..", "n_data": 3}]',
    "escaping id": '[{"batch_id": "../../tmp/x", "n_data": 3}]',
    "option-like id": '[{"batch_id": "-rf", "n_data": 3}]',
    "empty id": '[{"batch_id": "", "n_data": 3}]',
    "null id": '[{"batch_id": null, "n_data": 3}]',
    "float n_data": '[{"batch_id": "a", "n_data": 7.9}]',
    "bool n_data": '[{"batch_id": "a", "n_data": true}]',
    "string n_data": '[{"batch_id": "a", "n_data": "7"}]',
    "zero n_data": '[{"batch_id": "a", "n_data": 0}]',
    "negative n_data": '[{"batch_id": "a", "n_data": -5}]',
    "huge n_data": '[{"batch_id": "a", "n_data": 1000000000}]',
    "not a list": '{"batch_id": "a", "n_data": 3}',
    "twice": '[{"batch_id": "a", "n_data": 3}, {"batch_id": "a", "n_data": 4}]',
    "second entry": '[{"batch_id": "a", "n_data": 3}, {"batch_id": "b"}]',
}


@pytest.mark.parametrize("name", sorted(BAD_DATA_CONFIGS))
def test_bad_data_config_fails_at_once_in_one_line(tmp_path, name):
    deployment = Deployment(tmp_path)
    deployment.data_config.write_text(BAD_DATA_CONFIGS[name])
    # A long retry window (no data was generated): the run must fail before it would wait.
    deployment.server["A"].update(RETRY_LIMIT="30", RETRY_DELAY="10")
    code, log = _finish(deployment.process("A"), timeout=60)
    assert code == 2, log
    assert len(log.strip().splitlines()) == 1, log
    # As every other line of the run: time, script and server first.
    assert re.match(r"\[\d\d:\d\d:\d\d\] process A: DATA_CONFIG: .*data-config\.json", log), log
    if name == "second entry":
        assert "data-config.json entry 2: expected an object with exactly batch_id and n_data" in log
    assert "Traceback" not in log
    generated = subprocess.run([str(BIN / "generate")], env=deployment.admin, capture_output=True, text=True)
    assert generated.returncode == 2
    assert "Traceback" not in generated.stderr


@pytest.mark.parametrize("batch_id", ["..", "../../escaped"])
def test_batch_ids_never_leave_the_buckets(tmp_path, batch_id):
    deployment = Deployment(tmp_path / "deployment")
    deployment.data_config.write_text(json.dumps([{"batch_id": batch_id, "n_data": 3}]))
    generated = subprocess.run(
        [str(BIN / "generate"), "--n-drop-batch", "0"], env=deployment.admin, capture_output=True, text=True
    )
    assert generated.returncode == 2
    assert "is not allowed" in generated.stderr
    direct = subprocess.run(
        [
            str(VENV_BIN / "prio"),
            "integration",
            "generate",
            "--data-config",
            str(deployment.data_config),
            "--public-key-hex-internal",
            deployment.keys["A"]["public_key"],
            "--public-key-hex-external",
            deployment.keys["B"]["public_key"],
            "--output-A",
            str(tmp_path / "deployment/out/a"),
            "--output-B",
            str(tmp_path / "deployment/out/b"),
        ],
        capture_output=True,
        text=True,
    )
    assert direct.returncode == 2
    assert "is not allowed" in direct.stderr
    code, log = _finish(deployment.process("A"), timeout=60)
    assert code == 2
    assert "is not allowed" in log
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deployment"]
    assert not _files(tmp_path / "deployment/a-private")
    assert not (tmp_path / "deployment/out").exists()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SERVER_ID", "C", "SERVER_ID must be A or B"),
        ("PRIVATE_KEY_HEX", "not-a-key", "PRIVATE_KEY_HEX must be 64 hex digits"),
        ("PUBLIC_KEY_HEX_EXTERNAL", "12AB", "PUBLIC_KEY_HEX_EXTERNAL must be 64 hex digits"),
        ("SHARED_SECRET", "c2hvcnQ=", "SHARED_SECRET must be 16 bytes in base64"),
        ("ENGINE", "spark2", "ENGINE must be one of: cli"),
        ("RETRY_DELAY", "soon", "RETRY_DELAY must be a number"),
        ("WORKERS", "0", "WORKERS must be a whole number of processes, 1 or more"),
        ("SUBMISSION_DATE", "../..", "SUBMISSION_DATE must be a date"),
    ],
)
def test_bad_environment_fails_before_waiting(tmp_path, variable, value, message):
    deployment = Deployment(tmp_path)
    env = deployment.server["A"]
    # A long retry window (no data was generated): the run must fail before it would wait.
    env.update({"RETRY_LIMIT": "30", "RETRY_DELAY": "10", variable: value})
    code, log = _finish(deployment.process("A"), timeout=60)
    assert code == 2
    assert message in log
    assert "waiting" not in log
    assert deployment.keys["A"]["private_key"] not in log
    assert deployment.seed not in log


def test_problems_are_reported_together(tmp_path):
    deployment = Deployment(tmp_path)
    env = deployment.server["A"]
    env.update(SERVER_ID="C", ENGINE="spark2")
    env.pop("APP_NAME")
    code, log = _finish(deployment.process("A"), timeout=60)
    assert code == 2
    assert "APP_NAME" in log
    assert "SERVER_ID must be A or B" in log
    assert "ENGINE must be" in log


# ------------------------------------------------------------------ bucket operations


def test_sync_skips_unfinished_and_hidden_files(tmp_path):
    source, target = tmp_path / "source", tmp_path / "target"
    (source / "batch_id=x").mkdir(parents=True)
    (source / "batch_id=x/part-0.ndjson").write_text('{"id": "1"}\n')
    leftover = source / "batch_id=x/.part-1.ndjson.k3j2.tmp"  # what a writer killed by kill -9 leaves
    leftover.write_text('{"id": "2"')
    leftover.chmod(0o600)
    (source / "batch_id=x/_rejects.verify1.ndjson").write_text("{}\n")
    (source / ".hidden").mkdir()
    (source / ".hidden/part-2.ndjson").write_text("{}\n")
    (target / "batch_id=x").mkdir(parents=True)
    (target / "batch_id=x/.old.tmp").write_text("stale")
    result = subprocess.run(
        [str(VENV_BIN / "prio"), "bucket", "sync", str(source), str(target)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "synced 1 files" in result.stdout
    assert sorted(str(p.relative_to(target)) for p in _files(target)) == [
        "_SUCCESS",
        "batch_id=x/part-0.ndjson",
    ]


def test_bucket_exists_and_rm_take_many_paths(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "part-0.ndjson").write_text("{}\n")
    (tmp_path / "markers-only").mkdir()
    (tmp_path / "markers-only" / "_SUCCESS").write_text("")
    prio = str(VENV_BIN / "prio")
    assert (
        subprocess.run([prio, "bucket", "exists", str(tmp_path / "a"), str(tmp_path / "b")]).returncode == 0
    )
    assert (
        subprocess.run(
            [prio, "bucket", "exists", str(tmp_path / "a"), str(tmp_path / "markers-only")]
        ).returncode
        == 1
    )
    removed = subprocess.run(
        [prio, "bucket", "rm", str(tmp_path / "a"), str(tmp_path / "b")], capture_output=True, text=True
    )
    assert removed.returncode == 0
    assert removed.stdout.count("deleted 1 files") == 2
    assert not _files(tmp_path / "a")
    assert not _files(tmp_path / "b")


def test_batches_answers_readiness_for_every_batch_in_one_call(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps([{"batch_id": "x", "n_data": 3}, {"batch_id": "y", "n_data": 4}]))
    for folder in ("one", "two"):
        (tmp_path / folder / "batch_id=x").mkdir(parents=True)
        (tmp_path / folder / "batch_id=x/part-0.ndjson").write_text("{}\n")
    (tmp_path / "one/batch_id=y").mkdir()
    (tmp_path / "one/batch_id=y/part-0.ndjson").write_text("{}\n")
    out = prio_output(
        "batches",
        "--data-config",
        str(config),
        "--input",
        str(tmp_path / "one"),
        "--input",
        str(tmp_path / "two"),
    )
    assert out.splitlines() == ["x 3 ready", f"y 4 missing {tmp_path / 'two' / 'batch_id=y'}"]


# ------------------------------------------------------------------ whole runs


@pytest.mark.slow
def test_integrate_on_local_buckets_explains_the_planted_rejects():
    result = subprocess.run(
        [str(BIN / "integrate"), "--n-rows", "15", "--server-b-delay", "0"],
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "both servers published the expected counts" in result.stdout
    assert "batch test-0: [14, 0, 0, 14, 0, 14, 14, 0, 0, 14]" in result.stdout
    assert "using the cache" not in result.stderr  # verify2 and aggregate used verify1's cache
    # The planted client's story, as the intro tells it, at every stage and in both summaries.
    assert "server A rejects it at verify1 (wrong_length;" in result.stderr
    assert "B at verify2 (missing_peer_packet: rejected by the partner)" in result.stderr
    assert "later stages name it missing_own_packet (rejected here at an earlier stage)" in result.stderr
    for line in (
        "process A: batch test-0: verify1: server A, batch test-0: verify1 rejected wrong_length: 1",
        "process B: batch test-0: verify1: 0 errors out of 15 total",
        "verify2 rejected missing_peer_packet: 1 (rejected by the partner)",
        "verify2 rejected missing_own_packet: 1 (rejected here at an earlier stage)",
        "process B: batch test-0: aggregate: server B, batch test-0: aggregate rejected "
        "missing_own_packet: 1 (rejected here at an earlier stage)",
        "integrate: server A: batch test-0: 14 valid, 1 errors of 15 total (wrong_length: 1), published ",
        "integrate: server B: batch test-0: 14 valid, 1 errors of 15 total "
        "(missing_peer_packet: 1, rejected by the partner), published ",
        "integrate: server B: batch test-2: skipped, no data",
        "process A: summary: 3 batches: 2 published, 0 FAILED, 1 skipped for lack of data",
    ):
        assert line in result.stderr, line
    # Keys show 8 digits in log lines (full ones only with VERBOSE=1).
    assert not re.search("[0-9A-F]{64}", result.stderr)
    assert re.search("/test-app/v1/[0-9A-F]{8}…/test-app/", result.stderr)
    assert "no data for batch(es) test-2" in result.stderr
    assert "process A: batch test-2: verify1: data for test-2 does not exist, skipping..." in result.stderr
    for line in result.stderr.splitlines():
        if " process " in line and "batch " not in line:
            # Lines about one stage of all batches name the stage; those about one batch name it.
            words = ("waiting", "shared", "took", "removed", "done", "summary: 3 batches")
            assert any(word in line for word in words), line


@pytest.mark.slow
def test_integrate_on_the_gcs_api_server_with_server_b_late():
    """Both servers as separate processes against one GCS API server (real client); B starts 4 s after A."""
    result = subprocess.run(
        [str(BIN / "integrate"), "--gcs-emulator", "--n-rows", "10", "--server-b-delay", "4"],
        env=script_env(RETRY_DELAY="0.5"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GCS API server on http://127.0.0.1:" in result.stderr
    assert "process A: waiting for gs://" in result.stderr
    assert "waiting 0.5s for gs://" in result.stderr
    assert "both servers published the expected counts" in result.stdout
    # verify2 and aggregate took what they needed from verify1's cache in the gs:// private bucket.
    assert "using the cache" not in result.stderr


@pytest.mark.slow
def test_integrate_stops_a_stopped_emulator_and_its_servers(tmp_path):
    """SIGSTOP the GCS API server mid-run, then stop bin/integrate: it exits and leaves nothing behind."""
    proc = subprocess.Popen(
        [str(BIN / "integrate"), "--gcs-emulator", "--n-rows", "5", "--server-b-delay", "30"],
        env=script_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stderr is not None
    try:
        emulator = None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "(pid " in line and "GCS API server on" in line:
                emulator = int(line.rsplit("(pid ", 1)[1].rstrip(")\n"))
            if "server A started" in line:
                break
        assert emulator is not None, "".join(lines)
        os.kill(emulator, signal.SIGSTOP)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        assert proc.returncode != 0
        with pytest.raises(ProcessLookupError):
            os.kill(emulator, 0)
        with pytest.raises(ProcessLookupError):
            os.killpg(emulator, 0)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_server_b_starts_late(tmp_path):
    deployment = Deployment(tmp_path)
    deployment.generate()
    # Server A reads its secrets from files this time.
    env = deployment.server["A"]
    for name, file_name in (("PRIVATE_KEY_HEX", "PRIVATE_KEY_FILE"), ("SHARED_SECRET", "SHARED_SECRET_FILE")):
        (tmp_path / name).write_text(env.pop(name) + "\n")
        env[file_name] = str(tmp_path / name)
    a = deployment.process("A")
    marker = deployment.data_root("A", "shared") / "intermediate/external/verify1"
    partner_copy = deployment.data_root("B", "shared") / "intermediate/external/verify1/_SUCCESS"
    deadline = time.monotonic() + 120
    while not partner_copy.exists():  # A has shared verify1 and now waits for B
        assert time.monotonic() < deadline
        assert a.poll() is None
        time.sleep(0.1)
    time.sleep(2)
    assert a.poll() is None, "server A must wait for B"
    assert not (marker / "_SUCCESS").exists()
    code_b, log_b = _finish(deployment.process("B"))
    code_a, log_a = _finish(a)
    assert (code_a, code_b) == (0, 0), log_a + log_b
    assert "waiting 0.25s for" in log_a
    check = deployment.check()
    assert check.returncode == 0, check.stderr


def test_partner_never_arrives(tmp_path):
    deployment = Deployment(tmp_path)
    deployment.server["A"].update(RETRY_LIMIT="2", RETRY_DELAY="0.1")
    deployment.generate()
    code, log = _finish(deployment.process("A"))
    assert code == 1
    assert "maximum number of retries" in log


@pytest.mark.slow
def test_server_killed_mid_stage_and_restarted(tmp_path):
    deployment = Deployment(tmp_path, n_rows=40)
    deployment.server["B"]["LOCK_TTL"] = "3"  # the killed run's lock: taken over 3 s after its last renewal
    deployment.generate()
    a = deployment.process("A")
    b = deployment.process("B")
    # Kill B once it is into verify2 (its own verify2 output folder exists).
    verify2 = deployment.data_root("B") / "intermediate/internal/verify2"
    deadline = time.monotonic() + 120
    while not verify2.exists():
        assert time.monotonic() < deadline
        assert b.poll() is None
        time.sleep(0.05)
    os.killpg(b.pid, signal.SIGKILL)
    b.wait()
    for file in _data_files(tmp_path):  # nothing half-written is visible under a data name
        for line in file.read_text().splitlines():
            json.loads(line)
    _sleep_until_expired(deployment.data_root("B") / "_process.lock")
    b = deployment.process("B")
    code_b, log_b = _finish(b)
    code_a, log_a = _finish(a)
    assert (code_a, code_b) == (0, 0), log_a + log_b
    check = deployment.check()
    assert check.returncode == 0, check.stderr
    for server in "AB":
        record = deployment.published_record(server)
        assert (record["error"], record["total"]) == (1, 40)
    # Nothing unfinished or private reached the partner.
    for shared in ("a-shared", "b-shared"):
        assert not [p for p in _files(tmp_path / shared) if p.name.endswith(".tmp") or "_rejects" in p.name]


def _sleep_until_expired(lock: Path) -> None:
    """Until the lock a killed run left has expired."""
    expires = datetime.fromisoformat(json.loads(lock.read_text())["expires"].replace("Z", "+00:00"))
    time.sleep(max(0.0, expires.timestamp() - time.time()) + 0.5)


def _add_late_clients(deployment: Deployment, count: int) -> None:
    """`count` valid clients of batch test-0 as a new part file in both servers' raw shares."""
    payloads = deployment.root / "late.ndjson"
    payloads.write_text("".join(json.dumps({"payload": [1] * 10}) + "\n" for _ in range(count)))
    subprocess.run(
        [
            str(VENV_BIN / "prio"),
            "encode-shares",
            "--n-data",
            "10",
            "--batch-id",
            "test-0",
            "--public-key-hex-internal",
            deployment.keys["A"]["public_key"],
            "--public-key-hex-external",
            deployment.keys["B"]["public_key"],
            "--input",
            str(payloads),
            "--output-A",
            str(deployment.data_root("A") / "raw/shares/batch_id=test-0"),
            "--output-B",
            str(deployment.data_root("B") / "raw/shares/batch_id=test-0"),
        ],
        check=True,
        capture_output=True,
        text=True,
    )


@pytest.mark.slow
def test_late_data_is_counted_on_a_re_run(tmp_path):
    deployment = Deployment(tmp_path, n_rows=20)
    deployment.generate()
    deployment.run_both()
    assert (deployment.published_record("A")["error"], deployment.published_record("A")["total"]) == (1, 20)
    _add_late_clients(deployment, 5)
    deployment.run_both()
    for server in "AB":
        record = deployment.published_record(server)
        assert (record["error"], record["total"]) == (1, 25), record
        assert record["payload"] == [19 + 5, 5, 5, 19 + 5, 5, 19 + 5, 19 + 5, 5, 5, 19 + 5]


@pytest.mark.slow
def test_a_partner_copy_from_other_inputs_is_not_taken_as_current(tmp_path):
    """B restarted after A had published re-shares its old packets; late data then comes and both re-run."""
    deployment = Deployment(tmp_path)
    deployment.generate()
    deployment.run_both()
    for stage in ("verify1", "verify2", "aggregate"):
        prio_output(
            "bucket", "sync", "--stamp", "test-0=12",
            str(deployment.data_root("B") / "intermediate/internal" / stage),
            str(deployment.data_root("A", "shared") / "intermediate/external" / stage),
        )  # fmt: skip
    _add_late_clients(deployment, 5)
    a = deployment.process("A")
    shared_by_a = deployment.data_root("B", "shared") / "intermediate/external/verify1/_SUCCESS"
    deadline = time.monotonic() + 120
    while not shared_by_a.exists():
        assert time.monotonic() < deadline
        assert a.poll() is None
        time.sleep(0.1)
    assert shared_by_a.read_text() == "test-0=17"
    time.sleep(2)
    assert not (deployment.data_root("A") / "intermediate/internal/verify2").exists(), "A took the old copy"
    code_b, log_b = _finish(deployment.process("B"))
    code_a, log_a = _finish(a)
    assert (code_a, code_b) == (0, 0), log_a + log_b
    assert "is for other inputs (test-0=12, here test-0=17)" in log_a
    for server in "AB":
        record = deployment.published_record(server)
        assert (record["error"], record["total"]) == (1, 17), record


def test_wait_takes_markers_of_these_inputs_or_empty_ones(tmp_path):
    marker = tmp_path / "_SUCCESS"
    prio = str(VENV_BIN / "prio")
    wait = [prio, "bucket", "wait", "--retry-limit", "0", "--retry-delay", "0", "--stamp", "b-0=5"]
    marker.write_text("")  # as the original's servers write them
    assert subprocess.run([*wait, str(marker)]).returncode == 0
    marker.write_text("b-0=5")
    assert subprocess.run([*wait, str(marker)]).returncode == 0
    marker.write_text("b-0=4")
    other = subprocess.run([*wait, str(marker)], capture_output=True, text=True)
    assert other.returncode == 1
    assert "is for other inputs (b-0=4, here b-0=5)" in other.stderr


@pytest.mark.slow
def test_a_re_run_without_the_partner_never_publishes_stale_counts(tmp_path):
    deployment = Deployment(tmp_path)
    deployment.generate()
    deployment.run_both()
    first = deployment.published_record("A")
    _add_late_clients(deployment, 3)
    deployment.server["A"].update(RETRY_LIMIT="2", RETRY_DELAY="0.1")
    code, log = _finish(deployment.process("A"))
    assert code == 1
    assert "maximum number of retries" in log
    assert not (deployment.published("A") / "batch_id=test-0").exists(), (
        "a failed re-run leaves no old result"
    )
    assert first["total"] == deployment.n_rows


_RECORDING_PRIO = """#!/usr/bin/env bash
# Records how prio was started and whether a secret reached it, then runs prio.
secrets=no
[[ -n ${PRIVATE_KEY_HEX:-}${SHARED_SECRET:-}${PRIVATE_KEY_FILE:-}${SHARED_SECRET_FILE:-} ]] && secrets=yes
echo "secrets=$secrets $*" >>"$PRIO_CALLS"
exec "$REAL_PRIO" "$@"
"""


@pytest.mark.slow
def test_secrets_rejects_and_process_count(tmp_path):
    """A server's run is one `prio process` (its stages in it): the secrets reach that process through
    its environment, never its command line; rejects and verify1's cache stay in the private bucket."""
    batches = [{"batch_id": f"test-{i}", "n_data": 4} for i in range(4)]
    deployment = Deployment(tmp_path / "d", n_rows=6, batches=batches)
    deployment.generate()
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "prio").write_text(_RECORDING_PRIO)
    (shim / "prio").chmod(0o755)
    calls = {s: tmp_path / f"calls-{s}" for s in "AB"}
    for s in "AB":
        env = deployment.server[s]
        env.update(
            PATH=f"{shim}{os.pathsep}{env['PATH']}",
            PRIO_CALLS=str(calls[s]),
            REAL_PRIO=str(VENV_BIN / "prio"),
        )
    log_a, _ = deployment.run_both()
    for s in "AB":
        [line] = calls[s].read_text().splitlines()
        assert line.startswith(f"secrets=yes process --name process {s} "), line
        for secret in (deployment.keys[s]["private_key"], deployment.seed):
            assert secret not in line
    # Every stage of the three batches with data ran, in that one process.
    for stage in ("verify1", "verify2", "aggregate", "publish"):
        assert sum(f": {stage}: Running {stage}" in line for line in log_a.splitlines()) == 3, stage
    # Rejects are listed in the private bucket, never in a folder the partner receives.
    [line] = calls["A"].read_text().splitlines()
    assert f" --rejected {deployment.data_root('A') / 'rejects'} " in line
    rejected = deployment.data_root("A") / "rejects/verify1/batch_id=test-0"
    assert _files(rejected), "verify1 rejected the over-long client and lists it"
    for shared in ("a-shared", "b-shared"):
        assert not [p for p in _files(tmp_path / "d" / shared) if "reject" in p.name]
    # verify1, verify2 and aggregate share one cache per batch in the private bucket, deleted after aggregate.
    cache = deployment.data_root("A") / "intermediate/internal/cache"
    assert f" --cache {cache} " in line
    assert "using the cache" not in log_a
    assert not _files(cache)
    for folder in ("a-shared", "b-shared", "b-private"):
        assert not [p for p in _files(tmp_path / "d" / folder) if "cache" in str(p)]


def test_cleanup(tmp_path):
    deployment = Deployment(tmp_path)
    deployment.generate()
    env = deployment.server["A"]
    first = subprocess.run([str(BIN / "cleanup")], env=env, capture_output=True, text=True)
    assert first.returncode == 0
    assert "deleted" in first.stdout
    assert not _data_files(tmp_path / "a-private")
    second = subprocess.run([str(BIN / "cleanup")], env=env, capture_output=True, text=True)
    assert second.stdout.count("nothing to delete") == 2


def test_unreadable_data_config_fails_the_run(tmp_path):
    deployment = Deployment(tmp_path)
    deployment.generate()
    deployment.server["A"]["DATA_CONFIG"] = str(tmp_path / "missing.json")
    code, log = _finish(deployment.process("A"))
    assert code == 2
    assert "missing.json" in log
    assert "done" not in log


@pytest.mark.parametrize("role", ["admin", "server-a", "server-b"])
def test_deployment_compose_file_is_valid(tmp_path, role):
    """`docker-compose config` (no engine needed) accepts each role's file with its filled-in template."""
    folder = tmp_path / role
    folder.mkdir()
    (folder / "docker-compose.yml").write_text(
        (ROOT / "deployment" / role / "docker-compose.yml").read_text()
    )
    template = (ROOT / "deployment" / role / ".env.template").read_text()
    (folder / ".env").write_text(template)
    for line in template.splitlines():
        if line.endswith(".key"):
            (folder / line.split("=", 1)[1]).write_text("secret")
    result = subprocess.run(["docker-compose", "config"], cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "bin/" in result.stdout
    assert "/run/secrets/service-account" in result.stdout
    for line in result.stdout.splitlines():
        assert "PRIVATE_KEY_HEX" not in line
        assert "SHARED_SECRET:" not in line


def test_env_and_key_files_stay_out_of_git_and_images():
    ignored = subprocess.run(
        ["git", "check-ignore", "deployment/server-a/.env", "deployment/admin/private-key.key"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert ignored.stdout.split() == ["deployment/server-a/.env", "deployment/admin/private-key.key"]
    dockerignore = (ROOT / ".dockerignore").read_text().split()
    assert "**/.env" in dockerignore
    assert "**/*.key" in dockerignore


# ------------------------------------------------------------------ one run per server and date


def _lock_file(deployment: Deployment, server: str = "A") -> Path:
    return deployment.data_root(server) / "_process.lock"


def _wait_for_lock(deployment: Deployment, proc: subprocess.Popen) -> dict:
    deadline = time.monotonic() + 120
    while not _lock_file(deployment).exists():
        assert time.monotonic() < deadline
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    return json.loads(_lock_file(deployment).read_text())


def _refused_by(log: str, holder: dict) -> None:
    """One line: the run exits naming the run that holds the lock."""
    [line] = log.strip().splitlines()
    assert "another run is going on" in line, log
    assert f"is held by process A (host {holder['host']}, pid {holder['pid']}, started " in line, log


def test_a_stopped_run_lets_go_of_its_lock(tmp_path):
    """SIGTERM to the run (the one process bin/process becomes) while it waits for the partner:
    it exits 143 and deletes its lock, so that the next run need not wait for it to expire."""
    deployment = Deployment(tmp_path)
    deployment.generate()
    deployment.server["A"].update(RETRY_LIMIT="30", RETRY_DELAY="10")
    run = deployment.process("A")
    holder = _wait_for_lock(deployment, run)
    assert holder["pid"] == run.pid  # bin/process became the run: the lock names it
    shared = deployment.data_root("B", "shared") / "intermediate/external/verify1/_SUCCESS"
    deadline = time.monotonic() + 120
    while not shared.exists():  # A has shared verify1 and waits for B
        assert time.monotonic() < deadline and run.poll() is None
        time.sleep(0.05)
    run.send_signal(signal.SIGTERM)
    code, log = _finish(run, timeout=60)
    assert code == 143, log
    assert not _lock_file(deployment).exists()
    assert "Traceback" not in log


@pytest.mark.slow
def test_two_runs_of_one_server_started_together(tmp_path):
    """Started together, one run gets the lock and the other exits 2 before deleting anything."""
    deployment = Deployment(tmp_path)
    deployment.generate()
    first, second = deployment.process("A"), deployment.process("A")
    holder = _wait_for_lock(deployment, first if first.poll() is None else second)
    b = deployment.process("B")
    results = [_finish(first), _finish(second)]
    code_b, log_b = _finish(b)
    assert code_b == 0, log_b
    assert sorted(code for code, _ in results) == [0, 2], results
    _refused_by(next(log for code, log in results if code == 2), holder)
    assert "Traceback" not in "".join(log for _, log in results)
    assert deployment.check().returncode == 0
    assert not _lock_file(deployment).exists()  # let go at the end of the run


@pytest.mark.slow
def test_a_later_run_of_one_server_leaves_the_first_alone(tmp_path):
    """A second run (12 s later, say) while the first waits for the partner: it exits 2 and the
    first's packets stay; the first then finishes with the partner."""
    deployment = Deployment(tmp_path)
    deployment.generate()
    first = deployment.process("A")
    holder = _wait_for_lock(deployment, first)
    shared = deployment.data_root("B", "shared") / "intermediate/external/verify1/_SUCCESS"
    deadline = time.monotonic() + 120
    while not shared.exists():  # A has verify1's packets and waits for B
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.1)
    packets = sorted(_files(deployment.data_root("A") / "intermediate/internal/verify1"))
    code, log = _finish(deployment.process("A"), timeout=60)
    assert code == 2
    _refused_by(log, holder)
    assert sorted(_files(deployment.data_root("A") / "intermediate/internal/verify1")) == packets
    code_b, log_b = _finish(deployment.process("B"))
    code_a, log_a = _finish(first)
    assert (code_a, code_b) == (0, 0), log_a + log_b
    assert deployment.check().returncode == 0


@pytest.mark.slow
def test_a_killed_runs_lock_is_taken_over_once_expired(tmp_path):
    deployment = Deployment(tmp_path)
    deployment.generate()
    deployment.server["A"]["LOCK_TTL"] = "3"
    killed = deployment.process("A")
    holder = _wait_for_lock(deployment, killed)
    os.killpg(killed.pid, signal.SIGKILL)  # the run and its lock holder: nothing lets go of the lock
    killed.wait()
    code, log = _finish(deployment.process("A"), timeout=60)
    assert code == 2  # not expired yet
    _refused_by(log, holder)
    _sleep_until_expired(_lock_file(deployment))
    a, b = deployment.process("A"), deployment.process("B")
    (code_a, log_a), (code_b, log_b) = _finish(a), _finish(b)
    assert (code_a, code_b) == (0, 0), log_a + log_b
    took_over = f"took over the expired lock {_lock_file(deployment)} of process A (host {holder['host']}, "
    assert took_over in log_a
    assert deployment.check().returncode == 0


def test_a_store_that_cannot_lock_stops_the_run(tmp_path, plain_gcs_emulator, monkeypatch):
    """A GCS API server that ignores ifGenerationMatch: the run exits 2 naming it, before any work."""
    from google.cloud import storage

    deployment = Deployment(tmp_path)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", plain_gcs_emulator)
    bucket = f"plain-{uuid.uuid4().hex[:12]}"
    storage.Client().create_bucket(bucket)
    # Data under the run's prefix, so that the run gets as far as its lock.
    key_b = deployment.keys["B"]["public_key"].upper()
    storage.Client().bucket(bucket).blob(f"test-app/v1/{key_b}/test-app/raw").upload_from_string(b"")
    env = deployment.server["A"]
    env.update(STORAGE_EMULATOR_HOST=plain_gcs_emulator, BUCKET_INTERNAL_PRIVATE=f"gs://{bucket}")
    code, log = _finish(deployment.process("A"), timeout=120)
    assert code == 2
    [line] = log.strip().splitlines()
    assert f"gs://{bucket}/test-app/v1/" in line and "does not enforce conditional writes" in line


@pytest.mark.parametrize(
    ("bucket", "value"),
    [("BUCKET_INTERNAL_SHARED", "{root}/a-private/test-app"), ("BUCKET_EXTERNAL_SHARED", "{root}/a-private")],
)
def test_the_cache_never_lies_in_a_shared_bucket(tmp_path, bucket, value):
    deployment = Deployment(tmp_path)
    deployment.server["A"][bucket] = value.format(root=tmp_path)
    code, log = _finish(deployment.process("A"), timeout=60)
    assert code == 2
    [line] = log.strip().splitlines()
    assert f"must not lie inside or hold {bucket}, which the partner reads" in line
    assert not _files(tmp_path / "a-private")


@pytest.mark.slow
def test_process_refuses_to_publish_when_more_than_max_error_ratio_failed(tmp_path):
    deployment = Deployment(tmp_path)
    deployment.generate()
    deployment.server["A"]["MAX_ERROR_RATIO"] = "0"  # the one client planted to fail is too many
    a, b = deployment.process("A"), deployment.process("B")
    (code_a, log_a), (code_b, log_b) = _finish(a), _finish(b)
    assert code_b == 0, log_b
    assert code_a == 3, log_a  # the batch FAILED (see the summary); other batches would go on
    assert "batch test-0: FAILED: nothing published" in log_a
    refused = "refusing to publish: 1 of 12 of this server's clients failed, more than --max-error-ratio 0:"
    assert refused in log_a
    assert not (deployment.published("A") / "batch_id=test-0").exists()


# ------------------------------------------------------- failing fast and loud

THREE_BATCHES = [
    {"batch_id": "test-0", "n_data": 10},
    {"batch_id": "test-1", "n_data": 4},
    {"batch_id": "test-2", "n_data": 3},  # dropped by generate: skipped, not FAILED
]


def test_a_missing_bucket_fails_before_any_waiting(tmp_path):
    deployment = Deployment(tmp_path)
    deployment.generate()
    deployment.bucket["b-shared"].rmdir()
    deployment.server["A"].update(RETRY_LIMIT="30", RETRY_DELAY="10")
    started = time.monotonic()
    code, log = _finish(deployment.process("A"), timeout=120)
    assert code == 2, log
    assert time.monotonic() - started < 60  # no retry was waited out (the first alone is 10 s)
    assert f"process A: check: bucket {deployment.bucket['b-shared']}: " in log
    assert "does not exist" in log
    assert "waiting" not in log


def test_a_prefix_without_data_is_named_with_the_prefix_that_has_it(tmp_path):
    """bin/generate writes under test-data/v1 by default, bin/process reads data/v1: both as the original."""
    deployment = Deployment(tmp_path)
    del deployment.admin["BUCKET_PREFIX"]
    deployment.generate()
    assert (deployment.bucket["a-private"] / "test-data/v1").is_dir()
    for env in deployment.server.values():
        del env["BUCKET_PREFIX"]
    deployment.server["A"].update(RETRY_LIMIT="30", RETRY_DELAY="10")
    key_b = deployment.keys["B"]["public_key"]
    started = time.monotonic()
    code, log = _finish(deployment.process("A"), timeout=120)
    assert code == 2, log
    assert time.monotonic() - started < 60
    assert f"nothing at all under {deployment.bucket['a-private']}/data/v1/{key_b[:8]}…/test-app/" in log
    assert "have data under another prefix: test-data/v1 (BUCKET_PREFIX?)" in log
    assert key_b not in log  # keys show 8 digits in log lines ...
    deployment.server["A"]["VERBOSE"] = "1"
    code, log = _finish(deployment.process("A"), timeout=120)
    assert code == 2
    assert f"/data/v1/{key_b}/test-app/" in log  # ... unless VERBOSE=1


def test_a_missing_date_under_an_existing_prefix_is_waited_for(tmp_path):
    deployment = Deployment(tmp_path)
    deployment.generate()
    deployment.server["A"].update(SUBMISSION_DATE="2026-11-28", RETRY_LIMIT="1", RETRY_DELAY="0.1")
    code, log = _finish(deployment.process("A"))
    assert code == 1, log
    assert "2026-11-28/raw/shares/_SUCCESS (wait 1 of 2: the first, then up to 1 retry)" in log
    assert "Reached the maximum number of retries" in log


def _summary(log: str, server: str) -> list[str]:
    prefix = f"process {server}: summary: "
    return [line.split(prefix, 1)[1] for line in log.splitlines() if prefix in line]


@pytest.mark.slow
def test_a_batch_with_no_valid_client_fails_the_run_after_the_other_batches(tmp_path):
    """Server A gets server B's shares for test-1 (as with a wrong private key): both servers reject
    every client of test-1, publish test-0 as usual, and exit 3 with test-1 FAILED in the summary."""
    deployment = Deployment(tmp_path, n_rows=6, batches=THREE_BATCHES)
    deployment.generate()
    raw_a = deployment.data_root("A") / "raw/shares/batch_id=test-1"
    raw_b = deployment.data_root("B") / "raw/shares/batch_id=test-1"
    for part in raw_a.iterdir():
        part.unlink()
    for part in raw_b.iterdir():
        (raw_a / part.name).write_bytes(part.read_bytes())
    a, b = deployment.process("A"), deployment.process("B")
    (code_a, log_a), (code_b, log_b) = _finish(a), _finish(b)
    assert (code_a, code_b) == (3, 3), log_a + log_b
    key_b = deployment.keys["B"]["public_key"]
    published_a = str(deployment.published("A") / "batch_id=test-0/publish.ndjson")
    published_a = published_a.replace(key_b, f"{key_b[:8]}…")  # keys show 8 digits in log lines
    summary_a = _summary(log_a, "A")
    assert summary_a[0] == (
        f"batch test-0: 5 valid, 1 errors of 6 total (wrong_length: 1), published {published_a}"
    )
    # MAX_ERROR_RATIO (0.5) refuses to publish the batch: nothing, not a count of zero.
    assert summary_a[1] == (
        "batch test-1: FAILED: nothing published (see the publish lines above), 6 total, "
        "rejected decrypt_failed: 6"
    )
    assert summary_a[2].startswith("batch test-1: likely cause: the shares were encrypted to another key")
    assert summary_a[3:] == [
        "batch test-2: skipped, no data",
        "3 batches: 1 published, 1 FAILED, 1 skipped for lack of data (exit status 3)",
    ]
    summary_b = _summary(log_b, "B")
    assert summary_b[1] == (
        "batch test-1: FAILED: nothing published (see the publish lines above), 6 total, "
        "rejected missing_peer_packet: 6, rejected by the partner"
    )
    assert summary_b[2].startswith("batch test-1: likely cause: the partner rejected these clients")
    # B's verify2 line says so too (it said only: the partner's files are of another batch or incomplete).
    assert "verify2 (6 of 6, mostly missing_peer_packet): the partner rejected these clients" in log_b
    assert deployment.published_record("A")["total"] == 6


@pytest.mark.slow
def test_a_refused_publish_fails_its_batch_and_the_run_goes_on(tmp_path):
    """publish exits 2 when it refuses (too many errors, say): that batch is FAILED, the next one is
    published, and the run exits 3. Three clients of test-0 with unreadable shares at both servers
    and MAX_ERROR_RATIO 0.3 at A: A refuses test-0 (4 of 9 failed), not test-1 (1 of 6); B (0.5)
    publishes both."""
    deployment = Deployment(tmp_path, n_rows=6, batches=THREE_BATCHES)
    deployment.generate()
    unreadable = "".join(json.dumps({"id": f"planted-{n}", "payload": "AAAA"}) + "\n" for n in range(3))
    for server in "AB":
        raw = deployment.data_root(server) / "raw/shares/batch_id=test-0"
        (raw / "part-planted.ndjson").write_text(unreadable)
    deployment.server["A"]["MAX_ERROR_RATIO"] = "0.3"
    a, b = deployment.process("A"), deployment.process("B")
    (code_a, log_a), (code_b, log_b) = _finish(a), _finish(b)
    assert (code_a, code_b) == (3, 0), log_a + log_b
    assert "more than --max-error-ratio 0.3" in log_a
    assert "process A: batch test-0: publish refused: FAILED, going on with the other batches" in log_a
    summary = _summary(log_a, "A")
    assert summary[0] == (
        "batch test-0: FAILED: nothing published (see the publish lines above), 9 total, "
        "rejected decrypt_failed: 3; wrong_length: 1"
    )
    assert summary[1].startswith("batch test-1: 5 valid, 1 errors of 6 total")
    assert (deployment.published("A") / "batch_id=test-1/publish.ndjson").is_file()
    assert not (deployment.published("A") / "batch_id=test-0").exists()
    assert _summary(log_b, "B")[0].startswith("batch test-0: 5 valid, 4 errors of 9 total")


# ------------------------------------------------------ a new operator's first steps


def test_scripts_find_the_projects_venv_when_prio_is_not_on_path(tmp_path):
    """From a clone, without activating anything: bin/* use the project's .venv (prio: command not found)."""
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copytree(BIN, clone / "bin")
    deployment = Deployment(tmp_path / "deployment")
    env = {**deployment.admin, "PATH": "/usr/bin:/bin"}
    bare = subprocess.run([str(clone / "bin/generate")], env=env, capture_output=True, text=True, timeout=120)
    assert bare.returncode != 0
    assert "prio is not installed: run `make setup` in the project (it makes .venv)" in bare.stderr
    (clone / ".venv").symlink_to(VENV_BIN.parent)
    found = subprocess.run(
        [str(clone / "bin/generate")], env=env, capture_output=True, text=True, timeout=120
    )
    assert found.returncode == 0, found.stderr
    assert _data_files(deployment.data_root("A") / "raw/shares")


def test_setup_says_what_it_installs():
    recipe = subprocess.run(
        ["make", "-n", "-B", "setup", "VENV=/nonexistent-venv"], cwd=ROOT, capture_output=True, text=True
    )
    assert recipe.returncode == 0, recipe.stderr
    install = [line for line in recipe.stdout.splitlines() if "-r requirements.txt" in line]
    assert install and " -q" not in install[0]  # pip names each package (a silent minutes-long -q before)
    assert 'echo "Installing the locked requirements' in recipe.stdout


def test_help_warns_about_mixed_evaluation_points():
    verify1 = subprocess.run([str(VENV_BIN / "prio"), "verify1", "--help"], capture_output=True, text=True)
    text = " ".join(verify1.stdout.split())
    assert "default: sequential" in text
    assert "bin/process and prio-spark use fixed, this command alone sequential" in text
    process = subprocess.run(
        [str(BIN / "process"), "--help"], env=script_env(), capture_output=True, text=True
    )
    assert "Both servers must use the same EVALUATION_POINT: bin/process defaults to" in process.stdout
    assert "`prio verify1`/`verify2` run by hand to sequential" in process.stdout


def test_keep_is_explained_and_data_config_is_a_file_in_the_readme():
    for script in ("integrate", "integrate-firefox"):
        usage = subprocess.run([BIN / script, "--help"], env=script_env(), capture_output=True, text=True)
        assert "deleted at the end; --keep keeps" in " ".join(usage.stdout.split()), usage.stdout
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "`DATA_CONFIG` (the path of a JSON file, local or `gs://`, holding a list of" in readme
