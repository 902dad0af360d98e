"""The whole command-line chain, both servers, every stage: this CLI against libprio.

Encodes the clients once (`prio encode-shares --prg-keying raw`, which libprio
prio 0.2 accepts), then runs verify1, verify2, aggregate and publish for
servers A and B twice: with `prio` as subprocesses, and with libprio driven as
the original command line drove it (one server per command, JSON lines in and
out, every stage decrypting each share again). Prints wall time and peak
memory per stage, and the speed-up.

    python benchmarks/chain.py [--clients 2000] [--n-data 2046] [--no-libprio]
"""

from __future__ import annotations

import argparse
import base64
import compileall
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PEER = {"A": "B", "B": "A"}


def run_prio(args: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak resident memory (bytes) of one `prio` process."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "prio_processor", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    _, err = proc.communicate()
    if status != 0:
        sys.exit(f"prio {args[0]} failed:\n{err.decode()}")
    return elapsed, usage.ru_maxrss * 1024


def ours(work: Path, keys: dict, n_data: int) -> dict[str, tuple[float, int]]:
    results = {}
    chain = (("verify1", None), ("verify2", "verify1"), ("aggregate", "verify2"), ("publish", "aggregate"))
    for stage, prev in chain:
        for s in "AB":
            env = dict(os.environ, N_DATA=str(n_data), BATCH_ID="bench", SERVER_ID=s, PRG_KEYING="raw",
                       PRIVATE_KEY_HEX=keys[s]["private_key"], SHARED_SECRET=keys["seed"],
                       PUBLIC_KEY_HEX_INTERNAL=keys[s]["public_key"],
                       PUBLIC_KEY_HEX_EXTERNAL=keys[PEER[s]]["public_key"])
            args = [stage, "--output", str(work / "ours" / s / stage)]
            if stage != "publish":
                args += ["--input", str(work / f"raw_{s.lower()}" / "data.ndjson")]
            if prev:
                args += ["--input-internal", str(work / "ours" / s / prev / "data.ndjson"),
                         "--input-external", str(work / "ours" / PEER[s] / prev / "data.ndjson")]
            if stage == "publish":
                env.pop("PRG_KEYING")
            results[f"{stage} {s}"] = run_prio(args, env)
    return results


def libprio_chain(work: Path, keys: dict, n_data: int) -> dict[str, tuple[float, int]]:
    """The original command line's logic on libprio, in this process."""
    import array
    import resource

    from prio import libprio as lib

    lib.Prio_init()
    public = {s: lib.PublicKey_import_hex(keys[s]["public_key"].encode()) for s in "AB"}
    secret = {s: lib.PrivateKey_import_hex(keys[s]["private_key"].encode(), keys[s]["public_key"].encode())
              for s in "AB"}
    seed = base64.b64decode(keys["seed"])
    config = lib.PrioConfig_new(n_data, public["A"], public["B"], b"bench")
    out = work / "libprio"
    results = {}

    def read(path: Path) -> list[dict]:
        with open(path) as f:
            return [json.loads(line) for line in f]

    def write(path: Path, records: list[dict]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")

    def server(s: str):
        index = lib.PRIO_SERVER_A if s == "A" else lib.PRIO_SERVER_B
        return lib.PrioServer_new(config, index, secret[s], seed)

    def timed(name: str, func) -> None:
        start = time.perf_counter()
        func()
        elapsed = time.perf_counter() - start
        results[name] = (elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)

    for s in "AB":
        def verify1(s=s):
            srv = server(s)
            verifier, packet, rows = lib.PrioVerifier_new(srv), lib.PrioPacketVerify1_new(), []
            for datum in read(work / f"raw_{s.lower()}" / "data.ndjson"):
                lib.PrioVerifier_set_data(verifier, base64.b64decode(datum["payload"]))
                lib.PrioPacketVerify1_set_data(packet, verifier)
                payload = base64.b64encode(lib.PrioPacketVerify1_write(packet)).decode()
                rows.append({"id": datum["id"], "payload": payload})
            write(out / s / "verify1.ndjson", rows)
        timed(f"verify1 {s}", verify1)
    for s in "AB":
        def verify2(s=s):
            srv = server(s)
            verifier, packet = lib.PrioVerifier_new(srv), lib.PrioPacketVerify2_new()
            own, peer = lib.PrioPacketVerify1_new(), lib.PrioPacketVerify1_new()
            internal = {r["id"]: r["payload"] for r in read(out / s / "verify1.ndjson")}
            external = {r["id"]: r["payload"] for r in read(out / PEER[s] / "verify1.ndjson")}
            rows = []
            for datum in read(work / f"raw_{s.lower()}" / "data.ndjson"):
                lib.PrioVerifier_set_data(verifier, base64.b64decode(datum["payload"]))
                lib.PrioPacketVerify1_read(own, base64.b64decode(internal[datum["id"]]), config)
                lib.PrioPacketVerify1_read(peer, base64.b64decode(external[datum["id"]]), config)
                lib.PrioPacketVerify2_set_data(packet, verifier, own, peer)
                payload = base64.b64encode(lib.PrioPacketVerify2_write(packet)).decode()
                rows.append({"id": datum["id"], "payload": payload})
            write(out / s / "verify2.ndjson", rows)
        timed(f"verify2 {s}", verify2)
    totals = {}
    for s in "AB":
        def aggregate(s=s):
            srv = server(s)
            verifier = lib.PrioVerifier_new(srv)
            own, peer = lib.PrioPacketVerify2_new(), lib.PrioPacketVerify2_new()
            internal = {r["id"]: r["payload"] for r in read(out / s / "verify2.ndjson")}
            external = {r["id"]: r["payload"] for r in read(out / PEER[s] / "verify2.ndjson")}
            for datum in read(work / f"raw_{s.lower()}" / "data.ndjson"):
                lib.PrioVerifier_set_data(verifier, base64.b64decode(datum["payload"]))
                lib.PrioPacketVerify2_read(own, base64.b64decode(internal[datum["id"]]), config)
                lib.PrioPacketVerify2_read(peer, base64.b64decode(external[datum["id"]]), config)
                lib.PrioVerifier_isValid(verifier, own, peer)
                lib.PrioServer_aggregate(srv, verifier)
            share = lib.PrioTotalShare_new()
            lib.PrioTotalShare_set_data(share, srv)
            totals[s] = lib.PrioTotalShare_write(share)
        timed(f"aggregate {s}", aggregate)
    for s in "AB":
        def publish(s=s):
            shares = {}
            for name in "AB":
                shares[name] = lib.PrioTotalShare_new()
                lib.PrioTotalShare_read(shares[name], totals[name], config)
            final = lib.PrioTotalShare_final(config, shares["A"], shares["B"])
            write(out / s / "publish.ndjson", [{"payload": list(array.array("L", final))[:n_data]}])
        timed(f"publish {s}", publish)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--n-data", type=int, default=2046)
    parser.add_argument("--no-libprio", action="store_true", help="time this CLI only (large runs)")
    args = parser.parse_args()
    # Byte code as an installed package has it (an editable install under
    # PYTHONDONTWRITEBYTECODE would compile every module in every process).
    compileall.compile_dir(Path(__file__).resolve().parents[1] / "prio_processor", quiet=1)
    with tempfile.TemporaryDirectory(prefix="prio-chain-") as tmp:
        work = Path(tmp)
        prio = [sys.executable, "-m", "prio_processor"]
        keys = {s: json.loads(subprocess.check_output([*prio, "keygen"])) for s in "AB"}
        keys["seed"] = json.loads(subprocess.check_output([*prio, "shared-seed"]))["shared_seed"]
        # Streamed, so that this process stays small: a child's peak memory counts
        # the parent's pages it was forked with.
        rng = random.Random(1)
        expected = [0] * args.n_data
        with open(work / "client.ndjson", "w") as f:
            for _ in range(args.clients):
                vector = [rng.randint(0, 1) for _ in range(args.n_data)]
                expected = [total + bit for total, bit in zip(expected, vector)]
                f.write(json.dumps({"payload": vector}) + "\n")
        encode = run_prio(["encode-shares", "--n-data", str(args.n_data), "--batch-id", "bench",
                           "--prg-keying", "raw",
                           "--public-key-hex-internal", keys["A"]["public_key"],
                           "--public-key-hex-external", keys["B"]["public_key"],
                           "--input", str(work / "client.ndjson"), "--output-A", str(work / "raw_a"),
                           "--output-B", str(work / "raw_b")], dict(os.environ))
        (work / "raw_a" / "client.ndjson").rename(work / "raw_a" / "data.ndjson")
        (work / "raw_b" / "client.ndjson").rename(work / "raw_b" / "data.ndjson")
        mine = ours(work, keys, args.n_data)
        published = json.loads((work / "ours" / "A" / "publish" / "data.ndjson").read_text())
        assert published["payload"] == expected, "our chain published wrong counts"
        theirs = {} if args.no_libprio else libprio_chain(work, keys, args.n_data)
        if theirs:
            published = json.loads((work / "libprio" / "A" / "publish.ndjson").read_text())
            assert published["payload"] == expected, "libprio published wrong counts"
    print(f"{args.clients} clients, n_data {args.n_data}; "
          f"encode-shares: {encode[0]:.1f} s, peak {encode[1] / 2**20:.0f} MiB")
    print("| stage | libprio s | ours s | speed-up | our peak memory |")
    print("| --- | --- | --- | --- | --- |")
    for name, (seconds, peak) in mine.items():
        if name in theirs:
            lib = theirs[name][0]
            print(f"| {name} | {lib:.2f} | {seconds:.2f} | {lib / seconds:.0f}x | {peak / 2**20:.0f} MiB |")
        else:
            print(f"| {name} | - | {seconds:.2f} | - | {peak / 2**20:.0f} MiB |")
    total_ours = sum(v[0] for v in mine.values())
    if theirs:
        total_lib = sum(v[0] for v in theirs.values())
        print(f"| whole chain | {total_lib:.1f} | {total_ours:.1f} | {total_lib / total_ours:.0f}x | |")
    else:
        print(f"| whole chain | | {total_ours:.1f} | | |")


if __name__ == "__main__":
    main()
