"""Fixtures of the fault cases (helpers live in ``kit``): an own broker per case."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kit import Mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """An own Mosquitto on a free port (never the shared one on 1883): a case may kill it."""
    m = Mosquitto(tmp_path / "broker").start()
    yield m
    m.kill()
