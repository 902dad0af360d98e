"""setup.py beside pyproject.toml: `python setup.py --version`, and the egg the original's scripts
built for a Spark cluster's --py-files, with the package's data files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from prio_processor import dataconfig

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "LICENSE")


def _project_copy(tmp_path: Path) -> Path:
    """The files a build reads, copied, so that the build's by-products stay out of the worktree."""
    copy = tmp_path / "project"
    copy.mkdir()
    for name in SOURCES:
        shutil.copy2(ROOT / name, copy / name)
    skipped = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "prio_processor", copy / "prio_processor", ignore=skipped)
    return copy


def _python(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True, text=True, timeout=300,
    )


def test_setup_py_version_is_pyproject_version():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    result = _python("setup.py", "--version", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == version == metadata.version("prio-processor")


@pytest.mark.slow
def test_setup_py_egg_ships_the_default_data_config(tmp_path):
    project = _project_copy(tmp_path)
    result = _python("setup.py", "-q", "bdist_egg", "--dist-dir", str(tmp_path / "dist"), cwd=project)
    assert result.returncode == 0, result.stderr
    [egg] = (tmp_path / "dist").glob("prio_processor-*.egg")
    names = set(zipfile.ZipFile(egg).namelist())
    shipped = {"data/test-small.json", "firefox/data/telemetry_origin_data_inc.json"}
    assert {f"prio_processor/{name}" for name in shipped} <= names
    # Imported from the egg alone, as a cluster's executors do, the default data config is there.
    script = "from prio_processor import dataconfig; print(dataconfig.__file__, dataconfig.load_default())"
    loaded = _python("-c", script, cwd=tmp_path, PYTHONPATH=str(egg), PYTHONNOUSERSITE="1")
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.startswith(f"{egg}/prio_processor/dataconfig.py ")
    assert "Batch(batch_id='test-0', n_data=10)" in loaded.stdout


def test_config_test_small_is_the_shipped_default():
    shipped = json.loads((ROOT / "config" / "test-small.json").read_text())
    assert [dataconfig.Batch(**b) for b in shipped] == dataconfig.load_default()
    linked = (ROOT / "config" / "test-small.json").resolve()
    assert linked == ROOT / "prio_processor" / "data" / "test-small.json"
