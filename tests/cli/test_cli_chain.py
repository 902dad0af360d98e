"""The command line, run as the original's scripts/test-cli-integration runs it, reproduces
the original's files for every vector case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner import RUNNERS
from tests_support import PEER, run_verify_chain
from vectors import Case, full_chain_cases, read_payloads

CASES = [(c, s) for c in full_chain_cases() for s in c.schedules]
# A real process per command takes seconds, so only these cases also run as subprocesses:
# between them both PRG keyings, both schedules and rejected records. The in-process runner
# takes every case.
SUBPROCESS_CASES = {("prg-raw/d_bad_input", "sequential"), ("prg-hashed/e_fixed_point", "fixed")}
CHAIN_RUNS = [
    pytest.param(runner, c, s, id=f"{c.name}-{s}-{runner}")
    for c, s in CASES
    for runner in sorted(RUNNERS)
    if runner != "subprocess" or (c.name, s) in SUBPROCESS_CASES
]


def server_env(case: Case, server: str, schedule: str) -> dict[str, str]:
    """A server's settings through the environment, as bin/process passes them."""
    return {
        "N_DATA": str(case.settings["n_data"]),
        "BATCH_ID": case.settings["batch_id"],
        "SERVER_ID": server,
        "PRIVATE_KEY_HEX": case.keys(server)["private_key"],
        "SHARED_SECRET": case.shared_seed_b64,
        "PUBLIC_KEY_HEX_INTERNAL": case.keys(server)["public_key"],
        "PUBLIC_KEY_HEX_EXTERNAL": case.keys(PEER[server])["public_key"],
        "PRG_KEYING": case.keying.value,
        "EVALUATION_POINT": schedule,
    }


def run_chain(run, case: Case, schedule: str, work: Path) -> dict[str, Path]:
    """Both servers through every stage; returns the working folder of each server."""
    folders = {s: work / f"server_{s.lower()}" for s in PEER}
    def step(stage: str, s: str, inputs: str | None) -> None:
        args = [stage, "--input", str(case.raw_path(s)), "--output", str(folders[s] / "internal" / stage)]
        if inputs:
            args += [
                "--input-internal",
                str(folders[s] / "internal" / inputs / "data.ndjson"),
                "--input-external",
                str(folders[PEER[s]] / "internal" / inputs / "data.ndjson"),
            ]
        env = server_env(case, s, schedule)
        if stage == "aggregate":
            env.pop("EVALUATION_POINT")
        result = run(args, env)
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(f"Running {stage}\n")

    run_verify_chain(step)
    for s in PEER:
        env = {
            k: v
            for k, v in server_env(case, s, schedule).items()
            if k in ("N_DATA", "BATCH_ID", "SERVER_ID", "PUBLIC_KEY_HEX_INTERNAL", "PUBLIC_KEY_HEX_EXTERNAL")
        }
        result = run(
            [
                "publish",
                "--input-internal",
                str(folders[s] / "internal" / "aggregate" / "data.ndjson"),
                "--input-external",
                str(folders[PEER[s]] / "internal" / "aggregate" / "data.ndjson"),
                "--output",
                str(folders[s] / "processed"),
            ],
            env,
        )
        assert result.exit_code == 0, result.output
    return folders


def test_subprocess_cases_are_vector_cases():
    """Renamed or removed vectors must not silently drop the subprocess runs."""
    assert {(c.name, s) for c, s in CASES} >= SUBPROCESS_CASES


@pytest.mark.parametrize("runner,case,schedule", CHAIN_RUNS)
def test_chain(runner, case, schedule, tmp_path):
    fixed = schedule == "fixed"
    folders = run_chain(RUNNERS[runner], case, schedule, tmp_path)
    for s in PEER:
        for stage in ("verify1", "verify2"):
            produced = read_payloads(folders[s] / "internal" / stage / "data.ndjson")
            assert produced == read_payloads(case.intermediate(s, stage, fixed)), f"{stage} of {s}"
        produced = json.loads((folders[s] / "internal" / "aggregate" / "data.ndjson").read_text())
        original = json.loads(case.intermediate(s, "aggregate", fixed).read_text())
        assert [produced[k] for k in ("payload", "error", "total")] == [
            original[k] for k in ("payload", "error", "total")
        ]
        published = json.loads((folders[s] / "processed" / "data.ndjson").read_text())
        assert published["payload"] == case.processed(s, fixed)["payload"]
        assert set(published) == {"id", "timestamp", "payload", "error", "total"}
        assert (published["error"], published["total"]) == (original["error"], original["total"])
