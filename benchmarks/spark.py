"""CPU of both servers' stages with `prio` (as bin/process runs it) and with `prio-spark`, same run.

Encodes the clients once with `prio encode-shares` into several part files,
then runs verify1, verify2, aggregate and publish for servers A and B:

* with `prio` as bin/process runs it: one process per stage, the fixed
  evaluation point, verify1's cache (CACHE) for verify2 and aggregate, the
  rejects listed (REJECTS), WORKERS unset (every processor);
* with `prio-spark` on `--master` (local[2]), the same environment, as one
  driver process that starts its session once and runs every stage.

CPU is user + system time of the whole process tree: for `prio`, the waited-for
children (its forked workers included) by getrusage(RUSAGE_CHILDREN); for
`prio-spark`, the driver samples /proc for itself and every descendant (the JVM,
Spark's Python worker daemon and the workers it forks and reaps) before and
after each stage, counting live processes' own time and the time of children
they reaped. Spark's session start (session and a first job) is reported apart.
The driver also samples the peak resident memory (VmHWM) of every Spark Python
worker process. Prints wall and CPU per stage, CPU ratios (prio-spark / prio)
per stage and overall, CPU per client, and checks that both wrote the same
verify1 and verify2 records and published the same counts.

    python benchmarks/spark.py [--n-clients 20000] [--n-data 2046] [--parts 8] [--master local[2]]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

PEER = {"A": "B", "B": "A"}
STAGES = (("verify1", None), ("verify2", "verify1"), ("aggregate", "verify2"), ("publish", "aggregate"))
_TICKS = os.sysconf("SC_CLK_TCK")
_SAMPLE_SECONDS = 0.25


# -- the process tree's CPU, from /proc ------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, own + reaped children's CPU seconds) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields follow the last ')'.
    fields = text[text.rindex(")") + 2:].split()
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return ppid, (utime + stime + cutime + cstime) / _TICKS


def _tree(root: int) -> list[int]:
    """`root` and all its live descendants."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = _stat(int(entry))
            if found is not None:
                parents[int(entry)] = found[0]
    members, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in members:
                members.add(pid)
                frontier.append(pid)
    return sorted(members)


def tree_cpu(root: int) -> dict[str, float]:
    """CPU seconds of `root`'s process tree so far, by part (the driver, the JVM, Spark's Python
    workers): each live member's own time and the time of the children it reaped (which hold
    their reaped children's time in turn)."""
    parts = {"driver": 0.0, "jvm": 0.0, "workers": 0.0}
    for pid in _tree(root):
        found = _stat(pid)
        if found is not None:
            parts[_part(root, pid)] += found[1]
    return parts


def _part(root: int, pid: int) -> str:
    if pid == root:
        return "driver"
    try:
        with open(f"/proc/{pid}/comm") as f:
            return "jvm" if f.read().strip() == "java" else "workers"
    except OSError:
        return "workers"


def _minus(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {part: after[part] - before[part] for part in after}


def _peak_kib(pid: int) -> tuple[str, int] | None:
    """(command line, VmHWM in KiB) of a process."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().replace(b"\0", b" ").decode(errors="replace")
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return command, int(line.split()[1])
    except OSError:
        return None
    return None


class WorkerMemory(threading.Thread):
    """Samples the peak resident memory of every Python process under the JVM (Spark's worker
    daemon and the workers it forks)."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.peaks: dict[int, int] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(_SAMPLE_SECONDS):
            for pid in _tree(self.root):
                found = _peak_kib(pid) if _part(self.root, pid) == "workers" else None
                if found is not None:
                    self.peaks[pid] = max(self.peaks.get(pid, 0), found[1])


# -- the prio-spark driver (run in its own process: `spark.py --driver PLAN MASTER`) ------------


def driver(plan_file: str, master: str) -> None:
    me = os.getpid()
    wall, cpu = time.perf_counter(), {"driver": 0.0, "jvm": 0.0, "workers": 0.0}
    from prio_processor.spark.session import get_session

    spark = get_session(master, "prio-spark benchmark")
    spark.range(4).count()
    memory = WorkerMemory(me)
    memory.start()
    timings: dict[str, Any] = {"start-up": (time.perf_counter() - wall, _minus(tree_cpu(me), cpu))}
    from prio_processor.spark.commands import entry_point

    for name, args in json.loads(Path(plan_file).read_text()):
        wall, cpu = time.perf_counter(), tree_cpu(me)
        entry_point(args, prog_name="prio-spark", standalone_mode=False)
        timings[name] = (time.perf_counter() - wall, _minus(tree_cpu(me), cpu))
    memory.stopped.set()
    memory.join()
    timings["worker_peaks_kib"] = sorted(memory.peaks.values())
    print(json.dumps(timings))


# -- the benchmark ------------------------------------------------------------------------------


def _env(keys: dict, server: str, n_data: int, work: Path, tool: str) -> dict[str, str]:
    """The environment bin/process gives a stage (secrets, fixed point, cache, rejects)."""
    return dict(os.environ, N_DATA=str(n_data), BATCH_ID="bench", SERVER_ID=server,
                PRIVATE_KEY_HEX=keys[server]["private_key"], SHARED_SECRET=keys["seed"],
                PUBLIC_KEY_HEX_INTERNAL=keys[server]["public_key"],
                PUBLIC_KEY_HEX_EXTERNAL=keys[PEER[server]]["public_key"], SPARK_LOCAL_IP="127.0.0.1",
                EVALUATION_POINT="fixed", CACHE=str(work / tool / f"cache-{server}"),
                REJECTS=str(work / tool / f"rejects-{server}"), PYSPARK_PYTHON=sys.executable)


def _stage_args(work: Path, tool: str, stage: str, prev: str | None, server: str) -> list[str]:
    args = [stage, "--output", str(work / tool / server / stage)]
    if stage != "publish":
        args += ["--input", str(work / f"raw_{server.lower()}")]
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


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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


def run_prio(work: Path, keys: dict, n_data: int) -> dict[str, tuple[float, float]]:
    """(wall, CPU) seconds per stage and server; each stage's process tree is waited for whole."""
    timings = {}
    for stage, prev in STAGES:
        for server in "AB":
            args = _stage_args(work, "prio", stage, prev, server)
            if stage == "publish":
                args += ["--max-error-ratio", "0.5"]
            wall, cpu = time.perf_counter(), _children_cpu()
            _prio(args, _env(keys, server, n_data, work, "prio"))
            timings[f"{stage} {server}"] = (time.perf_counter() - wall, _children_cpu() - cpu)
    return timings


def run_spark(work: Path, keys: dict, n_data: int, master: str) -> dict[str, Any]:
    plan = []
    for stage, prev in STAGES:
        for server in "AB":
            env = _env(keys, server, n_data, work, "spark")
            # The driver runs every stage in one process: the environment's settings as options.
            options = ["--n-data", str(n_data), "--batch-id", "bench", "--server-id", server,
                       "--public-key-hex-internal", env["PUBLIC_KEY_HEX_INTERNAL"],
                       "--public-key-hex-external", env["PUBLIC_KEY_HEX_EXTERNAL"],
                       "--private-key-hex", env["PRIVATE_KEY_HEX"], "--shared-secret", env["SHARED_SECRET"],
                       "--rejects", env["REJECTS"]]
            if stage in ("verify1", "verify2"):
                options += ["--evaluation-point", "fixed"]
            if stage in ("verify1", "verify2", "aggregate") and _spark_has_cache():
                options += ["--cache", env["CACHE"]]
            if stage == "publish":
                options += ["--max-error-ratio", "0.5"]
            plan.append((f"{stage} {server}", _stage_args(work, "spark", stage, prev, server) + options))
    plan_file = work / "spark-plan.json"
    plan_file.write_text(json.dumps(plan))
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
    result = subprocess.run([sys.executable, __file__, "--driver", str(plan_file), master], env=env,
                            capture_output=True, text=True)
    plan_file.unlink()
    if result.returncode != 0:
        sys.exit(f"prio-spark failed:\n{result.stderr[-5000:]}")
    timings: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return timings


def _spark_has_cache() -> bool:
    from prio_processor.spark.commands import verify1

    return any(param.name == "cache" for param in verify1.params)


def _published(folder: Path) -> dict:
    [line] = [line for f in sorted(folder.iterdir()) if not f.name.startswith(("_", "."))
              for line in f.read_text().splitlines() if line.strip()]
    return json.loads(line)


def _records(folder: Path) -> list[str]:
    return sorted(line for f in folder.iterdir() if not f.name.startswith(("_", "."))
                  for line in f.read_text().splitlines() if line.strip())


def _check_same(work: Path) -> None:
    for server in "AB":
        for stage in ("verify1", "verify2"):
            if _records(work / "spark" / server / stage) != _records(work / "prio" / server / stage):
                sys.exit(f"server {server}: prio-spark and prio wrote different {stage} records")
        ours = _published(work / "spark" / server / "publish")
        theirs = _published(work / "prio" / server / "publish")
        fields = ("payload", "error", "total")
        if [ours[k] for k in fields] != [theirs[k] for k in fields]:
            sys.exit(f"server {server}: prio-spark and prio published different results")


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs > 0 else "-"


def report(n_clients: int, master: str, prio: dict[str, tuple[float, float]], spark: dict[str, Any]) -> None:
    cpu_of = {name: (value[0], sum(value[1].values())) for name, value in spark.items()
              if name != "worker_peaks_kib"}
    start_wall, start_cpu = cpu_of["start-up"]
    print(f"\nSpark session start ({master}, session and a first job): {start_wall:.1f} s wall, "
          f"{start_cpu:.1f} s CPU (not in the figures below)\n")
    print("| stage | prio wall s | prio CPU s | prio-spark wall s | prio-spark CPU s (driver, JVM, workers) "
          "| CPU ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, (wall, cpu) in prio.items():
        spark_wall, spark_cpu = cpu_of[name]
        parts = ", ".join(f"{v:.1f}" for v in spark[name][1].values())
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {spark_wall:.2f} | {spark_cpu:.2f} ({parts}) | "
              f"{_ratio(spark_cpu, cpu)} |")
    for stage, _ in STAGES:
        cpu = sum(prio[f"{stage} {s}"][1] for s in "AB")
        spark_cpu = sum(cpu_of[f"{stage} {s}"][1] for s in "AB")
        print(f"| {stage} (A+B) | | {cpu:.2f} | | {spark_cpu:.2f} | {_ratio(spark_cpu, cpu)} |")
    prio_wall, prio_cpu = (sum(v[k] for v in prio.values()) for k in (0, 1))
    spark_wall, spark_cpu = (sum(cpu_of[name][k] for name in prio) for k in (0, 1))
    print(f"| all stages | {prio_wall:.1f} | {prio_cpu:.1f} | {spark_wall:.1f} | {spark_cpu:.1f} | "
          f"{_ratio(spark_cpu, prio_cpu)} |")
    print(f"\nCPU per client: prio {1000 * prio_cpu / n_clients:.2f} ms, prio-spark "
          f"{1000 * spark_cpu / n_clients:.2f} ms: ratio {_ratio(spark_cpu, prio_cpu)} "
          "(session start excluded)")
    peaks = spark["worker_peaks_kib"]
    if peaks:
        print(f"Spark Python worker processes: {len(peaks)}, peak resident memory (VmHWM) "
              f"max {max(peaks) / 1024:.0f} MiB, each: {', '.join(f'{p / 1024:.0f}' for p in peaks)} MiB")


def main() -> None:
    if sys.argv[1:2] == ["--driver"]:
        driver(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-clients", type=int, default=20000)
    parser.add_argument("--n-data", type=int, default=2046)
    parser.add_argument("--parts", type=int, default=8, help="part files of client shares")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the clients' shares and every output in this folder, and reuse the shares "
                             "found there (to measure again without encoding)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="prio-spark-bench-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if (work / "keys.json").exists():
            keys = json.loads((work / "keys.json").read_text())
            print(f"reusing the shares in {work}", flush=True)
        else:
            keys = {s: json.loads(_prio(["keygen"])) for s in "AB"}
            keys["seed"] = json.loads(_prio(["shared-seed"]))["shared_seed"]
            encode = make_clients(work, keys, args.n_clients, args.n_data, args.parts)
            (work / "keys.json").write_text(json.dumps(keys))
            print(f"{args.n_clients} clients, n_data {args.n_data}, {args.parts} part files; "
                  f"encode-shares {encode:.1f} s", flush=True)
        prio_times = run_prio(work, keys, args.n_data)
        spark_times = run_spark(work, keys, args.n_data, args.master)
        _check_same(work)
    report(args.n_clients, args.master, prio_times, spark_times)
    print("\nBoth wrote the same verify1 and verify2 records and published the same counts, errors and "
          "totals.")


if __name__ == "__main__":
    main()
