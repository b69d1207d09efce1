"""Fixtures shared by the tests: a real pyd per test, cleaned up whatever happens.

The pyramid: unit/ (cores, config, formats; no processes), driver/ (a pool in-process on
127.0.0.1:0, no master), e2e/ (a real pyd started by the test, real peers).
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # harness, fcgi_client
from harness import Pyd  # noqa: E402


@pytest.fixture
def pyd_factory(tmp_path):
    """make(config_text, directory=tmp_path) -> Pyd (not started); all stopped at the end."""
    made: list[Pyd] = []

    def make(config: str, directory=None, name: str = "pyd.conf") -> Pyd:
        p = Pyd(directory or tmp_path / f"pyd{len(made)}", config, name)
        made.append(p)
        return p

    yield make
    for p in made:
        p.cleanup()
