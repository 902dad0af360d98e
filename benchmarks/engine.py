"""Per-packet cost of each stage: this engine against real libprio (PyPI prio==0.2), same run.

Both sides are driven the way the command line drives them: every server stage
opens (decrypts, decodes, for B re-expands) each packet again, as libprio's
PrioVerifier_set_data does in every stage of the original. Ours works in
batches of the pipeline's size; libprio one packet at a time. Ours first runs
one untimed batch through every stage, so that one-time costs (tables,
the allocator growing its heap) do not count as per-packet costs.

    python benchmarks/engine.py [--packets 500] [--sizes 441,2046] [--schedule sequential] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time
import tracemalloc

from prio_processor.engine import codec, keys
from prio_processor.engine.client import Client
from prio_processor.engine.config import Config
from prio_processor.engine.prg import PrgKeying
from prio_processor.engine.server import Schedule, Server, TotalShare, is_valid
from prio_processor.pipeline.stages import BATCH_SIZE

STAGES = ("encode", "verify1", "verify2", "aggregate")


def _batches(items, size=BATCH_SIZE):
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Timer:
    """Seconds per named step, by `clock` (wall time unless told; CPU time is `time.process_time`)."""

    def __init__(self, clock=time.perf_counter) -> None:
        self.seconds: dict[str, float] = {}
        self.clock = clock

    def run(self, name: str, func):
        gc.collect()
        start = self.clock()
        result = func()
        self.seconds[name] = self.seconds.get(name, 0.0) + self.clock() - start
        return result


def bench_ours(n_data: int, vectors, schedule: Schedule, timer: Timer) -> list[int]:
    private_a, public_a = keys.generate_keypair()
    private_b, public_b = keys.generate_keypair()
    seed = os.urandom(16)
    config = Config(n_data, public_a, public_b, b"bench")
    client = Client(config, PrgKeying.RAW)
    packets = timer.run("encode", lambda: client.encode_batch(vectors))
    servers = {"A": Server(config, "A", private_a, seed, PrgKeying.RAW),
               "B": Server(config, "B", private_b, seed, PrgKeying.RAW)}

    def open_all(name, arrays=codec.BOTH_ARRAYS):
        index = "AB".index(name)
        return [servers[name].open(p[index], arrays) for p in packets]

    def points(name):
        stream = servers[name].points(schedule)
        return [next(stream) for _ in packets]

    v1 = {}
    for name in "AB":
        def verify1(name=name):
            opened, drawn = open_all(name), points(name)
            return [
                v for ob, pb in zip(_batches(opened), _batches(drawn)) for v in servers[name].verify1(ob, pb)
            ]
        v1[name] = timer.run(f"verify1 {name}", verify1)
    v2 = {}
    for name in "AB":
        other = "B" if name == "A" else "A"

        def verify2(name=name, other=other):
            opened, drawn = open_all(name, frozenset({"h"})), points(name)
            out = []
            batches = zip(_batches(opened), _batches(drawn), _batches(v1[name]), _batches(v1[other]))
            for ob, pb, mine, theirs in batches:
                out += servers[name].verify2(ob, pb, mine, theirs)
            return out
        v2[name] = timer.run(f"verify2 {name}", verify2)
    totals = {}
    for name in "AB":
        def aggregate(name=name):
            total = TotalShare(n_data, name)
            opened = open_all(name, frozenset({"data"}))
            valid = [p for p, a, b in zip(opened, v2["A"], v2["B"]) if is_valid(a, b)]
            for chunk in _batches(valid):
                total.add(servers[name].data_shares(chunk))
            return total
        totals[name] = timer.run(f"aggregate {name}", aggregate)
    return [(a + b) % (2**87 + 2**19 + 1) for a, b in zip(totals["A"].values(), totals["B"].values())]


def bench_libprio(lib, n_data: int, vectors, timer: Timer) -> list[int]:
    import array

    secret_a, public_a = lib.Keypair_new()
    secret_b, public_b = lib.Keypair_new()
    seed = os.urandom(16)
    config = lib.PrioConfig_new(n_data, public_a, public_b, b"bench")
    packets = timer.run("encode", lambda: [lib.PrioClient_encode(config, bytes(v)) for v in vectors])
    secrets = {"A": secret_a, "B": secret_b}
    ids = {"A": lib.PRIO_SERVER_A, "B": lib.PRIO_SERVER_B}

    def server(name):
        return lib.PrioServer_new(config, ids[name], secrets[name], seed)

    v1 = {}
    for name in "AB":
        def verify1(name=name):
            s = server(name)
            v, p = lib.PrioVerifier_new(s), lib.PrioPacketVerify1_new()
            out = []
            for packet in packets:
                lib.PrioVerifier_set_data(v, packet["AB".index(name)])
                lib.PrioPacketVerify1_set_data(p, v)
                out.append(lib.PrioPacketVerify1_write(p))
            return out
        v1[name] = timer.run(f"verify1 {name}", verify1)
    v2 = {}
    for name in "AB":
        def verify2(name=name):
            s = server(name)
            v, p = lib.PrioVerifier_new(s), lib.PrioPacketVerify2_new()
            pa, pb = lib.PrioPacketVerify1_new(), lib.PrioPacketVerify1_new()
            out = []
            for k, packet in enumerate(packets):
                lib.PrioVerifier_set_data(v, packet["AB".index(name)])
                lib.PrioPacketVerify1_read(pa, v1["A"][k], config)
                lib.PrioPacketVerify1_read(pb, v1["B"][k], config)
                lib.PrioPacketVerify2_set_data(p, v, pa, pb)
                out.append(lib.PrioPacketVerify2_write(p))
            return out
        v2[name] = timer.run(f"verify2 {name}", verify2)
    totals = {}
    for name in "AB":
        def aggregate(name=name):
            s = server(name)
            v = lib.PrioVerifier_new(s)
            pa, pb = lib.PrioPacketVerify2_new(), lib.PrioPacketVerify2_new()
            for k, packet in enumerate(packets):
                lib.PrioVerifier_set_data(v, packet["AB".index(name)])
                lib.PrioPacketVerify2_read(pa, v2["A"][k], config)
                lib.PrioPacketVerify2_read(pb, v2["B"][k], config)
                lib.PrioVerifier_isValid(v, pa, pb)
                lib.PrioServer_aggregate(s, v)
            t = lib.PrioTotalShare_new()
            lib.PrioTotalShare_set_data(t, s)
            return s, t
        totals[name] = timer.run(f"aggregate {name}", aggregate)
    final = lib.PrioTotalShare_final(config, totals["A"][1], totals["B"][1])
    return list(array.array("L", final))[:n_data]


def peak_memory(n_data: int, packets: int, schedule: Schedule) -> int:
    """Peak bytes allocated while server A verifies `packets` packets (verify1), after encoding."""
    vectors = [[1, 0] * (n_data // 2) + [1] * (n_data % 2)] * packets
    private_a, public_a = keys.generate_keypair()
    _, public_b = keys.generate_keypair()
    config = Config(n_data, public_a, public_b, b"bench")
    server = Server(config, "A", private_a, os.urandom(16))
    client = Client(config)
    stream = server.points(schedule)
    tracemalloc.start()
    peak = 0
    for chunk in _batches(vectors):
        opened = [server.open(a) for a, _ in client.encode_batch(chunk)]
        server.verify1(opened, [next(stream) for _ in opened])
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.reset_peak()
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--packets", type=int, default=500)
    parser.add_argument("--sizes", default="441,2046")
    parser.add_argument("--schedule", default="sequential", choices=[s.value for s in Schedule])
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of ours; the fastest counts (this VM is noisy)"
    )
    args = parser.parse_args()
    try:
        from prio import libprio
    except ImportError:
        sys.exit("the libprio oracle is missing: run `make oracle`")
    libprio.Prio_init()
    rows = []
    for n_data in map(int, args.sizes.split(",")):
        rng = random.Random(n_data)
        vectors = [[rng.randint(0, 1) for _ in range(n_data)] for _ in range(args.packets)]
        expected = [sum(c) for c in zip(*vectors)]
        theirs = Timer()
        bench_ours(n_data, vectors[:BATCH_SIZE], Schedule(args.schedule), Timer())  # warm-up
        runs = []
        for _ in range(args.repeat):
            runs.append(Timer())
            assert bench_ours(n_data, vectors, Schedule(args.schedule), runs[-1]) == expected
        assert bench_libprio(libprio, n_data, vectors, theirs) == expected
        for name in runs[0].seconds:
            mine = min(run.seconds[name] for run in runs) / args.packets * 1e3
            lib = theirs.seconds[name] / args.packets * 1e3
            rows.append((n_data, name, lib, mine, lib / mine))
    print(f"{args.packets} packets per size, evaluation point schedule {args.schedule}, one core, "
          f"ours: fastest of {args.repeat} runs")
    print("| n_data | stage | libprio ms/packet | ours ms/packet | speed-up |")
    print("| --- | --- | --- | --- | --- |")
    for n_data, name, lib, mine, ratio in rows:
        print(f"| {n_data} | {name} | {lib:.3f} | {mine:.3f} | {ratio:.0f}x |")
    for packets in (BATCH_SIZE, 4 * BATCH_SIZE):
        peak = peak_memory(2046, packets, Schedule(args.schedule))
        print(f"peak memory of server A's verify1, n_data 2046, {packets} packets: {peak / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
