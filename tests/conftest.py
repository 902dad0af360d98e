"""Shared fixtures: the test vectors made by the real libprio, read in place."""

from __future__ import annotations

import os

import pytest

from vectors import VECTORS


def pytest_report_header(config):
    return f"test vectors: {VECTORS}"


@pytest.fixture(scope="session")
def libprio():
    """The real libprio C library (PyPI prio==0.2), the interop oracle.

    Outside CI it may be missing (the tests then skip and say how to install it);
    in CI a missing oracle fails the run.
    """
    try:
        from prio import libprio as oracle
    except ImportError:
        message = "libprio oracle (PyPI prio==0.2) is not installed: run `make oracle`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    oracle.Prio_init()
    return oracle
