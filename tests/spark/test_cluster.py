"""The two-server flow on a real Spark standalone cluster: a master and two workers on 127.0.0.1.

Kept small (a few clients, one executor): what it shows is that executors in
processes of their own run every stage of both servers, and spark-submit runs
the entry file; the stages' results are checked in detail by the local tests.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prio_processor import integration
from prio_processor.engine import keys
from prio_processor.storage import location

from .support import read_folder
from tests_support import run_watched

pytestmark = [pytest.mark.spark, pytest.mark.slow]

BATCH = integration.Batch("cluster-batch", 17)
N_ROWS = 8

# Runs every stage of both servers in one driver process, as a scheduler would run commands one by one.
DRIVER = """
import json, sys, time
from prio_processor.spark.commands import entry_point
for args in json.load(open(sys.argv[1])):
    start = time.perf_counter()
    entry_point(args, prog_name="prio-spark", standalone_mode=False)
    print(f"{args[2]} took {time.perf_counter() - start:.1f} s", file=sys.stderr)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spark_class() -> str:
    import pyspark

    return str(Path(pyspark.__file__).parent / "bin" / "spark-class")


@pytest.fixture
def cluster(tmp_path):
    """(spark://127.0.0.1:<port>, the workers' work folders): two one-core workers of 768 MiB;
    stopped whatever happens."""
    port = _free_port()
    url = f"spark://127.0.0.1:{port}"
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_DAEMON_MEMORY": "256m",
           "PYSPARK_PYTHON": sys.executable, "SPARK_LOG_DIR": str(tmp_path / "logs")}
    logs = tmp_path / "daemon-logs"
    logs.mkdir()
    commands = [[_spark_class(), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                 "--port", str(port), "--webui-port", str(_free_port())]]
    work_dirs = [tmp_path / f"work-{number}" for number in (1, 2)]
    for work_dir in work_dirs:
        commands.append([_spark_class(), "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                         "--cores", "1", "--memory", "768m", "--webui-port", str(_free_port()),
                         "--work-dir", str(work_dir), url])
    processes: list[subprocess.Popen] = []
    try:
        for number, command in enumerate(commands):
            with open(logs / f"daemon-{number}.log", "wb") as log:
                processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
        master_log = logs / "daemon-0.log"
        # Generous: three JVMs starting on a loaded 2-core machine took over 120 s; a daemon that
        # exits fails the wait at once, so a broken start is not waited out.
        deadline = time.monotonic() + 600
        while master_log.read_text(errors="replace").count("Registering worker") < len(work_dirs):
            assert time.monotonic() < deadline, master_log.read_text(errors="replace")
            assert all(p.poll() is None for p in processes), "a Spark daemon exited early"
            time.sleep(0.5)
        yield url, work_dirs
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _conf_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "conf"
    folder.mkdir()
    settings = {"spark.executor.memory": "512m", "spark.executor.cores": "1", "spark.cores.max": "2",
                "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
                "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
                "spark.sql.shuffle.partitions": "2"}
    (folder / "spark-defaults.conf").write_text("".join(f"{k} {v}\n" for k, v in settings.items()))
    return folder


def test_two_servers_on_a_standalone_cluster(cluster, tmp_path):
    cluster, work_dirs = cluster
    private_a, public_a = keys.generate_keypair()
    private_b, public_b = keys.generate_keypair()
    hex_keys = {"A": (keys.private_key_to_hex(private_a), keys.public_key_to_hex(public_a)),
                "B": (keys.private_key_to_hex(private_b), keys.public_key_to_hex(public_b))}
    seed = tmp_path / "seed"
    seed.write_text("FjlvCaTrZk+jYcKuzKSt3w==")
    data, work = tmp_path / "data", tmp_path / "work"

    def server(stage: str, me: str) -> list[str]:
        peer = "B" if me == "A" else "A"
        args = ["--master", cluster, stage, "--batch-id", BATCH.batch_id, "--n-data", str(BATCH.n_data),
                "--server-id", me, "--public-key-hex-internal", hex_keys[me][1],
                "--public-key-hex-external", hex_keys[peer][1], "--output", str(work / me / stage)]
        if stage != "publish":
            key_file = tmp_path / f"key-{me}"
            key_file.write_text(hex_keys[me][0])
            args += ["--private-key-file", str(key_file), "--shared-secret-file", str(seed),
                     "--input", str(data / f"server_id={me.lower()}" / f"batch_id={BATCH.batch_id}")]
        before = {"verify2": "verify1", "aggregate": "verify2", "publish": "aggregate"}.get(stage)
        if before:
            args += ["--input-internal", str(work / me / before),
                     "--input-external", str(work / peer / before)]
        return args

    # The clients' shares are made without Spark (generate-integration is tested locally).
    integration.generate([BATCH], public_a, public_b, location(str(data / "server_id=a")),
                         location(str(data / "server_id=b")), n_rows=N_ROWS)
    plan = [server(stage, me) for stage in ("verify1", "verify2", "aggregate") for me in "AB"]
    plan.append(server("publish", "A"))
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "SPARK_CONF_DIR": str(_conf_dir(tmp_path))}
    # No fixed total: on a loaded machine a correct run can take long, but it keeps printing
    # (prio-spark's progress lines); only a silent one has stalled.
    driver = run_watched([sys.executable, "-c", DRIVER, str(tmp_path / "plan.json")], env=env)
    assert driver.returncode == 0, driver.stderr[-3000:]
    print("\n".join(line for line in driver.stderr.splitlines() if " took " in line))
    counts = [line for line in driver.stdout.splitlines() if "errors out of" in line]
    # B's share of the client encoded with n_data + 1 is only a seed: B finds it out at verify2.
    expected_counts = [f"{n} errors out of {N_ROWS} total" for n in (1, 0, 1, 1, 1, 1)]
    assert counts == expected_counts, driver.stdout

    # The entry file for spark-submit: server B publishes.
    import pyspark

    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    entry = Path(__file__).resolve().parents[2] / "prio_processor" / "spark" / "submit.py"
    result = run_watched([str(submit), "--master", cluster, str(entry), *server("publish", "B")[2:]],
                         env={**env, "PYSPARK_DRIVER_PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr[-3000:]
    # spark-submit passes on the Python driver's stderr on its stdout.
    assert "Running publish" in result.stdout.splitlines()
    assert f"published {N_ROWS - 1} valid clients (1 errors out of {N_ROWS} total)" in result.stdout

    expected = integration.expected_counts(BATCH, N_ROWS)
    for me in "AB":
        [published] = read_folder(work / me / "publish")
        assert published["payload"] == expected
        assert (published["error"], published["total"]) == (1, N_ROWS)
    # Both workers ran executors of the applications (each keeps a folder per application).
    assert all(any(work_dir.iterdir()) for work_dir in work_dirs), [list(d.iterdir()) for d in work_dirs]
