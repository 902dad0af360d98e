"""One server's verify1 with one worker process against several, on the same shares.

Encodes server A's shares (the heavier server: its packets carry every data
share and h point) once, then runs `prio verify1 --workers W` as a whole
process for each worker count in turn, several rounds, and prints each count's
wall time (median and range) and its speed-up over one worker. It also checks
that every run wrote the same bytes.

    python benchmarks/workers.py [--packets 20000] [--n-data 2046] [--workers 1,2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prio_processor.engine import keys  # noqa: E402
from prio_processor.engine.client import Client  # noqa: E402
from prio_processor.engine.config import Config  # noqa: E402

_ENCODE_BATCH = 256


def write_shares(path: Path, n_data: int, packets: int, public_a: str, public_b: str) -> None:
    """Server A's shares of `packets` random clients, as JSON lines."""
    config = Config(n_data, keys.public_key_from_hex(public_a), keys.public_key_from_hex(public_b), b"bench")
    client = Client(config)
    rng = random.Random(1)
    with open(path, "w") as out:
        for start in range(0, packets, _ENCODE_BATCH):
            count = min(_ENCODE_BATCH, packets - start)
            vectors = [[rng.randint(0, 1) for _ in range(n_data)] for _ in range(count)]
            for k, (share_a, _) in enumerate(client.encode_batch(vectors)):
                record = {"id": f"client-{start + k}", "payload": base64.b64encode(share_a).decode()}
                out.write(json.dumps(record) + "\n")


def digest(folder: Path) -> str:
    sha = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        sha.update(path.read_bytes())
    return sha.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--packets", type=int, default=20_000)
    parser.add_argument("--n-data", type=int, default=2046)
    parser.add_argument("--workers", default="1,2", help="worker counts, the first one the baseline")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--schedule", default="fixed", choices=["fixed", "sequential"])
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]

    pair = {s: json.loads(subprocess.check_output([sys.executable, "-m", "prio_processor", "keygen"]))
            for s in "AB"}
    seed = json.loads(subprocess.check_output([sys.executable, "-m", "prio_processor", "shared-seed"]))
    with tempfile.TemporaryDirectory(prefix="prio-workers-") as tmp:
        work = Path(tmp)
        shares = work / "shares.ndjson"
        start = time.perf_counter()
        write_shares(shares, args.n_data, args.packets, pair["A"]["public_key"], pair["B"]["public_key"])
        took = time.perf_counter() - start
        size = shares.stat().st_size / 2**20
        print(f"encoded {args.packets:,} shares at n_data {args.n_data} in {took:.0f} s ({size:.0f} MiB)")
        env = dict(os.environ, N_DATA=str(args.n_data), BATCH_ID="bench", SERVER_ID="A",
                   PRIVATE_KEY_HEX=pair["A"]["private_key"], SHARED_SECRET=seed["shared_seed"],
                   PUBLIC_KEY_HEX_INTERNAL=pair["A"]["public_key"],
                   PUBLIC_KEY_HEX_EXTERNAL=pair["B"]["public_key"], EVALUATION_POINT=args.schedule)
        walls: dict[int, list[float]] = {w: [] for w in counts}
        peaks: dict[int, int] = dict.fromkeys(counts, 0)
        outputs: set[str] = set()
        for _ in range(args.rounds):
            for w in counts:  # in turn, so that a drift of the machine's speed hits every count alike
                out = work / f"out-{w}"
                started = time.perf_counter()
                proc = subprocess.Popen(
                    [sys.executable, "-m", "prio_processor", "verify1", "--input", str(shares),
                     "--output", str(out), "--workers", str(w)],
                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                _, status, usage = os.wait4(proc.pid, 0)
                walls[w].append(time.perf_counter() - started)
                if status != 0:
                    error = proc.stderr.read().decode() if proc.stderr else ""
                    sys.exit(f"verify1 --workers {w} failed:\n{error}")
                peaks[w] = max(peaks[w], usage.ru_maxrss // 1024)
                outputs.add(digest(out))
    if len(outputs) != 1:
        sys.exit("the worker counts wrote different outputs")
    base = statistics.median(walls[counts[0]])
    print(f"verify1, server A, {args.packets:,} packets, n_data {args.n_data}, {args.schedule} points, "
          f"{os.cpu_count()} processors, {args.rounds} rounds; outputs identical")
    print("| workers | wall s (median) | min - max | speed-up | peak RSS of any process, MiB |")
    print("| --- | --- | --- | --- | --- |")
    for w in counts:
        median = statistics.median(walls[w])
        spread = f"{min(walls[w]):.2f} - {max(walls[w]):.2f}"
        print(f"| {w} | {median:.2f} | {spread} | {base / median:.2f}x | {peaks[w]} |")


if __name__ == "__main__":
    main()
