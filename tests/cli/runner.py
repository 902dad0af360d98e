"""Running `prio` in-process (click's CliRunner) or as a real subprocess, the same way."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

from click.testing import CliRunner

from prio_processor.cli import entry_point


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_inprocess(args: list[str], env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(entry_point, args, env=env or {}, catch_exceptions=False)
    return Result(result.exit_code, result.stdout, result.stderr)


def run_subprocess(args: list[str], env: dict[str, str] | None = None) -> Result:
    full_env = {k: v for k, v in os.environ.items() if k not in _PRIO_ENV}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "prio_processor", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


_PRIO_ENV = {
    "PROGRESS_INTERVAL",
    "N_DATA",
    "BATCH_ID",
    "SERVER_ID",
    "PRIVATE_KEY_HEX",
    "PRIVATE_KEY_FILE",
    "SHARED_SECRET",
    "SHARED_SECRET_FILE",
    "PUBLIC_KEY_HEX_INTERNAL",
    "PUBLIC_KEY_HEX_EXTERNAL",
    "INPUT",
    "INPUT_INTERNAL",
    "INPUT_EXTERNAL",
    "OUTPUT",
    "OUTPUT_A",
    "OUTPUT_B",
    "PRG_KEYING",
    "EVALUATION_POINT",
    "REJECTS",
    "WORKERS",
    "CACHE",
}

RUNNERS = {"inprocess": run_inprocess, "subprocess": run_subprocess}
