from __future__ import annotations

import pytest

from tests_support import Pair


@pytest.fixture(scope="module")
def pair8() -> Pair:
    return Pair(8)
