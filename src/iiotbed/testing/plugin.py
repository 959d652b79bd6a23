"""The iiotbed pytest plugin (entry point ``pytest11``): replay recorded runs in tests.

Fixtures (synchronous: a replay runs in its own thread, with or without pytest-asyncio):

- ``iiotbed_broker`` (session): the broker URL from ``--iiotbed-broker`` or the
  ``IIOTBED_BROKER`` environment variable, else an embedded broker on a free port
  (Mosquitto when installed, else amqtt), stopped at the session's end.
- ``iiotbed_replay``: a function ``iiotbed_replay(recording, speed=None, only=None,
  topic_prefix="", loops=1, broker=None)`` that starts replaying ``recording`` (None
  ``speed``: as fast as the broker acknowledges) and returns a
  :class:`~iiotbed.testing.ReplayHandle` (``wait()``, ``stop()``, ``answer_key``); every
  replay still running at the test's end is stopped.

Only the option and these fixtures are registered; importing this module loads nothing
heavy, so it costs other test suites nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from iiotbed.testing import ReplayHandle

__all__ = ["iiotbed_broker", "iiotbed_replay", "pytest_addoption"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("iiotbed", "iiotbed recorded runs")
    group.addoption(
        "--iiotbed-broker", default=None, metavar="URL",
        help="MQTT broker the iiotbed fixtures replay to, e.g. mqtt://127.0.0.1:1883 "
        "(default: $IIOTBED_BROKER, else an embedded broker on a free port)",
    )  # fmt: skip


@pytest.fixture(scope="session")
def iiotbed_broker(request: pytest.FixtureRequest) -> Iterator[str]:
    """The MQTT broker URL replays go to (see the module docstring)."""
    url = request.config.getoption("--iiotbed-broker") or os.environ.get("IIOTBED_BROKER")
    if url:
        from iiotbed.mqtt import parse_broker_url

        parse_broker_url(url)  # a clear error for a malformed URL
        yield url
        return
    from iiotbed.testing import BackgroundBroker

    broker = BackgroundBroker()
    broker.start()
    try:
        yield broker.url
    finally:
        broker.halt()


@pytest.fixture
def iiotbed_replay(request: pytest.FixtureRequest) -> Iterator[Callable[..., ReplayHandle]]:
    """Start replays: ``iiotbed_replay(recording, speed=None, only=None, topic_prefix="",
    loops=1, broker=None)`` returns a running :class:`~iiotbed.testing.ReplayHandle`."""
    from iiotbed.recording.replay import ReplayOptions
    from iiotbed.testing import ReplayHandle

    handles: list[ReplayHandle] = []

    def start(recording: Path | str, *, speed: float | None = None,
              only: Iterable[str] | None = None, topic_prefix: str = "", loops: int = 1,
              broker: str | None = None) -> ReplayHandle:  # fmt: skip
        url = broker or request.getfixturevalue("iiotbed_broker")
        options = ReplayOptions(url, speed=speed, loops=loops, topic_prefix=topic_prefix,
                                only=None if only is None else frozenset(only))  # fmt: skip
        handle = ReplayHandle(recording, options)
        handle.start()
        handles.append(handle)
        return handle

    try:
        yield start
    finally:
        for h in handles:
            h.stop()
