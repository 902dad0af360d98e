"""Both servers' stages with `prio` (one process per stage) and with `prio-spark` on local[2], same run.

Encodes the clients once with `prio encode-shares` into several part files,
then runs verify1, verify2, aggregate and publish for servers A and B: with
`prio --evaluation-point fixed` as one subprocess per stage, and with
`prio-spark` as one driver process that starts its session once and runs
every stage. Prints wall time per stage, Spark's start-up cost (session and
first job), throughput once started, and checks that both published the same
counts.

    python benchmarks/spark.py [--n-clients 20000] [--n-data 2046] [--parts 8] [--master local[2]]
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

PEER = {"A": "B", "B": "A"}
STAGES = (("verify1", None), ("verify2", "verify1"), ("aggregate", "verify2"), ("publish", "aggregate"))

# The Spark side: one driver, session started once, every stage timed; JSON timings on the last line.
DRIVER = """
import json, sys, time
start = time.perf_counter()
from prio_processor.spark.session import get_session
spark = get_session(sys.argv[2], "prio-spark benchmark")
spark.range(4).count()
timings = {"start-up": time.perf_counter() - start}
from prio_processor.spark.commands import entry_point
for name, args in json.load(open(sys.argv[1])):
    began = time.perf_counter()
    entry_point(args, prog_name="prio-spark", standalone_mode=False)
    timings[name] = time.perf_counter() - began
print(json.dumps(timings))
"""


def _env(keys: dict, server: str, n_data: int) -> dict[str, str]:
    return dict(os.environ, N_DATA=str(n_data), BATCH_ID="bench", SERVER_ID=server,
                PRIVATE_KEY_HEX=keys[server]["private_key"], SHARED_SECRET=keys["seed"],
                PUBLIC_KEY_HEX_INTERNAL=keys[server]["public_key"],
                PUBLIC_KEY_HEX_EXTERNAL=keys[PEER[server]]["public_key"], SPARK_LOCAL_IP="127.0.0.1")


def _stage_args(work: Path, tool: str, stage: str, prev: str | None, server: str) -> list[str]:
    args = [stage, "--output", str(work / tool / server / stage)]
    if stage != "publish":
        args += ["--input", str(work / f"raw_{server.lower()}")]
    if stage in ("verify1", "verify2"):
        args += ["--evaluation-point", "fixed"]
    if prev:
        args += ["--input-internal", str(work / tool / server / prev),
                 "--input-external", str(work / tool / PEER[server] / prev)]
    return args


def _prio(args: list[str], env: dict[str, str] | None = None) -> str:
    result = subprocess.run([sys.executable, "-m", "prio_processor", *args], env=env, capture_output=True,
                            text=True)
    if result.returncode != 0:
        sys.exit(f"prio {args[0]} failed:\n{result.stderr}")
    return result.stdout


def make_clients(work: Path, keys: dict, n_clients: int, n_data: int, parts: int) -> float:
    """Shares for A and B in `parts` part files each; returns the encoding time."""
    clients = work / "clients"
    clients.mkdir()
    rng = random.Random(1)
    for part in range(parts):
        with open(clients / f"part-{part:05d}.ndjson", "w") as f:
            for _ in range(part, n_clients, parts):
                f.write(json.dumps({"payload": [rng.randint(0, 1) for _ in range(n_data)]}) + "\n")
    start = time.perf_counter()
    _prio(["encode-shares", "--n-data", str(n_data), "--batch-id", "bench",
           "--public-key-hex-internal", keys["A"]["public_key"],
           "--public-key-hex-external", keys["B"]["public_key"],
           "--input", str(clients), "--output-A", str(work / "raw_a"), "--output-B", str(work / "raw_b")])
    return time.perf_counter() - start


def run_prio(work: Path, keys: dict, n_data: int) -> dict[str, float]:
    timings = {}
    for stage, prev in STAGES:
        for server in "AB":
            start = time.perf_counter()
            _prio(_stage_args(work, "prio", stage, prev, server), _env(keys, server, n_data))
            timings[f"{stage} {server}"] = time.perf_counter() - start
    return timings


def run_spark(work: Path, keys: dict, n_data: int, master: str) -> dict[str, float]:
    plan = []
    for stage, prev in STAGES:
        for server in "AB":
            env = _env(keys, server, n_data)
            options = ["--n-data", str(n_data), "--batch-id", "bench", "--server-id", server,
                       "--public-key-hex-internal", env["PUBLIC_KEY_HEX_INTERNAL"],
                       "--public-key-hex-external", env["PUBLIC_KEY_HEX_EXTERNAL"]]
            if stage != "publish":
                options += ["--private-key-hex", env["PRIVATE_KEY_HEX"],
                            "--shared-secret", env["SHARED_SECRET"]]
            plan.append((f"{stage} {server}", _stage_args(work, "spark", stage, prev, server) + options))
    plan_file = work / "spark-plan.json"
    plan_file.write_text(json.dumps(plan))
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
    result = subprocess.run([sys.executable, "-c", DRIVER, str(plan_file), master], env=env,
                            capture_output=True, text=True)
    plan_file.unlink()
    if result.returncode != 0:
        sys.exit(f"prio-spark failed:\n{result.stderr[-5000:]}")
    return json.loads(result.stdout.splitlines()[-1])


def _published(folder: Path) -> dict:
    [line] = [line for f in sorted(folder.iterdir()) if not f.name.startswith(("_", "."))
              for line in f.read_text().splitlines() if line.strip()]
    return json.loads(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-clients", type=int, default=20000)
    parser.add_argument("--n-data", type=int, default=2046)
    parser.add_argument("--parts", type=int, default=8, help="part files of client shares")
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="prio-spark-bench-") as tmp:
        work = Path(tmp)
        keys = {s: json.loads(_prio(["keygen"])) for s in "AB"}
        keys["seed"] = json.loads(_prio(["shared-seed"]))["shared_seed"]
        encode = make_clients(work, keys, args.n_clients, args.n_data, args.parts)
        print(f"{args.n_clients} clients, n_data {args.n_data}, {args.parts} part files; "
              f"encode-shares {encode:.1f} s", flush=True)
        prio_times = run_prio(work, keys, args.n_data)
        spark_times = run_spark(work, keys, args.n_data, args.master)
        for server in "AB":
            ours = _published(work / "spark" / server / "publish")
            theirs = _published(work / "prio" / server / "publish")
            fields = ("payload", "error", "total")
            if [ours[k] for k in fields] != [theirs[k] for k in fields]:
                sys.exit(f"server {server}: prio-spark and prio published different results")

    print(f"\nSpark start-up (session and first job, {args.master}): {spark_times['start-up']:.1f} s\n")
    print("| stage | prio s | prio-spark s | prio-spark clients/s |")
    print("| --- | --- | --- | --- |")
    for name in prio_times:
        print(f"| {name} | {prio_times[name]:.2f} | {spark_times[name]:.2f} | "
              f"{args.n_clients / spark_times[name]:,.0f} |")
    prio_total = sum(prio_times.values())
    spark_total = sum(v for k, v in spark_times.items() if k != "start-up")
    print(f"| all stages | {prio_total:.1f} | {spark_total:.1f} "
          f"(+ {spark_times['start-up']:.1f} start-up) | |")
    print("\nBoth published the same counts, errors and totals.")


if __name__ == "__main__":
    main()
