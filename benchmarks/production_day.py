"""A production day on one machine, as a multiple of libprio measured in the same run.

Each client sends one packet of n_data 2046 and one of 441, as Firefox's
content-blocking metric did. For each number of clients (--clients, two or more
sizes), bin/generate makes the shares (not timed); then servers A and B run
bin/process concurrently on local folder buckets, each on half of this machine's
processors (WORKERS, as bin/integrate gives them), several times over the same
shares. Every run is checked (both servers publish the expected counts) and its
CPU time (both servers, every stage and command, start-up included) and wall
time are taken; medians are quoted.

In turns with those runs, the libprio oracle (PyPI prio 0.2) runs every server
stage of both sizes over a few hundred packets, driven as the original command
line drove it (every stage opens every packet again): its CPU time per packet,
summed over the stages of both servers and both sizes, is libprio's CPU per
client for the same day. The ratio of the two is a figure that holds from one
machine to another; seconds do not.

The day's CPU is fitted as fixed + per-client cost over the sizes and
projected to the original's daily population (285,714 clients) with the fit and
linearly from the largest size (which counts its fixed cost 28 times over).

    python benchmarks/production_day.py [--clients 2500,10000] [--runs 3] [--oracle-packets 200]
                                        [--workers N] [--keep]
"""

from __future__ import annotations

import argparse
import compileall
import json
import multiprocessing
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prio_processor.dataconfig import Batch  # noqa: E402
from prio_processor.integration import expected_counts  # noqa: E402

DAY_CLIENTS = 285_714
ORIGINAL_CPU_HOURS = 97.4
TARGET_RATIO = 250
BATCHES = [Batch("content.blocking_blocked-0", 2046), Batch("content.blocking_blocked-1", 441)]
ORACLE_STAGES = ("verify1", "verify2", "aggregate")
PEER = {"A": "B", "B": "A"}
DATE = "2026-01-01"
PREFIX = "bench/v1"
STAGE_TOOK = re.compile(r"process [AB]: (\w+) took (\d+)s")


def prio_json(*args: str) -> dict:
    return json.loads(subprocess.check_output([sys.executable, "-m", "prio_processor", *args]))


class Day:
    """Keys, buckets and environments of one number of clients, in a scratch folder."""

    def __init__(self, work: Path, clients: int, workers: int | None) -> None:
        self.work = work
        self.clients = clients
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

    def generate(self) -> float:
        env = dict(self.base, PUBLIC_KEY_HEX_INTERNAL=self.keys["A"]["public_key"],
                   PUBLIC_KEY_HEX_EXTERNAL=self.keys["B"]["public_key"],
                   BUCKET_INTERNAL_PRIVATE=str(self.buckets["a-private"]),
                   BUCKET_EXTERNAL_PRIVATE=str(self.buckets["b-private"]))
        start = time.perf_counter()
        subprocess.run([str(ROOT / "bin" / "generate"), "--n-rows", str(self.clients), "--n-drop-batch", "0"],
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

    def check(self) -> None:
        """Both servers published the expected counts; bin/generate adds one invalid client per batch."""
        for s in "AB":
            partner_key = self.keys[PEER[s]]["public_key"]
            root = self.buckets[f"{s.lower()}-private"] / PREFIX / partner_key / "bench" / DATE
            for batch in BATCHES:
                folder = root / "processed" / "publish" / f"batch_id={batch.batch_id}"
                files = [p for p in folder.iterdir() if not p.name.startswith(("_", "."))]
                record = json.loads(files[0].read_text())
                got = (record["total"], record["error"], record["payload"])
                if got != (self.clients, 1, expected_counts(batch, self.clients)):
                    sys.exit(f"server {s} published wrong counts for {batch.batch_id}: "
                             f"{record['error']} errors out of {record['total']}")

    def stage_times(self) -> dict[str, dict[str, str]]:
        times: dict[str, dict[str, str]] = {}
        for s in "AB":
            for stage, seconds in STAGE_TOOK.findall(self.log(s).read_text()):
                times.setdefault(stage, {})[s] = seconds
        return times


@dataclass
class Runs:
    """The processing runs of one day size."""

    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    peaks: list[float] = field(default_factory=list)

    def add(self, wall: float, usage: dict[str, resource.struct_rusage]) -> None:
        self.walls.append(wall)
        self.cpus.append(sum(u.ru_utime + u.ru_stime for u in usage.values()))
        self.peaks.append(max(u.ru_maxrss for u in usage.values()) / 1024)


def libprio_cpu(n_data: int, packets: int, seed: int) -> dict[str, float]:
    """CPU seconds of libprio's server stages over `packets` packets of `n_data` (encoding not
    counted); run in a process of its own, so that no child of this one inherits its memory."""
    import importlib
    import random

    from prio import libprio

    sys.path.insert(0, str(ROOT / "benchmarks"))
    engine = importlib.import_module("engine")  # benchmarks/engine.py drives libprio as the original did
    libprio.Prio_init()
    rng = random.Random(seed)
    vectors = [[rng.randint(0, 1) for _ in range(n_data)] for _ in range(packets)]
    timer = engine.Timer(clock=time.process_time)
    if engine.bench_libprio(libprio, n_data, vectors, timer) != [sum(c) for c in zip(*vectors)]:
        raise AssertionError("libprio published wrong counts")
    return {stage: timer.seconds[stage] for stage in timer.seconds if stage != "encode"}


class Oracle:
    """libprio's CPU per packet for every server stage and size, measured in slices between runs."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[int, str], float] = {}
        self.packets: dict[int, int] = {}
        self._pool = multiprocessing.get_context("spawn").Pool(1)

    def measure(self, packets: int, seed: int) -> None:
        for batch in BATCHES:
            for stage, seconds in self._pool.apply(libprio_cpu, (batch.n_data, packets, seed)).items():
                key = (batch.n_data, stage)
                self.seconds[key] = self.seconds.get(key, 0.0) + seconds
            self.packets[batch.n_data] = self.packets.get(batch.n_data, 0) + packets

    def close(self) -> None:
        self._pool.close()
        self._pool.join()

    def ms_per_packet(self) -> dict[tuple[int, str], float]:
        return {key: seconds / self.packets[key[0]] * 1e3 for key, seconds in self.seconds.items()}

    def ms_per_client(self) -> float:
        """Every server stage of both servers, once per batch of the day."""
        return sum(self.ms_per_packet().values())


def fit(sizes: list[int], cpus: list[float]) -> tuple[float, float]:
    """Least-squares fixed seconds and seconds per client of CPU = fixed + per_client x clients."""
    mean_x, mean_y = statistics.fmean(sizes), statistics.fmean(cpus)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(sizes, cpus)) / sum(
        (x - mean_x) ** 2 for x in sizes
    )
    return mean_y - slope * mean_x, slope


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", default="2500,10000",
                        help="numbers of clients, comma-separated, at least two (default 2500,10000)")
    parser.add_argument("--runs", type=int, default=3, help="times to process the same shares (default 3)")
    parser.add_argument("--oracle-packets", type=int, default=200,
                        help="packets per size that libprio verifies, over all runs (default 200)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="WORKERS for each server (default: half the processors)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the buckets and logs (the folder is printed)"
    )
    args = parser.parse_args()
    sizes = sorted({int(c) for c in args.clients.split(",")})
    if len(sizes) < 2 or sizes[0] < 1:
        parser.error("--clients needs two or more different positive numbers")
    if args.runs < 1 or args.oracle_packets < args.runs:
        parser.error("--runs must be 1 or more, and --oracle-packets at least --runs")
    try:
        from prio import libprio  # noqa: F401
    except ImportError:
        sys.exit("the libprio oracle is missing: run `make oracle`")
    # Byte code as an installed package has it (an editable install under
    # PYTHONDONTWRITEBYTECODE would compile every module in every process).
    compileall.compile_dir(ROOT / "prio_processor", quiet=1)

    work = Path(tempfile.mkdtemp(prefix="prio-day-"))
    oracle = Oracle()
    runs = {clients: Runs() for clients in sizes}
    generated = {}
    try:
        days = {}
        for clients in sizes:
            (work / str(clients)).mkdir()
            days[clients] = Day(work / str(clients), clients, args.workers)
            generated[clients] = days[clients].generate()
        # Runs of every size and slices of the oracle in turns, so that a change in the
        # machine's load during the benchmark touches all of them alike.
        per_slice = [args.oracle_packets // args.runs + (r < args.oracle_packets % args.runs)
                     for r in range(args.runs)]
        for round_, packets in enumerate(per_slice):
            for clients, day in days.items():
                runs[clients].add(*day.process())
                day.check()
            oracle.measure(packets, seed=round_)
        stages = days[sizes[-1]].stage_times()
    finally:
        oracle.close()
        if args.keep:
            print(f"buckets and logs kept in {work}")
        else:
            shutil.rmtree(work)
    report(args, sizes, runs, generated, oracle, stages)


def report(args: argparse.Namespace, sizes: list[int], runs: dict[int, Runs], generated: dict[int, float],
           oracle: Oracle, stages: dict[str, dict[str, str]]) -> None:
    lib_ms = oracle.ms_per_client()
    cpu = {c: statistics.median(runs[c].cpus) for c in sizes}
    wall = {c: statistics.median(runs[c].walls) for c in sizes}
    fixed, per_client = fit(sizes, list(cpu.values()))
    wall_fixed, wall_per_client = fit(sizes, list(wall.values()))
    largest = sizes[-1]
    print(f"clients x (2046 + 441); servers A and B concurrently on {os.cpu_count()} processors, WORKERS "
          f"{args.workers} each; every run published the expected counts; medians of {args.runs} runs "
          f"(min-max); libprio: {oracle.packets[BATCHES[0].n_data]} packets per size, CPU time")
    print()
    print("libprio, CPU ms per packet (every stage opens the packet again, as in the original):")
    print("| n_data | " + " | ".join(f"{stage} {s}" for stage in ORACLE_STAGES for s in "AB") + " |")
    print("| --- " * (1 + 2 * len(ORACLE_STAGES)) + "|")
    per_packet = oracle.ms_per_packet()
    for batch in BATCHES:
        cells = [f"{per_packet[batch.n_data, f'{stage} {s}']:.2f}" for stage in ORACLE_STAGES for s in "AB"]
        print(f"| {batch.n_data} | " + " | ".join(cells) + " |")
    print(f"libprio's CPU per client for the day (the sum): {lib_ms:.1f} ms")
    print()
    print("| clients | CPU per client, both servers | libprio / ours | CPU, both servers | wall "
          "| peak process |")
    print("| --- | --- | --- | --- | --- | --- |")
    for c in sizes:
        r = runs[c]
        ours_ms = cpu[c] / c * 1e3
        spread = f"{min(r.cpus) / c * 1e3:.3f}-{max(r.cpus) / c * 1e3:.3f}"
        print(f"| {c:,} | {ours_ms:.3f} ms ({spread}) | {lib_ms / ours_ms:.0f}x less "
              f"({lib_ms / (max(r.cpus) / c * 1e3):.0f}-{lib_ms / (min(r.cpus) / c * 1e3):.0f}) | "
              f"{cpu[c]:.1f} s | {wall[c]:.1f} s ({min(r.walls):.1f}-{max(r.walls):.1f}) | "
              f"{max(r.peaks):.0f} MiB |")
    marginal = per_client * 1e3
    print(f"fit over {', '.join(f'{c:,}' for c in sizes)} clients: CPU = {fixed:.1f} s fixed + "
          f"{marginal:.3f} ms per client ({lib_ms / marginal:.0f}x less than libprio per client); "
          f"wall = {wall_fixed:.1f} s + {wall_per_client * 1e3:.3f} ms per client")
    scale = DAY_CLIENTS / largest
    linear_cpu, fitted_cpu = cpu[largest] * scale, fixed + per_client * DAY_CLIENTS
    lib_day = lib_ms / 1e3 * DAY_CLIENTS
    print(f"projected to {DAY_CLIENTS:,} clients (libprio: {lib_day / 3600:.1f} CPU-hours on this machine; "
          f"the original projected {ORIGINAL_CPU_HOURS} CPU-hours on its own):")
    print("| projection | CPU | libprio / ours | wall |")
    print("| --- | --- | --- | --- |")
    print(f"| with the fit | {fitted_cpu / 3600:.3f} h | {lib_day / fitted_cpu:.0f}x less | "
          f"{wall_fixed + wall_per_client * DAY_CLIENTS:.0f} s |")
    print(f"| linear from {largest:,} clients | {linear_cpu / 3600:.3f} h | "
          f"{lib_day / linear_cpu:.0f}x less | {wall[largest] * scale:.0f} s |")
    print("stage wall times of the last run at " + f"{largest:,} clients (A / B, s): " + ", ".join(
        f"{stage} {times.get('A', '?')} / {times.get('B', '?')}" for stage, times in stages.items()))
    print("generate (not counted): " + ", ".join(f"{c:,} clients {generated[c]:.0f} s" for c in sizes))
    ratio = lib_ms / (cpu[largest] / largest * 1e3)
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(f"target: CPU per client at {largest:,} clients (median) at least {TARGET_RATIO}x less than "
          f"libprio's: {ratio:.0f}x, {verdict}")


if __name__ == "__main__":
    main()
