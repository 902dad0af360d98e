"""Never publish a silent zero: a partner that runs the original (whose records carry no settings
stamp) with another seed, PRG keying or evaluation schedule fails every client; publish with
--max-error-ratio refuses instead of publishing zeros."""

from __future__ import annotations

import base64
import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from prio_processor.engine import keys
from prio_processor.engine.client import Client
from prio_processor.engine.prg import PrgKeying
from prio_processor.engine.server import Schedule, Server
from prio_processor.pipeline import runner
from prio_processor.storage import location

from runner import run_inprocess
from tests_support import PEER, SCRIPT_VARIABLES, Pair, run_verify_chain, tampered_shares, write_parts

# How the partner, running the original, differs from server A.
PARTNER = {
    "seed": lambda pair: (Server(pair.config, "B", pair.private_b, os.urandom(16)), Schedule.FIXED),
    "prg keying": lambda pair: (
        Server(pair.config, "B", pair.private_b, pair.seed, PrgKeying.RAW),
        Schedule.FIXED,
    ),
    "evaluation point": lambda pair: (pair.b, Schedule.SEQUENTIAL),
    "same settings": lambda pair: (pair.b, Schedule.FIXED),
}


def _unstamped(folder: Path) -> None:
    """The records as the original writes them: without a settings stamp."""
    for part in folder.iterdir():
        records = [json.loads(line) for line in part.read_text().splitlines()]
        part.write_text(
            "".join(json.dumps({k: v for k, v in r.items() if k != "prio_settings"}) + "\n" for r in records)
        )


def _aggregates(pair: Pair, partner: str, tmp: Path) -> Path:
    """Both servers' stages up to aggregate, B as the original with `partner` differing; the work folder."""
    lines = tampered_shares(pair, 30, seed=4)
    raw = {s: tmp / "raw" / s for s in PEER}
    for s in PEER:
        write_parts(lines[s], raw[s], 2)
    server_b, schedule_b = PARTNER[partner](pair)
    servers = {"A": (pair.a, Schedule.FIXED), "B": (server_b, schedule_b)}
    out = tmp / "out"

    def step(stage: str, s: str, prev: str | None) -> None:
        inputs = runner.Inputs(location(raw[s]))
        if prev:
            inputs = runner.Inputs(location(raw[s]), location(out / s / prev), location(out / PEER[s] / prev))
        server, schedule = servers[s]
        runner.run_stage(stage, server, inputs, location(out / s / stage), schedule=schedule)
        # The original neither stamps its records nor checks stamps: B sees none of A's either.
        _unstamped(out / s / stage)

    run_verify_chain(step)
    return out


def _publish(pair: Pair, out: Path, *extra: str):
    env = {
        "N_DATA": str(pair.config.n_data),
        "BATCH_ID": pair.config.batch_id.decode(),
        "SERVER_ID": "A",
        "PUBLIC_KEY_HEX_INTERNAL": keys.public_key_to_hex(pair.config.public_key_a),
        "PUBLIC_KEY_HEX_EXTERNAL": keys.public_key_to_hex(pair.config.public_key_b),
    }
    return run_inprocess(
        [
            "publish",
            "--input-internal",
            str(out / "A" / "aggregate"),
            "--input-external",
            str(out / "B" / "aggregate"),
            "--output",
            str(out / "A" / "publish"),
            *extra,
        ],
        env,
    )


@pytest.mark.parametrize("partner", sorted(PARTNER))
def test_publish_refuses_when_most_clients_failed(tmp_path, partner):
    pair = Pair(7)
    out = _aggregates(pair, partner, tmp_path)
    aggregate = json.loads(next((out / "A" / "aggregate").iterdir()).read_text())
    if partner == "same settings":
        assert 0 < aggregate["error"] < aggregate["total"] / 2  # the tampered shares only
        assert _publish(pair, out, "--max-error-ratio", "0.5").exit_code == 0
        return
    assert aggregate["error"] > aggregate["total"] / 2, aggregate
    refused = _publish(pair, out, "--max-error-ratio", "0.5")
    assert refused.exit_code == 2, refused.output
    assert refused.stdout == "Running publish\n"
    [line] = refused.stderr.splitlines()
    assert line.startswith("Error: server A, batch test-batch: refusing to publish: ")
    assert f"{aggregate['error']} of {aggregate['total']} of this server's clients failed" in line
    for cause in ("keys", "seed", "--prg-keying", "--evaluation-point"):
        assert cause in line
    assert not (out / "A" / "publish").exists()
    plain = _publish(pair, out)  # without the option, as the original: published, exit 0
    assert plain.exit_code == 0, plain.output
    published = json.loads(next((out / "A" / "publish").iterdir()).read_text())
    assert published["total"] - published["error"] == 0 or partner == "evaluation point", published


def test_max_error_ratio_is_a_bound_on_either_server(tmp_path):
    pair = Pair(7)
    out = _aggregates(pair, "same settings", tmp_path)
    aggregate = json.loads(next((out / "A" / "aggregate").iterdir()).read_text())
    ratio = aggregate["error"] / aggregate["total"]
    assert _publish(pair, out, "--max-error-ratio", f"{ratio + 1e-6:.6f}").exit_code == 0
    refused = _publish(pair, out, "--max-error-ratio", f"{ratio - 0.001:.6f}")
    assert refused.exit_code == 2 and "of this server's clients failed" in refused.stderr
    # The partner's count alone: its aggregate says more of its clients failed.
    partner = out / "B" / "aggregate"
    [part] = list(partner.iterdir())
    record = json.loads(part.read_text())
    record["error"] = record["total"]
    part.write_text(json.dumps(record) + "\n")
    refused = _publish(pair, out, "--max-error-ratio", "0.9")
    assert refused.exit_code == 2 and "of the partner's clients failed" in refused.stderr


# ------------------------------------------------------------------ rejects first, then outputs


def _server_env(pair: Pair, server: str) -> dict[str, str]:
    own, other = (
        (pair.private_a, pair.config.public_key_b)
        if server == "A"
        else (pair.private_b, pair.config.public_key_a)
    )
    return {
        "N_DATA": str(pair.config.n_data),
        "BATCH_ID": pair.config.batch_id.decode(),
        "SERVER_ID": server,
        "PRIVATE_KEY_HEX": keys.private_key_to_hex(own),
        "SHARED_SECRET": base64.b64encode(pair.seed).decode(),
        "PUBLIC_KEY_HEX_INTERNAL": keys.public_key_to_hex(own.public_key()),
        "PUBLIC_KEY_HEX_EXTERNAL": keys.public_key_to_hex(other),
        "EVALUATION_POINT": "fixed",
    }


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def _with_file_size_limit(limit: int) -> Callable[[], None]:
    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_files


@pytest.mark.parametrize("stage", ["verify1", "verify2", "aggregate"])
def test_a_stage_that_cannot_write_its_rejects_leaves_no_output(tmp_path, stage):
    """Files of at most 4 KiB may be written (as with a quota): every output file fits, the
    rejects list of 150 bad lines in the last input part does not. The stage exits 2, and no
    output has its final name, not even of the parts before."""
    pair = Pair(5)
    packets = Client(pair.config).encode_batch([[1, 0, 1, 1, 0]] * 8)
    raw = {s: tmp_path / "raw" / s for s in PEER}
    for s, index in (("A", 0), ("B", 1)):
        raw[s].mkdir(parents=True)
        for k in range(4):
            lines = [
                json.dumps(
                    {"id": f"c{2 * k + j}", "payload": base64.b64encode(packets[2 * k + j][index]).decode()}
                )
                for j in range(2)
            ]
            (raw[s] / f"part-{k:05d}.json").write_text("\n".join(lines) + "\n")
        (raw[s] / "part-00004.json").write_text("not json\n" * 150)
    out = tmp_path / "out"
    before = {"verify1": (), "verify2": ("verify1",), "aggregate": ("verify1", "verify2")}[stage]
    for earlier in before:
        for s, server in (("A", pair.a), ("B", pair.b)):
            inputs = runner.Inputs(location(raw[s]))
            if earlier == "verify2":
                inputs = runner.Inputs(
                    location(raw[s]), location(out / s / "verify1"), location(out / PEER[s] / "verify1")
                )
            runner.run_stage(earlier, server, inputs, location(out / s / earlier), schedule=Schedule.FIXED)
    args = [
        stage,
        "--input",
        str(raw["A"]),
        "--output",
        str(tmp_path / "result"),
        "--rejects",
        str(tmp_path / "rejects"),
    ]
    if stage != "verify1":
        previous = before[-1]
        args += ["--input-internal", str(out / "A" / previous), "--input-external", str(out / "B" / previous)]
    env = {k: v for k, v in os.environ.items() if k not in SCRIPT_VARIABLES}
    env.update(_server_env(pair, "A"), WORKERS="1")
    result = subprocess.run(
        [sys.executable, "-m", "prio_processor", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_with_file_size_limit(4096),
    )
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert "cannot write" in line and "rejects-" in line and "File too large" in line, line
    assert _files(tmp_path / "result") == []  # not even of the parts before the last
    assert _files(tmp_path / "rejects") == []
    # Without the limit the same stage writes every output and lists the 150 rejects.
    unlimited = subprocess.run(
        [sys.executable, "-m", "prio_processor", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert unlimited.returncode == 0, unlimited.stderr
    assert len((tmp_path / "rejects" / f"rejects-{stage}-A.ndjson").read_text().splitlines()) >= 150
