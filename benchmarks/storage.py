"""verify1 reading and writing s3:// against local folders: the same shares, one run.

Encodes the clients once, uploads server A's shares to an S3 API server on 127.0.0.1
(scripts/s3-server: moto, authentication on) and runs `prio verify1` as a subprocess from
local folder to local folder and from s3:// to s3://, best of --repeat runs each, checking
that both write the same packets. Prints wall time, input throughput and the ratio.

moto is a Python server holding objects in memory: a real S3 endpoint has more latency per
request and more bandwidth; what this measures is the client side (boto3 streaming reads of
long lines, the spooled upload) next to the local disk.

    python benchmarks/storage.py [--clients 2000] [--n-data 2046] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_verify1(env: dict[str, str], source: str, target: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "prio_processor", "verify1", "--input", source,
                           "--output", target], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"verify1 {source} failed:\n{proc.stderr}")
    return elapsed


def start_s3_server(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "s3-server"), str(folder),
                             "--bucket", "bench"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (folder / "endpoint").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit("the S3 API server did not start")
        time.sleep(0.05)
    return proc, (folder / "endpoint").read_text().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--n-data", type=int, default=2046)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prio-storage-") as tmp:
        work = Path(tmp)
        prio = [sys.executable, "-m", "prio_processor"]
        keys = {s: json.loads(subprocess.check_output([*prio, "keygen"])) for s in "AB"}
        seed = json.loads(subprocess.check_output([*prio, "shared-seed"]))["shared_seed"]
        rng = random.Random(1)
        with open(work / "client.ndjson", "w") as f:
            for _ in range(args.clients):
                f.write(json.dumps({"payload": [rng.randint(0, 1) for _ in range(args.n_data)]}) + "\n")
        subprocess.run([*prio, "encode-shares", "--n-data", str(args.n_data), "--batch-id", "bench",
                        "--public-key-hex-internal", keys["A"]["public_key"],
                        "--public-key-hex-external", keys["B"]["public_key"],
                        "--input", str(work / "client.ndjson"), "--output-A", str(work / "raw_a"),
                        "--output-B", str(work / "raw_b")], check=True, capture_output=True)
        raw = work / "raw_a" / "client.ndjson"
        size = raw.stat().st_size
        server, endpoint = start_s3_server(work / "s3")
        try:
            access = (work / "s3" / "admin.access").read_text().strip()
            config = {"bench": {"endpoint": endpoint, "access_key": access,
                                "secret_key_file": str(work / "s3" / "admin.secret")}}
            env = dict(os.environ, N_DATA=str(args.n_data), BATCH_ID="bench", SERVER_ID="A",
                       PRIVATE_KEY_HEX=keys["A"]["private_key"], SHARED_SECRET=seed,
                       PUBLIC_KEY_HEX_INTERNAL=keys["A"]["public_key"],
                       PUBLIC_KEY_HEX_EXTERNAL=keys["B"]["public_key"], EVALUATION_POINT="fixed",
                       PRIO_S3_CONFIG=json.dumps(config))
            os.environ["PRIO_S3_CONFIG"] = env["PRIO_S3_CONFIG"]
            from prio_processor.storage import location, ops

            start = time.perf_counter()
            ops.copy_file(location(raw), location("s3://bench/raw/part-00000.json"))
            upload = time.perf_counter() - start
            runs = range(args.repeat)
            local = min(run_verify1(env, str(raw), str(work / f"out-{k}")) for k in runs)
            remote = min(run_verify1(env, "s3://bench/raw", f"s3://bench/out-{k}") for k in runs)
            written = [location(out).parts() for out in ("s3://bench/out-0", str(work / "out-0"))]
            same = [p.read_bytes() for p in written[0]] == [p.read_bytes() for p in written[1]]
        finally:
            server.terminate()
            server.wait(30)
    if not same:
        sys.exit("verify1 wrote other packets from s3:// than from the local folder")
    line = size / args.clients
    print(f"{args.clients} clients, n_data {args.n_data}: {size / 2**20:.1f} MiB of shares, "
          f"{line / 1024:.0f} KiB a line; upload to the S3 API server {size / 2**20 / upload:.0f} MiB/s")
    print(f"| verify1 | best of {args.repeat} s | clients/s | input MiB/s |")
    print("| --- | --- | --- | --- |")
    for name, seconds in (("local folder -> local folder", local), ("s3:// -> s3://", remote)):
        print(f"| {name} | {seconds:.2f} | {args.clients / seconds:.0f} | {size / 2**20 / seconds:.1f} |")
    print(f"s3:// takes {remote / local:.2f}x the time of local folders (same packets written)")


if __name__ == "__main__":
    main()
