"""The `prio-processor` shell: lazy commands, environment variables in --help, one-line errors."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from prio_processor.firefox.commands import COMMANDS, entry_point

_LOADED = (
    "import sys; from prio_processor.firefox.commands import entry_point as e; "
    "e.main({args!r}, standalone_mode=False); "
    "print(sorted(m for m in sys.modules if m in ('numpy', 'matplotlib') or m.endswith('subcommands')))"
)


def _modules_after(args: list[str]) -> str:
    code = _LOADED.format(args=args)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return result.stdout.strip().splitlines()[-1]


def test_top_level_help_loads_no_command_and_lists_them_all():
    assert _modules_after(["--help"]) == "[]"
    assert "subcommands" in _modules_after(["staging", "--help"])
    assert "matplotlib" not in _modules_after(["report", "--help"])
    shown = CliRunner().invoke(entry_point, ["--help"]).stdout
    for name in COMMANDS:
        assert f"  {name}" in shown
        assert CliRunner().invoke(entry_point, [name, "--help"]).exit_code == 0


def test_python_m_runs_the_same_command():
    result = subprocess.run(
        [sys.executable, "-m", "prio_processor.firefox", "--help"], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("Usage: prio-processor ")


def test_help_names_environment_variables():
    def help_of(command: str) -> str:
        return " ".join(CliRunner().invoke(entry_point, [command, "--help"]).stdout.split())

    expected = {
        "staging": (
            "SUBMISSION_DATE",
            "PING_INPUT",
            "PING_SOURCE",
            "STAGING_OUTPUT",
            "DATA_CONFIG",
            "REJECTS",
        ),
        "index": ("SUBMISSION_DATE", "DATA_CONFIG", "ORIGIN_CONFIG", "REJECTS"),
        "insert": ("SUBMISSION_DATE", "DATABASE", "TABLE", "DATASET"),
        "report": ("DATABASE", "TABLE", "MIN_BATCH_SIZE"),
        "generate-pings": ("DATA_CONFIG", "PUBLIC_KEY_HEX_INTERNAL", "PUBLIC_KEY_HEX_EXTERNAL", "PRG_KEYING"),
    }
    for command, variables in expected.items():
        text = help_of(command)
        for variable in variables:
            assert f"env var: {variable}" in text, (command, variable)


def test_bad_values_are_one_line_errors(tmp_path):
    cases = [
        (["insert", "--input", str(tmp_path), "--date", "26/06/2019"], "--date '26/06/2019' is not a date"),
        (["insert", "--input", str(tmp_path / "nope"), "--date", "2019-06-26"], "does not exist"),
        (
            ["report", "--database", str(tmp_path / "nope.sqlite"), "--output", str(tmp_path)],
            "does not exist",
        ),
        (
            [
                "generate-pings",
                "--config",
                str(tmp_path / "none.json"),
                "--output",
                str(tmp_path),
                "--date",
                "2019-06-26",
                "--public-key-hex-internal",
                "00" * 32,
                "--public-key-hex-external",
                "11" * 32,
            ],
            "not a usable Curve25519 public key",
        ),
    ]
    for args, message in cases:
        result = CliRunner().invoke(entry_point, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
        assert result.stdout == ""
