"""House rules that tools check: ruff (incl. ASYNC, DTZ) and mypy --strict on src."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )


def test_ruff_is_clean() -> None:
    paths = [p for p in ("src", "tests", "bench") if (ROOT / p).exists()]
    res = _run("ruff", "check", *paths)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.slow
def test_mypy_strict_is_clean() -> None:
    res = _run("mypy")  # files and strictness come from pyproject.toml
    assert res.returncode == 0, res.stdout + res.stderr
