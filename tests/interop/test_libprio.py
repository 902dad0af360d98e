"""Interop with the real libprio C library (PyPI prio==0.2, raw PRG keying).

prio 0.2 predates libprio's range-bounded evaluation point (it draws r below p),
so its verify packets are compared with ours evaluated at its point.
"""

from __future__ import annotations

import array
import os
import random

import pytest

from prio_processor.engine import keys
from prio_processor.engine.client import Client
from prio_processor.engine.config import Config
from prio_processor.engine.field import MODULUS
from prio_processor.engine.prg import Prg, PrgKeying
from prio_processor.engine.server import Schedule, Server, TotalShare, Verify1, final_totals, is_valid

SIZES = [1, 7, 8, 100, 441, 2046]
CLIENTS = 6


class OracleWorld:
    """Two libprio servers and a libprio client for one configuration, with our keys alongside."""

    def __init__(self, lib, n_data: int) -> None:
        self.lib = lib
        self.n_data = n_data
        self.batch_id = b"interop-batch"
        self.seed = os.urandom(16)
        self.secret_a, self.public_a = lib.Keypair_new()
        self.secret_b, self.public_b = lib.Keypair_new()
        self.lib_config = lib.PrioConfig_new(n_data, self.public_a, self.public_b, self.batch_id)
        self.ours = {}
        pairs = (("A", self.secret_a, self.public_a), ("B", self.secret_b, self.public_b))
        for name, secret, public in pairs:
            self.ours[name] = keys.private_key_from_hex(lib.PrivateKey_export_hex(secret)[:64].decode())
            libprio_public = lib.PublicKey_export_hex(public)[:64].decode()
            assert keys.public_key_to_hex(self.ours[name].public_key()) == libprio_public
        self.config = Config(
            n_data,
            keys.public_key_from_hex(lib.PublicKey_export_hex(self.public_a)[:64].decode()),
            keys.public_key_from_hex(lib.PublicKey_export_hex(self.public_b)[:64].decode()),
            self.batch_id,
        )

    def our_server(self, name: str) -> Server:
        return Server(self.config, name, self.ours[name], self.seed, PrgKeying.RAW)

    def libprio_run(self, packets: list[tuple[bytes, bytes]]):
        """Run both libprio servers over the packets: (valid flags, totals, verify1/verify2 bytes)."""
        lib = self.lib
        servers = {
            "A": lib.PrioServer_new(self.lib_config, lib.PRIO_SERVER_A, self.secret_a, self.seed),
            "B": lib.PrioServer_new(self.lib_config, lib.PRIO_SERVER_B, self.secret_b, self.seed),
        }
        valid: list[bool] = []
        written: dict[str, dict[str, list[bytes]]] = {
            "verify1": {"A": [], "B": []},
            "verify2": {"A": [], "B": []},
        }
        for packet_a, packet_b in packets:
            verifiers = {}
            for name, packet in (("A", packet_a), ("B", packet_b)):
                verifiers[name] = lib.PrioVerifier_new(servers[name])
                lib.PrioVerifier_set_data(verifiers[name], packet)
            p1 = {}
            for name in "AB":
                p1[name] = lib.PrioPacketVerify1_new()
                lib.PrioPacketVerify1_set_data(p1[name], verifiers[name])
                written["verify1"][name].append(lib.PrioPacketVerify1_write(p1[name]))
            p2 = {}
            for name in "AB":
                p2[name] = lib.PrioPacketVerify2_new()
                lib.PrioPacketVerify2_set_data(p2[name], verifiers[name], p1["A"], p1["B"])
                written["verify2"][name].append(lib.PrioPacketVerify2_write(p2[name]))
            try:
                lib.PrioVerifier_isValid(verifiers["A"], p2["A"], p2["B"])
                ok = True
            except RuntimeError:
                ok = False
            valid.append(ok)
            if ok:
                for name in "AB":
                    lib.PrioServer_aggregate(servers[name], verifiers[name])
        totals = {}
        for name in "AB":
            totals[name] = lib.PrioTotalShare_new()
            lib.PrioTotalShare_set_data(totals[name], servers[name])
        final = list(array.array("L", lib.PrioTotalShare_final(self.lib_config, totals["A"], totals["B"])))
        total_bytes = {name: lib.PrioTotalShare_write(totals[name]) for name in "AB"}
        return valid, final[: self.n_data], written, total_bytes


def _vectors(n_data: int) -> list[list[int]]:
    rng = random.Random(n_data)
    return [[rng.randint(0, 1) for _ in range(n_data)] for _ in range(CLIENTS)]


def _sums(vectors: list[list[int]]) -> list[int]:
    return [sum(column) for column in zip(*vectors)]


@pytest.mark.parametrize("n_data", SIZES)
def test_libprio_servers_accept_our_client(libprio, n_data):
    world = OracleWorld(libprio, n_data)
    vectors = _vectors(n_data)
    packets = Client(world.config, PrgKeying.RAW).encode_batch(vectors)
    valid, totals, _, _ = world.libprio_run(packets)
    assert valid == [True] * CLIENTS
    assert totals == _sums(vectors)


@pytest.mark.parametrize("n_data", SIZES)
@pytest.mark.parametrize("schedule", list(Schedule))
def test_our_servers_accept_libprio_client(libprio, n_data, schedule):
    world = OracleWorld(libprio, n_data)
    vectors = _vectors(n_data)
    packets = [libprio.PrioClient_encode(world.lib_config, bytes(v)) for v in vectors]
    servers = {name: world.our_server(name) for name in "AB"}
    opened = {name: [servers[name].open(p["AB".index(name)]) for p in packets] for name in "AB"}
    points = {name: servers[name].points(schedule) for name in "AB"}
    drawn = {name: [next(points[name]) for _ in packets] for name in "AB"}
    v1 = {name: servers[name].verify1(opened[name], drawn[name]) for name in "AB"}
    v2 = {name: servers[name].verify2(opened[name], drawn[name], v1[name], v1["B" if name == "A" else "A"])
          for name in "AB"}
    assert [is_valid(a, b) for a, b in zip(v2["A"], v2["B"])] == [True] * CLIENTS
    totals = {name: TotalShare(n_data, name) for name in "AB"}
    for name in "AB":
        totals[name].add(servers[name].data_shares(opened[name]))
    assert final_totals(totals["A"], totals["B"]) == _sums(vectors)


@pytest.mark.parametrize("n_data", [1, 8, 441])
def test_verify_packets_and_total_shares_match_libprio_bytes(libprio, n_data):
    """At libprio 0.2's own points (first draws below p), every packet we write equals libprio's."""
    world = OracleWorld(libprio, n_data)
    vectors = _vectors(n_data)
    packets = [libprio.PrioClient_encode(world.lib_config, bytes(v)) for v in vectors]
    valid, _, written, total_bytes = world.libprio_run(packets)
    prg = Prg(world.seed)  # raw keying; one draw per packet, shared by both servers
    points = [prg.draw() for _ in packets]
    servers = {name: world.our_server(name) for name in "AB"}
    opened = {name: [servers[name].open(p["AB".index(name)]) for p in packets] for name in "AB"}
    ours_v1 = {name: servers[name].verify1(opened[name], points) for name in "AB"}
    for name in "AB":
        assert [v.to_bytes() for v in ours_v1[name]] == written["verify1"][name]
    for name in "AB":
        other = "B" if name == "A" else "A"
        ours_v2 = servers[name].verify2(opened[name], points, ours_v1[name], ours_v1[other])
        assert [v.to_bytes() for v in ours_v2] == written["verify2"][name]
    for name in "AB":
        total = TotalShare(n_data, name)
        total.add(servers[name].data_shares([p for p, ok in zip(opened[name], valid) if ok]))
        assert total.to_bytes() == total_bytes[name]
        assert TotalShare.from_bytes(total_bytes[name], n_data).values() == total.values()


def test_libprio_reads_our_verify_packets(libprio):
    world = OracleWorld(libprio, 8)
    packet = Verify1(12345, MODULUS - 1).to_bytes()
    holder = libprio.PrioPacketVerify1_new()
    libprio.PrioPacketVerify1_read(holder, packet, world.lib_config)
    assert libprio.PrioPacketVerify1_write(holder) == packet



TRAILING = {"a zero byte": b"\x00", "text": b"junk after the packet", "another packet": b"\x91\xa1\x05"}


@pytest.mark.parametrize("trailing", sorted(TRAILING))
def test_bytes_after_a_partners_verify1_packet_are_ignored_as_libprio_ignores_them(libprio, trailing):
    """libprio reads a verify1 packet's two elements and ignores what follows them; so do we,
    so a partner running the original gets the same verify2 from us as from libprio."""
    extra = TRAILING[trailing]
    world = OracleWorld(libprio, 8)
    packets = [libprio.PrioClient_encode(world.lib_config, bytes(v)) for v in _vectors(8)]
    _, _, written, _ = world.libprio_run(packets)
    prg = Prg(world.seed)
    points = [prg.draw() for _ in packets]
    server_a = world.our_server("A")
    opened = [server_a.open(p[0]) for p in packets]
    own = server_a.verify1(opened, points)
    partner = []
    for packet in written["verify1"]["B"]:
        holder = libprio.PrioPacketVerify1_new()
        libprio.PrioPacketVerify1_read(holder, packet + extra, world.lib_config)  # accepted
        assert libprio.PrioPacketVerify1_write(holder) == packet  # and read as without the bytes
        partner.append(Verify1.from_bytes(packet + extra))
        assert partner[-1] == Verify1.from_bytes(packet)
    ours = server_a.verify2(opened, points, own, partner)
    assert [v.to_bytes() for v in ours] == written["verify2"]["A"]
