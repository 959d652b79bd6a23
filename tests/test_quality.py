"""House rules that tools check: ruff (incl. ASYNC, DTZ) and mypy --strict on src; the pinned
install (constraints.txt) agrees with pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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


def test_constraints_pin_every_requirement_within_its_bounds() -> None:
    # constraints.txt (README, .ci/run) must move with pyproject.toml: a new dependency or a
    # new bound needs `.ci/refresh-constraints`, or the pinned install drifts from what we test
    pins: dict[str, list[str]] = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            pin = Requirement(line)
            specs = list(pin.specifier)
            assert len(specs) == 1 and specs[0].operator == "==", f"not an exact pin: {line!r}"
            pins.setdefault(canonicalize_name(pin.name), []).append(specs[0].version)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"].values()
    wanted = project["dependencies"] + [r for reqs in extras for r in reqs]
    problems = []
    for text in wanted:
        req = Requirement(text)
        versions = pins.get(canonicalize_name(req.name))
        if not versions:
            problems.append(f"{req.name}: not pinned")
        problems += [
            f"{req.name}=={v} outside pyproject.toml's {req.specifier}"
            for v in versions or ()
            if not req.specifier.contains(v, prereleases=True)
        ]
    stale = "\n".join(problems)
    assert not problems, f"constraints.txt is stale (run .ci/refresh-constraints):\n{stale}"
