"""The command line shell: lazy commands, --version, environment variables in --help."""

from __future__ import annotations

import subprocess
import sys

from runner import run_inprocess

_LOADED = (
    "import sys; {action}; "
    "print(sorted(m for m in sys.modules if m == 'numpy' or m.startswith('prio_processor.engine')))"
)


def _modules_after(action: str) -> str:
    """The heavy modules loaded after `action` (the last line printed)."""
    code = _LOADED.format(action=action)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return result.stdout.strip().splitlines()[-1]


def test_help_and_bucket_commands_load_neither_numpy_nor_the_engine(tmp_path):
    main = "from prio_processor.cli import entry_point as e"
    help_ = f"{main}; e.main(['--help'], standalone_mode=False)"
    bucket = f"{main}; e.main(['bucket', 'ls', {str(tmp_path)!r}], standalone_mode=False)"
    assert _modules_after(help_) == "[]"
    assert _modules_after(bucket) == "[]"
    verify = f"{main}; e.main(['verify1', '--help'], standalone_mode=False)"
    assert "numpy" in _modules_after(verify)


def test_top_level_help_lists_every_command():
    result = run_inprocess(["--help"])
    for name in (
        "shared-seed",
        "keygen",
        "encode-shares",
        "verify1",
        "verify2",
        "aggregate",
        "publish",
        "bucket",
        "batches",
        "integration",
    ):
        assert f"  {name}" in result.stdout


def test_version():
    result = run_inprocess(["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("prio ")


def test_help_names_environment_variables_and_what_inputs_are():
    verify1 = " ".join(run_inprocess(["verify1", "--help"]).stdout.split())
    for variable in (
        "N_DATA",
        "BATCH_ID",
        "SERVER_ID",
        "PRIVATE_KEY_HEX",
        "SHARED_SECRET",
        "INPUT",
        "OUTPUT",
        "REJECTS",
        "PRG_KEYING",
        "EVALUATION_POINT",
    ):
        assert f"env var: {variable}" in verify1
    encode = " ".join(run_inprocess(["encode-shares", "--help"]).stdout.split())
    assert "plaintext client data" in encode
    assert "Not shares" in encode
    publish = run_inprocess(["publish", "--help"]).stdout
    for option in (
        "--private-key-hex",
        "--private-key-file",
        "--shared-secret",
        "--shared-secret-file",
        "--rejects",
    ):
        assert option in publish
