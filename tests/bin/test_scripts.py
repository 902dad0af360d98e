"""bin/ scripts for real: local folder buckets and a GCS API server, concurrency and faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "bin"
VENV_BIN = Path(sys.executable).parent
SMALL_CONFIG = ROOT / "config" / "test-small.json"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRIPT_VARIABLES}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


_SCRIPT_VARIABLES = {
    "APP_NAME", "SUBMISSION_DATE", "BUCKET_PREFIX", "DATA_CONFIG", "SERVER_ID", "SHARED_SECRET", "PRIVATE_KEY_HEX",
    "PUBLIC_KEY_HEX_INTERNAL", "PUBLIC_KEY_HEX_EXTERNAL", "BUCKET_INTERNAL_PRIVATE", "BUCKET_INTERNAL_SHARED",
    "BUCKET_EXTERNAL_SHARED", "BUCKET_EXTERNAL_PRIVATE", "RETRY_LIMIT", "RETRY_DELAY", "RETRY_BACKOFF_EXPONENT",
    "PRG_KEYING", "EVALUATION_POINT", "STORAGE_EMULATOR_HOST",
}


def _prio(*args: str) -> str:
    return subprocess.run([str(VENV_BIN / "prio"), *args], check=True, capture_output=True, text=True).stdout


class Deployment:
    """Two servers' buckets as local folders, fresh keys, and the environments of admin, A and B."""

    def __init__(self, root: Path, n_rows: int = 12) -> None:
        self.root = root
        self.n_rows = n_rows
        keys = {s: json.loads(_prio("keygen")) for s in "AB"}
        self.keys = keys
        seed = json.loads(_prio("shared-seed"))["shared_seed"]
        common = {"APP_NAME": "test-app", "SUBMISSION_DATE": "2026-11-27", "BUCKET_PREFIX": "test-app/v1",
                  "DATA_CONFIG": str(SMALL_CONFIG), "RETRY_LIMIT": "8", "RETRY_DELAY": "0.5",
                  "RETRY_BACKOFF_EXPONENT": "2"}
        bucket = {name: str(root / name) for name in ("a-private", "a-shared", "b-private", "b-shared")}
        self.bucket = bucket
        self.admin = _env(**common, PUBLIC_KEY_HEX_INTERNAL=keys["A"]["public_key"],
                          PUBLIC_KEY_HEX_EXTERNAL=keys["B"]["public_key"],
                          BUCKET_INTERNAL_PRIVATE=bucket["a-private"], BUCKET_EXTERNAL_PRIVATE=bucket["b-private"])
        self.server = {}
        for s, own, other in (("A", "a", "b"), ("B", "b", "a")):
            peer = "B" if s == "A" else "A"
            self.server[s] = _env(
                **common, SERVER_ID=s, SHARED_SECRET=seed, PRIVATE_KEY_HEX=keys[s]["private_key"],
                PUBLIC_KEY_HEX_INTERNAL=keys[s]["public_key"], PUBLIC_KEY_HEX_EXTERNAL=keys[peer]["public_key"],
                BUCKET_INTERNAL_PRIVATE=bucket[f"{own}-private"], BUCKET_INTERNAL_SHARED=bucket[f"{own}-shared"],
                BUCKET_EXTERNAL_SHARED=bucket[f"{other}-shared"])

    def generate(self) -> None:
        subprocess.run([str(BIN / "generate"), "--n-rows", str(self.n_rows)], env=self.admin, check=True,
                       capture_output=True, text=True)

    def process(self, server: str, **popen) -> subprocess.Popen:
        return subprocess.Popen([str(BIN / "process")], env=self.server[server], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True, **popen)

    def published(self, server: str) -> str:
        own, peer = ("a", "B") if server == "A" else ("b", "A")
        return f"{self.bucket[own + '-private']}/test-app/v1/{self.keys[peer]['public_key']}/test-app/2026-11-27/processed/publish"

    def check(self) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(VENV_BIN / "prio"), "integration", "check", "--data-config", str(SMALL_CONFIG),
             "--n-rows", str(self.n_rows), "--n-drop-batch", "1",
             "--published-A", self.published("A"), "--published-B", self.published("B")],
            capture_output=True, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def test_shellcheck_clean():
    scripts = [BIN / n for n in ("common.sh", "cleanup", "generate", "process", "integrate")]
    scripts += [ROOT / "scripts" / "install-oracle", ROOT / ".ci" / "run"]
    result = subprocess.run([str(VENV_BIN / "shellcheck"), "-x", *map(str, scripts)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script,needed", [
    ("process", "SHARED_SECRET"), ("generate", "DATA_CONFIG"), ("cleanup", "BUCKET_INTERNAL_SHARED"),
])
def test_missing_variable_names_itself(tmp_path, script, needed):
    deployment = Deployment(tmp_path)
    env = dict(deployment.server["A"] if script != "generate" else deployment.admin)
    env.pop(needed)
    result = subprocess.run([str(BIN / script)], env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert needed in result.stderr and "missing required variable" in result.stderr
    for secret in (deployment.keys["A"]["private_key"], env.get("SHARED_SECRET", "-")):
        assert secret not in result.stdout + result.stderr


def test_integrate_on_local_buckets():
    result = subprocess.run([str(BIN / "integrate"), "--n-rows", "15"], env=_env(), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "both servers published the expected counts" in result.stdout
    assert "batch test-0: [14, 0, 0, 14, 0, 14, 14, 0, 0, 14]" in result.stdout
    assert "data for test-2 does not exist, skipping..." in result.stderr


def test_integrate_on_the_gcs_api_server_with_server_b_20_seconds_late():
    """Both servers as separate processes against one GCS API server (real client); B starts 20 s after A."""
    result = subprocess.run([str(BIN / "integrate"), "--gcs-emulator", "--n-rows", "10", "--server-b-delay", "20"],
                            env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GCS API server on http://127.0.0.1:" in result.stderr
    assert "process A: waiting for gs://" in result.stderr and "waiting 1s for gs://" in result.stderr
    assert "both servers published the expected counts" in result.stdout


def test_server_b_starts_20_seconds_late(tmp_path):
    deployment = Deployment(tmp_path)
    deployment.generate()
    # Server A reads its secrets from files this time.
    env = deployment.server["A"]
    for name, file_name in (("PRIVATE_KEY_HEX", "PRIVATE_KEY_FILE"), ("SHARED_SECRET", "SHARED_SECRET_FILE")):
        (tmp_path / name).write_text(env.pop(name) + "\n")
        env[file_name] = str(tmp_path / name)
    a = deployment.process("A")
    time.sleep(20)
    assert a.poll() is None, "server A must wait for B"
    b = deployment.process("B")
    code_b, log_b = _finish(b)
    code_a, log_a = _finish(a)
    assert (code_a, code_b) == (0, 0), log_a + log_b
    assert "waiting" in log_a
    check = deployment.check()
    assert check.returncode == 0, check.stderr


def test_partner_never_arrives(tmp_path):
    deployment = Deployment(tmp_path)
    deployment.server["A"].update(RETRY_LIMIT="2", RETRY_DELAY="0.1")
    deployment.generate()
    code, log = _finish(deployment.process("A"))
    assert code == 1 and "maximum number of retries" in log


def _data_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.name.startswith((".", "_"))]


def test_server_killed_mid_stage_and_restarted(tmp_path):
    deployment = Deployment(tmp_path, n_rows=40)
    deployment.generate()
    a = deployment.process("A")
    b = deployment.process("B")
    # Kill B once it is into verify2 (its own verify1 output exists).
    verify1 = tmp_path / "b-shared"
    deadline = time.monotonic() + 120
    while not list(verify1.rglob("intermediate/internal/verify2")):
        assert time.monotonic() < deadline and b.poll() is None
        time.sleep(0.05)
    os.killpg(b.pid, signal.SIGKILL)
    b.wait()
    for file in _data_files(tmp_path):  # nothing half-written is visible under a data name
        for line in file.read_text().splitlines():
            json.loads(line)
    b = deployment.process("B")
    code_b, log_b = _finish(b)
    code_a, log_a = _finish(a)
    assert (code_a, code_b) == (0, 0), log_a + log_b
    check = deployment.check()
    assert check.returncode == 0, check.stderr
    for server in "AB":
        for batch in ("test-0", "test-1"):
            record = json.loads((Path(deployment.published(server)) / f"batch_id={batch}" / "publish.ndjson").read_text())
            assert (record["error"], record["total"]) == (1, 40)


def test_cleanup(tmp_path):
    deployment = Deployment(tmp_path)
    deployment.generate()
    env = deployment.server["A"]
    first = subprocess.run([str(BIN / "cleanup")], env=env, capture_output=True, text=True)
    assert first.returncode == 0 and "deleted" in first.stdout
    assert not _data_files(tmp_path / "a-private")
    second = subprocess.run([str(BIN / "cleanup")], env=env, capture_output=True, text=True)
    assert second.stdout.count("nothing to delete") == 2


def test_unreadable_data_config_fails_the_run(tmp_path):
    deployment = Deployment(tmp_path)
    deployment.generate()
    deployment.server["A"]["DATA_CONFIG"] = str(tmp_path / "missing.json")
    code, log = _finish(deployment.process("A"))
    assert code == 2 and "missing.json" in log and "done" not in log
