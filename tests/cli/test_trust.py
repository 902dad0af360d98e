"""Never publish a silent zero: a partner that runs the original (whose records carry no settings
stamp) with another seed, PRG keying or evaluation schedule fails every client; publish with
--max-error-ratio refuses instead of publishing zeros."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from prio_processor.engine import keys
from prio_processor.engine.prg import PrgKeying
from prio_processor.engine.server import Schedule, Server
from prio_processor.pipeline import runner
from prio_processor.storage import location

from runner import run_inprocess
from tests_support import PEER, Pair, run_verify_chain, tampered_shares, write_parts

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
