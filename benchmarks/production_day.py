"""A production day on one machine: bin/generate, then bin/process for A and B at once.

Each client sends one packet of n_data 2046 and one of 441, as Firefox's
content-blocking metric did. The shares are made by bin/generate (not timed),
then servers A and B run bin/process concurrently on local folder buckets, each
on half of this machine's processors (WORKERS, as bin/integrate gives them; two
servers would not share a machine in production). The processing, run several
times over the same shares, is timed; its median wall time is projected
linearly to the original's daily population (wall time x 285,714 / clients)
and the CPU time is compared with the original's own projection of 97.4
CPU-hours for that day. The published counts are checked.

    python benchmarks/production_day.py [--clients 10000] [--runs 5] [--workers N] [--keep]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prio_processor.dataconfig import Batch  # noqa: E402
from prio_processor.integration import expected_counts  # noqa: E402

DAY_CLIENTS = 285_714
ORIGINAL_CPU_HOURS = 97.4
TARGET_SECONDS = 300
BATCHES = [Batch("content.blocking_blocked-0", 2046), Batch("content.blocking_blocked-1", 441)]
PEER = {"A": "B", "B": "A"}
DATE = "2026-01-01"
PREFIX = "bench/v1"
STAGE_TOOK = re.compile(r"process [AB]: (\w+) took (\d+)s")


def prio_json(*args: str) -> dict:
    return json.loads(subprocess.check_output([sys.executable, "-m", "prio_processor", *args]))


class Day:
    """Keys, buckets and environments of one run in a scratch folder."""

    def __init__(self, work: Path, workers: int | None) -> None:
        self.work = work
        config = work / "content.json"
        config.write_text(json.dumps([{"batch_id": b.batch_id, "n_data": b.n_data} for b in BATCHES]))
        self.keys = {s: prio_json("keygen") for s in "AB"}
        self.seed = prio_json("shared-seed")["shared_seed"]
        names = [f"{s}-{kind}" for s in "ab" for kind in ("private", "shared")]
        self.buckets = {name: work / "buckets" / name for name in names}
        for path in self.buckets.values():
            path.mkdir(parents=True)
        self.base = dict(
            os.environ, APP_NAME="bench", DATA_CONFIG=str(config), SUBMISSION_DATE=DATE, BUCKET_PREFIX=PREFIX,
            PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            RETRY_LIMIT="12", RETRY_DELAY="0.5", RETRY_BACKOFF_EXPONENT="1.5",
        )
        if workers:
            self.base["WORKERS"] = str(workers)

    def generate(self, clients: int) -> float:
        env = dict(self.base, PUBLIC_KEY_HEX_INTERNAL=self.keys["A"]["public_key"],
                   PUBLIC_KEY_HEX_EXTERNAL=self.keys["B"]["public_key"],
                   BUCKET_INTERNAL_PRIVATE=str(self.buckets["a-private"]),
                   BUCKET_EXTERNAL_PRIVATE=str(self.buckets["b-private"]))
        start = time.perf_counter()
        subprocess.run([str(ROOT / "bin" / "generate"), "--n-rows", str(clients), "--n-drop-batch", "0"],
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start

    def process(self) -> tuple[float, dict[str, resource.struct_rusage]]:
        """Both servers at once: the wall time until both are done, and each one's resource usage."""
        servers = {}
        start = time.perf_counter()
        for s in "AB":
            own, other = s.lower(), PEER[s].lower()
            env = dict(self.base, SERVER_ID=s, SHARED_SECRET=self.seed,
                       PRIVATE_KEY_HEX=self.keys[s]["private_key"],
                       PUBLIC_KEY_HEX_INTERNAL=self.keys[s]["public_key"],
                       PUBLIC_KEY_HEX_EXTERNAL=self.keys[PEER[s]]["public_key"],
                       BUCKET_INTERNAL_PRIVATE=str(self.buckets[f"{own}-private"]),
                       BUCKET_INTERNAL_SHARED=str(self.buckets[f"{own}-shared"]),
                       BUCKET_EXTERNAL_SHARED=str(self.buckets[f"{other}-shared"]))
            with open(self.log(s), "wb") as log:
                command = [str(ROOT / "bin" / "process")]
                servers[s] = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        usage = {}
        for s, proc in servers.items():
            _, status, usage[s] = os.wait4(proc.pid, 0)
            if status != 0:
                sys.exit(f"bin/process {s} failed:\n{self.log(s).read_text()}")
        return time.perf_counter() - start, usage

    def log(self, server: str) -> Path:
        return self.work / f"process-{server}.log"

    def check(self, clients: int) -> None:
        """Both servers published the expected counts; bin/generate adds one invalid client per batch."""
        for s in "AB":
            partner_key = self.keys[PEER[s]]["public_key"]
            root = self.buckets[f"{s.lower()}-private"] / PREFIX / partner_key / "bench" / DATE
            for batch in BATCHES:
                folder = root / "processed" / "publish" / f"batch_id={batch.batch_id}"
                files = [p for p in folder.iterdir() if not p.name.startswith(("_", "."))]
                record = json.loads(files[0].read_text())
                got = (record["total"], record["error"], record["payload"])
                if got != (clients, 1, expected_counts(batch, clients)):
                    sys.exit(f"server {s} published wrong counts for {batch.batch_id}: "
                             f"{record['error']} errors out of {record['total']}")

    def stage_times(self) -> dict[str, dict[str, str]]:
        times: dict[str, dict[str, str]] = {}
        for s in "AB":
            for stage, seconds in STAGE_TOOK.findall(self.log(s).read_text()):
                times.setdefault(stage, {})[s] = seconds
        return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5, help="times to process the same shares (default 5)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="WORKERS for each server (default: half the processors)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the buckets and logs (the folder is printed)"
    )
    args = parser.parse_args()
    # Byte code as an installed package has it (an editable install under
    # PYTHONDONTWRITEBYTECODE would compile every module in every process).
    compileall.compile_dir(ROOT / "prio_processor", quiet=1)

    work = Path(tempfile.mkdtemp(prefix="prio-day-"))
    walls, cpus, peaks = [], [], []
    try:
        day = Day(work, args.workers)
        generated = day.generate(args.clients)
        # The same shares processed several times (a run starts by clearing what the last
        # one made): the median is quoted, so that one slow or lucky run does not move it.
        for _ in range(args.runs):
            wall, usage = day.process()
            day.check(args.clients)
            walls.append(wall)
            cpus.append(sum(u.ru_utime + u.ru_stime for u in usage.values()))
            peaks.append(max(u.ru_maxrss for u in usage.values()) / 1024)
        stages = day.stage_times()
    finally:
        if args.keep:
            print(f"buckets and logs kept in {work}")
        else:
            shutil.rmtree(work)

    wall, cpu = statistics.median(walls), statistics.median(cpus)
    scale = DAY_CLIENTS / args.clients
    print(f"{args.clients:,} clients x (2046 + 441), servers A and B concurrently on {os.cpu_count()} "
          f"processors, WORKERS {args.workers} each; both published the expected counts")
    print(f"generate (not counted): {generated:.1f} s; processing run {args.runs} times, medians below")
    print("| measure | median (min-max) | projected to 285,714 clients | original's projection | ratio |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| processing wall time | {wall:.1f} s ({min(walls):.1f}-{max(walls):.1f}) | "
          f"{wall * scale:.0f} s | - | - |")
    print(f"| CPU time, both servers | {cpu:.1f} s ({min(cpus):.1f}-{max(cpus):.1f}) | "
          f"{cpu * scale / 3600:.2f} CPU-hours | "
          f"{ORIGINAL_CPU_HOURS} CPU-hours | {ORIGINAL_CPU_HOURS * 3600 / (cpu * scale):.0f}x less |")
    print("stage wall times of the last run (A / B, s): " + ", ".join(
        f"{stage} {times.get('A', '?')} / {times.get('B', '?')}" for stage, times in stages.items()))
    print(f"peak resident memory of any process: {max(peaks):.0f} MiB")
    verdict = "met" if wall * scale <= TARGET_SECONDS else "NOT met"
    print(f"target: projected wall time (median) <= {TARGET_SECONDS} s: {verdict}")


if __name__ == "__main__":
    main()
