"""The stage functions reproduce the original's files for every vector case, byte for byte."""

from __future__ import annotations

import json

import pytest

from prio_processor.engine.server import Schedule
from prio_processor.pipeline import stages
from prio_processor.pipeline.tally import Tally

from tests_support import PEER, run_verify_chain, vector_server
from vectors import VECTORS, Case, full_chain_cases, read_payloads

CHAIN_CASES = [(c, s) for c in full_chain_cases() for s in c.schedules]


def _by_id(records: list[dict]) -> dict[str, str]:
    return {r["id"]: r["payload"] for r in records}


def _index(records: list[dict]) -> stages.Index:
    return stages.load_index(records, Tally("index"))


def run_chain(case: Case, schedule: Schedule) -> tuple[dict, dict, dict]:
    """(stage outputs, tallies, aggregate records), keyed by (stage, server)."""
    servers = {s: vector_server(case, s) for s in PEER}
    outputs: dict[tuple[str, str], list[dict]] = {}
    tallies: dict[tuple[str, str], Tally] = {}
    aggregates = {}

    def step(stage: str, s: str, previous: str | None) -> None:
        tally = tallies[stage, s] = Tally(stage)
        if previous is None:
            outputs[stage, s] = []
            stages.verify1(servers[s], schedule, case.raw(s), outputs[stage, s].append, tally)
            return
        own, peer = _index(outputs[previous, s]), _index(outputs[previous, PEER[s]])
        if stage == "verify2":
            outputs[stage, s] = []
            stages.verify2(servers[s], schedule, case.raw(s), own, peer, outputs[stage, s].append, tally)
        else:
            total = stages.aggregate(servers[s], case.raw(s), own, peer, tally)
            aggregates[s] = stages.aggregate_record(servers[s], total, tally)

    run_verify_chain(step)
    return outputs, tallies, aggregates


@pytest.mark.parametrize("case,schedule", CHAIN_CASES, ids=[f"{c.name}-{s}" for c, s in CHAIN_CASES])
def test_chain_reproduces_original(case: Case, schedule: str):
    fixed = schedule == "fixed"
    outputs, tallies, aggregates = run_chain(case, Schedule(schedule))
    for s in PEER:
        for stage in ("verify1", "verify2"):
            assert _by_id(outputs[stage, s]) == read_payloads(case.intermediate(s, stage, fixed)), (
                f"{stage} {s}"
            )
        original = json.loads(case.intermediate(s, "aggregate", fixed).read_text())
        produced = aggregates[s]
        assert (produced["payload"], produced["error"], produced["total"]) == (
            original["payload"],
            original["error"],
            original["total"],
        )
    if not fixed:
        for s, per_stage in case.manifest.get("cli_counts", {}).items():
            for stage, counts in per_stage.items():
                assert (tallies[stage, s].errors, tallies[stage, s].total) == (
                    counts["error"],
                    counts["total"],
                )
    for s in PEER:
        own, peer = aggregates[s], aggregates[PEER[s]]
        published = stages.publish(case.config, "AB".index(s), [own], [peer])
        assert published["payload"] == case.processed(s, fixed)["payload"]
        if not fixed and "expected_published_payload" in case.manifest:
            assert published["payload"] == case.manifest["expected_published_payload"]


def test_malicious_clients_are_rejected_and_excluded():
    case = next(c for c in full_chain_cases() if c.name == "prg-hashed/d_bad_input")
    _, tallies, aggregates = run_chain(case, Schedule.SEQUENTIAL)
    malicious = [i for i in case.manifest["ids"] if i["kind"].startswith("malicious")]
    assert len(malicious) == 4
    assert tallies["aggregate", "A"].reasons["invalid_proof"] == 4
    published = stages.publish(case.config, 0, [aggregates["A"]], [aggregates["B"]])
    accepted = [i for i in case.manifest["ids"] if i["accepted_by_original_cli"]]
    expected = [sum(i["plaintext"][k] for i in accepted) for k in range(case.config.n_data)]
    assert published["payload"] == expected


def test_fixed_schedule_survives_one_sided_failure():
    """d_desync: the sequential schedule loses every packet after line 3; fixed keeps them."""
    case = next(c for c in full_chain_cases() if c.name == "prg-hashed/d_desync")
    _, _, aggregates = run_chain(case, Schedule.FIXED)
    published = stages.publish(case.config, 0, [aggregates["A"]], [aggregates["B"]])
    assert published["payload"] == case.manifest["sum_if_all_honest_packets_were_accepted"]
    assert published["error"] == 1


@pytest.mark.parametrize("server_id,rejected", [("A", {"bad_base64": 1}), ("B", {})])
def test_base64_crash_case_is_counted_not_fatal(server_id, rejected):
    """The original crashed on bad padding after two lines; we count it and go on."""
    case = Case(VECTORS / "prg-hashed" / "d_base64_crash")
    produced: list[stages.Record] = []
    tally = Tally("verify1")
    stages.verify1(
        vector_server(case, server_id), Schedule.SEQUENTIAL, case.raw(server_id), produced.append, tally
    )
    assert tally.total == 4 and dict(tally.reasons) == rejected
    assert len(produced) == 4 - len(rejected)
    expected = read_payloads(case.intermediate(server_id, "verify1"))
    assert {k: v for k, v in _by_id(produced).items() if k in expected} == expected


def test_a_second_share_under_a_verified_id_is_not_counted():
    """Verification packets are bound to the share they were made from: a malformed copy of
    a valid share, sent first under the same id, fails verify1 and must not be aggregated."""
    import base64

    from prio_processor.engine import codec, keys, seal

    case = Case(VECTORS / "prg-hashed" / "c_n8")
    cfg = case.config
    shares = {s: case.raw(s) for s in PEER}
    honest = shares["A"][0]
    private_a = keys.private_key_from_hex(case.keys("A")["private_key"])
    plain = seal.decrypt(private_a, base64.b64decode(honest["payload"]))
    opened = codec.read_client_packet(plain, cfg.batch_id, 0, cfg.n_data, cfg.n_points)
    assert opened.data_rows is not None and opened.h_rows is not None
    body = codec.pack_elements(opened.data_rows) + codec.pack_elements(opened.h_rows[:-1])  # h one short
    bad = codec.pack_client_packet(cfg.batch_id, opened.triple, opened.f0, opened.g0, opened.h0, 0, body)
    impostor = {"id": honest["id"], "payload": base64.b64encode(seal.encrypt(cfg.public_key_a, bad)).decode()}
    shares["A"] = [impostor] + shares["A"]
    shares["B"] = [shares["B"][0]] + shares["B"]
    servers = {s: vector_server(case, s) for s in PEER}
    out: dict[tuple[str, str], list[stages.Record]] = {}
    for s in PEER:
        out["verify1", s] = []
        stages.verify1(servers[s], Schedule.FIXED, shares[s], out["verify1", s].append, Tally("verify1"))
    for s in PEER:
        out["verify2", s] = []
        stages.verify2(
            servers[s],
            Schedule.FIXED,
            shares[s],
            _index(out["verify1", s]),
            _index(out["verify1", PEER[s]]),
            out["verify2", s].append,
            Tally("verify2"),
        )
    totals = {}
    for s in PEER:
        tally = Tally("aggregate")
        total = stages.aggregate(
            servers[s], shares[s], _index(out["verify2", s]), _index(out["verify2", PEER[s]]), tally
        )
        totals[s] = stages.aggregate_record(servers[s], total, tally)
    published = stages.publish(cfg, 0, [totals["A"]], [totals["B"]])
    assert published["payload"] == case.manifest["expected_published_payload"]
