"""The compose stack for real: `docker compose` against a running engine.

These tests run only when ``IIOTBED_COMPOSE=1`` (CI sets it for one interpreter, after
``.ci/docker.sh`` started the engine and built the images); otherwise they skip saying why.
With ``IIOTBED_COMPOSE=1`` and no engine they fail: CI must not pass them by skipping.
Each session's stack is its own compose project (``iiotbed-test-<pid>``), never a user's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from compose_kit import Stack, stack_env


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "compose: runs the docker compose stack (IIOTBED_COMPOSE=1, a Docker engine)"
    )


def _healthy(states: dict[str, dict[str, Any]], services: tuple[str, ...]) -> bool:
    return all(states.get(s, {}).get("Health") == "healthy" for s in services)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The stack up on a short run of the 5G scenario (its first shift's first three hours
    at 1200x: ~9 s paced), every service healthy; ``down -v`` at the end."""
    env = stack_env("11h", 1200)
    s = Stack(f"iiotbed-test-{os.getpid()}", env)
    t0 = time.monotonic()
    s.compose("build", "-q", timeout=1800)
    s.timings["build"] = time.monotonic() - t0
    try:
        t0 = time.monotonic()
        s.compose("up", "-d", timeout=600)  # returns once the dependencies were healthy
        s.timings["up"] = time.monotonic() - t0
        s.timings["healthy"] = s.timings["up"] + s.wait(
            "every service healthy (devices may have finished already)",
            lambda st: _healthy(st, ("broker-ot", "broker-it", "postgres", "platform", "gateway"))
            and (st.get("devices", {}).get("Health") == "healthy"
                 or st.get("devices", {}).get("State") == "exited"),
            180,
        )  # fmt: skip
        yield s
    finally:
        t0 = time.monotonic()
        s.compose("down", "-v", "--remove-orphans", "--timeout", "30", check=False, timeout=300)
        s.timings["down"] = time.monotonic() - t0
        print(f"\ncompose timings (s): { {k: round(v, 1) for k, v in s.timings.items()} }")
