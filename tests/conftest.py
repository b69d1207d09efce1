"""Fixtures shared by the tests: a real pyd per test, cleaned up whatever happens."""

from __future__ import annotations

import pytest
from harness import Pyd


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
