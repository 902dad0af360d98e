"""The images built from the Dockerfile (`make images`): what each holds, run in containers."""

from __future__ import annotations

import subprocess

import pytest

pytestmark = pytest.mark.container

RUNTIME = "prio-processor:latest"
DEV = "prio-processor:dev"


def _run(image: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "run", "--rm", "--network", "none", image, "bash", "-c", script],
                          capture_output=True, text=True, timeout=600)


def test_runtime_image_runs_every_command_as_uid_10001():
    result = _run(RUNTIME, """
        set -e
        id -u; id -g; pwd
        prio --help >/dev/null && prio-spark --help >/dev/null && prio-processor --help >/dev/null
        bin/process --help | head -n 1
        ls config
        test -r config/test-small.json && test ! -L config/test-small.json && echo "test-small.json readable"
        java -version 2>&1 | head -n 1
        prio keygen | python3 -c 'import json, sys; print(sorted(json.load(sys.stdin)))'
        """)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == ["10001", "10001", "/app"]
    assert lines[3] == "Run one Prio server over every batch of DATA_CONFIG against its buckets:"
    assert "test-small.json readable" in lines
    assert lines[-2].startswith('openjdk version "17.')
    assert lines[-1] == "['private_key', 'public_key']"


def test_runtime_image_runs_a_spark_stage():
    # A real prio-spark job in local mode (Java 17 and PySpark in the image).
    result = _run(RUNTIME, """
        set -e
        export SPARK_LOCAL_IP=127.0.0.1 DATA_CONFIG=config/test-small.json
        keys_a=$(prio keygen) keys_b=$(prio keygen)
        key() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
        prio-spark --master 'local[1]' generate-integration --n-rows 5 --n-partitions 1 \
            --public-key-hex-internal "$(key "$keys_a" public_key)" \
            --public-key-hex-external "$(key "$keys_b" public_key)" --output /tmp/shares 2>/dev/null
        cd /tmp/shares && ls -d server_id=*/batch_id=* | sort
        """)
    assert result.returncode == 0, result.stderr[-3000:]
    folders = result.stdout.split()
    assert "server_id=a/batch_id=test-0" in folders, folders
    assert len(folders) % 2 == 0 and any(f.startswith("server_id=b/") for f in folders)


def test_runtime_image_has_no_compilers_or_test_tools():
    result = _run(RUNTIME, """
        for tool in gcc cc c++ make ld pytest gcp-storage-emulator ruff mypy; do
            command -v "$tool" && echo "found $tool"
        done
        for module in pytest hypothesis gcp_storage_emulator; do
            python3 -c "import $module" 2>/dev/null && echo "found $module"
        done
        true
        """)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_dev_image_adds_the_storage_server_and_test_tools():
    result = _run(DEV, """
        set -e
        id -u
        gcp-storage-emulator start --help >/dev/null
        python3 -m pytest --version
        prio --help >/dev/null && test -d tests/vectors && echo ok
        """)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "10001" and lines[-1] == "ok"
    assert lines[1].startswith("pytest ")
