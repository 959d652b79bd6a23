"""Where the recorded run comes from: the one iiotbed ships with its sources, or yours."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]  # this example lives in iiotbed's examples/


@pytest.fixture
def recording() -> Path:
    """``$HISTORIAN_RECORDING``, else iiotbed's single-machine shift (8 h, 753 good units)."""
    path = Path(os.environ.get("HISTORIAN_RECORDING", REPO / "tests/data/single-machine-8h.mcap"))
    if not path.is_file():
        pytest.fail(
            f"no recording at {path}: set HISTORIAN_RECORDING or make one with "
            "`iiotbed record scenarios/single-machine.yaml --duration 8h -o shift.mcap`"
        )
    return path


@pytest.fixture
def scenario() -> Path:
    """The scenario the live-factory test runs (iiotbed's single-machine teaching line)."""
    return REPO / "scenarios/single-machine.yaml"
