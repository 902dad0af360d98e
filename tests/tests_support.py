"""Helpers shared by several test modules."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from prio_processor.engine import keys
from prio_processor.engine.client import Client
from prio_processor.engine.config import Config
from prio_processor.engine.server import Schedule, Server, TotalShare
from prio_processor.pipeline import runner, stages
from prio_processor.pipeline.index import PacketIndex
from prio_processor.pipeline.tally import Tally
from prio_processor.storage import location

from vectors import Case, read_payloads

PEER = {"A": "B", "B": "A"}
VENV_BIN = Path(sys.executable).parent
#: What `prio` and the bin/ scripts read from the environment: tests that run them start without it.
SCRIPT_VARIABLES = frozenset(
    {
        "N_DATA",
        "BATCH_ID",
        "INPUT",
        "INPUT_INTERNAL",
        "INPUT_EXTERNAL",
        "OUTPUT",
        "OUTPUT_A",
        "OUTPUT_B",
        "SPARK_SUBMIT",
        "SPARK_SUBMIT_ARGS",
        "SPARK_MASTER",
        "APP_NAME",
        "SUBMISSION_DATE",
        "BUCKET_PREFIX",
        "DATA_CONFIG",
        "SERVER_ID",
        "SHARED_SECRET",
        "PRIVATE_KEY_HEX",
        "PRIVATE_KEY_FILE",
        "SHARED_SECRET_FILE",
        "PUBLIC_KEY_HEX_INTERNAL",
        "PUBLIC_KEY_HEX_EXTERNAL",
        "BUCKET_INTERNAL_PRIVATE",
        "BUCKET_INTERNAL_SHARED",
        "BUCKET_EXTERNAL_SHARED",
        "BUCKET_EXTERNAL_PRIVATE",
        "BUCKET_INTERNAL_INGEST",
        "BUCKET_EXTERNAL_INGEST",
        *(
            f"BUCKET_{side}_{what}"
            for side in ("INTERNAL", "EXTERNAL")
            for what in ("ENDPOINT", "ACCESS_KEY", "SECRET_KEY", "SECRET_KEY_FILE")
        ),
        "PRIO_S3_CONFIG",
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_PROFILE",
        "RETRY_LIMIT",
        "RETRY_DELAY",
        "RETRY_BACKOFF_EXPONENT",
        "PRG_KEYING",
        "EVALUATION_POINT",
        "ENGINE",
        "WORKERS",
        "VERBOSE",
        "PROGRESS_INTERVAL",
        "REJECTS",
        "CACHE",
        "STORAGE_EMULATOR_HOST",
        "PING_INPUT",
        "PING_SOURCE",
        "STAGING_OUTPUT",
        "DATABASE",
        "DATASET",
        "TABLE",
        "ORIGIN_CONFIG",
    }
)


def script_env(**extra: str) -> dict[str, str]:
    """This process's environment without the scripts' variables, the venv first on PATH, and `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in SCRIPT_VARIABLES}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


#: A command that prints nothing for this long has stalled: long stages print a progress line every
#: PROGRESS_INTERVAL seconds (10), and starting a JVM on a loaded 2-core machine takes minutes.
SILENCE_LIMIT = 600.0


def run_watched(
    args: list[str], env: dict[str, str], silence_limit: float = SILENCE_LIMIT, **popen: Any
) -> subprocess.CompletedProcess:
    """Run a command to its end as long as it keeps printing (on stdout or stderr): the deadline
    follows its progress instead of a fixed total that a slow but correct run can exceed."""
    proc = subprocess.Popen(
        args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **popen,
    )
    last = [time.monotonic()]
    outputs: dict[str, list[str]] = {"stdout": [], "stderr": []}

    def pump(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)
            last[0] = time.monotonic()

    pumps = [
        threading.Thread(target=pump, args=(proc.stdout, outputs["stdout"]), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, outputs["stderr"]), daemon=True),
    ]
    for thread in pumps:
        thread.start()
    try:
        while proc.poll() is None:
            if time.monotonic() - last[0] > silence_limit:
                raise AssertionError(
                    f"{args[0]} printed nothing for {silence_limit:.0f}s; its log:\n"
                    + "".join(outputs["stderr"])[-4000:]
                )
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for thread in pumps:
            thread.join(timeout=10)
    return subprocess.CompletedProcess(
        args, proc.returncode, "".join(outputs["stdout"]), "".join(outputs["stderr"])
    )


def prio_output(*args: str) -> str:
    """What the venv's `prio` prints on stdout for `args` (it must succeed)."""
    return subprocess.run([str(VENV_BIN / "prio"), *args], check=True, capture_output=True, text=True).stdout


# Each server stage and the stage whose packets it joins.
VERIFY_CHAIN = (("verify1", None), ("verify2", "verify1"), ("aggregate", "verify2"))


def run_verify_chain(step: Callable[[str, str, str | None], None]) -> None:
    """Both servers through verify1, verify2 and aggregate in the order the servers run
    them (a stage of both before the next): `step(stage, server, previous stage or None)`."""
    for stage, previous in VERIFY_CHAIN:
        for server in PEER:
            step(stage, server, previous)


def run_server_chain(
    servers: dict[str, Server],
    raw: dict[str, Path],
    out: Path,
    schedule: Schedule,
    workers: int = 1,
    cache: Path | None = None,
    notice: Callable[[str], None] | None = None,
    before: Callable[[str, str], None] | None = None,
) -> dict[str, bytes]:
    """Both servers' verify1, verify2 and aggregate through the runner, each into out/<server>/<stage>
    with rejects in out/rejects/<server> (and, with `cache`, verify1's cache in <cache>/<server>):
    every file written below `out`, by relative path. `before(stage, server)` runs before each step."""

    def step(stage: str, s: str, prev: str | None) -> None:
        if before is not None:
            before(stage, s)
        inputs = runner.Inputs(location(raw[s]))
        if prev:
            inputs = runner.Inputs(location(raw[s]), location(out / s / prev), location(out / PEER[s] / prev))
        runner.run_stage(
            stage,
            servers[s],
            inputs,
            location(out / s / stage),
            location(out / "rejects" / s),
            schedule=schedule,
            workers=workers,
            cache=None if cache is None else location(cache / s),
            notice=notice or (lambda message: None),
        )

    run_verify_chain(step)
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


class Pair:
    """A fresh configuration with both servers."""

    def __init__(self, n_data: int, batch_id: bytes = b"test-batch") -> None:
        self.private_a, public_a = keys.generate_keypair()
        self.private_b, public_b = keys.generate_keypair()
        self.seed = os.urandom(16)
        self.config = Config(n_data, public_a, public_b, batch_id)
        self.a = Server(self.config, "A", self.private_a, self.seed)
        self.b = Server(self.config, "B", self.private_b, self.seed)


def write_parts(lines: list[str], folder: Path, count: int) -> None:
    """The lines spread over `count` part files (the last ones may be empty) and a marker."""
    folder.mkdir(parents=True)
    size = -(-len(lines) // count)
    for k in range(count):
        chunk = lines[k * size : (k + 1) * size]
        (folder / f"part-{k:05d}.json").write_text("".join(line + "\n" for line in chunk))
    (folder / "_SUCCESS").write_text("")


def tampered_shares(pair: Pair, count: int, seed: int) -> dict[str, list[str]]:
    """Shares with bad lines, duplicates across chunks, and packets that fail at one server only."""
    rng = random.Random(seed)
    client = Client(pair.config)
    vectors = [[rng.randint(0, 1) for _ in range(pair.config.n_data)] for _ in range(count)]
    packets = client.encode_batch(vectors)
    lines: dict[str, list[str]] = {"A": [], "B": []}
    for k, pair_of_packets in enumerate(packets):
        for s, packet in zip("AB", pair_of_packets):
            payload = base64.b64encode(packet).decode()
            if k % 7 == 3 and s == "A":  # fails at A only: shifts A's sequential points
                payload = base64.b64encode(packet[:-1] + bytes([packet[-1] ^ 1])).decode()
            lines[s].append(json.dumps({"id": f"c{k}", "payload": payload}))
    for s in "AB":
        lines[s].insert(5, "not json")
        lines[s].insert(9, json.dumps({"id": "bad64", "payload": "QUJDRA="}))
        lines[s].insert(11, lines[s][2])  # a duplicate in a later chunk
        lines[s].append(lines[s][20])  # and at the very end
    return lines


def vector_server(case: Case, server_id: str) -> Server:
    private = keys.private_key_from_hex(case.keys(server_id)["private_key"])
    return Server(case.config, server_id, private, case.shared_seed, case.keying)


def packet_index(payloads: dict[str, str]) -> PacketIndex:
    """An index of the original's verification packets (which carry no share digest)."""
    index = PacketIndex()
    for record_id, payload in payloads.items():
        index.add(record_id, payload, None)
    return index


def vector_total_shares(case: Case) -> dict[str, TotalShare]:
    """Each server's total share of a case, aggregated from the original's verify2 files."""
    out = {}
    for server, peer in (("A", "B"), ("B", "A")):
        with (
            packet_index(read_payloads(case.intermediate(server, "verify2"))) as internal,
            packet_index(read_payloads(case.intermediate(peer, "verify2"))) as external,
        ):
            out[server] = stages.aggregate(
                vector_server(case, server), case.raw(server), internal, external, Tally("aggregate")
            )
    return out


__all__ = [
    "SCRIPT_VARIABLES",
    "VENV_BIN",
    "Pair",
    "Schedule",
    "packet_index",
    "prio_output",
    "run_server_chain",
    "script_env",
    "tampered_shares",
    "vector_server",
    "vector_total_shares",
    "write_parts",
]


S3_SERVER = Path(__file__).resolve().parents[1] / "scripts" / "s3-server"


class S3Server:
    """One organisation's S3 API server (scripts/s3-server: moto, authentication on): buckets
    `<org>-private`, `<org>-shared` and `<org>-ingest`, users `admin` (every bucket) and
    `partner` (the shared one)."""

    def __init__(self, org: str, folder: Path) -> None:
        self.org = org
        self.folder = folder
        self.proc = subprocess.Popen(
            [sys.executable, str(S3_SERVER), str(folder), "--bucket", f"{org}-private",
             "--bucket", f"{org}-shared", "--bucket", f"{org}-ingest", "--user", f"partner={org}-shared"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.endpoint = ""

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 120  # imports moto: slow on a loaded machine
        while not (self.folder / "endpoint").exists():
            if self.proc.poll() is not None:
                pytest.fail(f"the S3 API server of {self.org} exited ({self.proc.returncode})")
            if time.monotonic() > deadline:
                pytest.fail(f"the S3 API server of {self.org} did not start within 120 s")
            time.sleep(0.05)
        self.endpoint = (self.folder / "endpoint").read_text().strip()

    def access_key(self, user: str) -> str:
        return (self.folder / f"{user}.access").read_text().strip()

    def secret_file(self, user: str) -> Path:
        return self.folder / f"{user}.secret"

    def entry(self, user: str) -> dict[str, str]:
        """A PRIO_S3_CONFIG entry: this server's endpoint with `user`'s keys."""
        return {"endpoint": self.endpoint, "access_key": self.access_key(user),
                "secret_key_file": str(self.secret_file(user))}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
