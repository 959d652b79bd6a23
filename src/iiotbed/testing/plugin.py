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
- ``iiotbed_factory``: ``iiotbed_factory(scenario_file, speed=2000, duration=None,
  hold=False, sparkplug_group=None, replication=0, broker=None)`` runs the scenario live
  (OPC UA, Sparkplug B, VDA 5050 on the broker) and returns a
  :class:`~iiotbed.testing.FactoryHandle` once its endpoints are up (``endpoints``,
  ``release()``, ``wait()``, then ``answer_key`` and ``recording``); stopped at the test's end.
- ``iiotbed_capture``: ``iiotbed_capture(*filters, broker=None)`` subscribes (returning once
  the broker has the subscriptions) and returns a :class:`~iiotbed.testing.Capture`
  whose ``messages`` the conformance checkers take.

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
    from iiotbed.testing import Capture, FactoryHandle, ReplayHandle

__all__ = [
    "iiotbed_broker",
    "iiotbed_capture",
    "iiotbed_factory",
    "iiotbed_replay",
    "pytest_addoption",
]


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


@pytest.fixture
def iiotbed_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., FactoryHandle]]:
    """Start live factories: ``iiotbed_factory(scenario_file, speed=2000, duration=None,
    hold=False, ...)`` returns a running :class:`~iiotbed.testing.FactoryHandle`."""
    from iiotbed.testing import FactoryHandle

    handles: list[FactoryHandle] = []

    def start(scenario_file: Path | str, *, speed: float = 2000.0,
              duration: float | str | None = None, hold: bool = False,
              sparkplug_group: str | None = None, replication: int = 0,
              broker: str | None = None, timeout: float = 60.0) -> FactoryHandle:  # fmt: skip
        url = broker or request.getfixturevalue("iiotbed_broker")
        out = tmp_path_factory.mktemp("iiotbed-factory") / "factory.mcap"
        handle = FactoryHandle(scenario_file, url, out, speed=speed, duration=duration,
                               replication=replication, sparkplug_group=sparkplug_group,
                               hold=hold)  # fmt: skip
        handles.append(handle)
        handle.start(timeout)
        return handle

    try:
        yield start
    finally:
        for h in handles:
            h.stop()


@pytest.fixture
def iiotbed_capture(request: pytest.FixtureRequest) -> Iterator[Callable[..., Capture]]:
    """Subscribe: ``iiotbed_capture(*filters, broker=None)`` returns a running
    :class:`~iiotbed.testing.Capture` (subscribed before it returns)."""
    from iiotbed.testing import Capture

    captures: list[Capture] = []

    def start(*filters: str, broker: str | None = None, qos: int = 1) -> Capture:
        url = broker or request.getfixturevalue("iiotbed_broker")
        capture = Capture(url, filters, qos=qos)
        captures.append(capture)
        capture.start()
        return capture

    try:
        yield start
    finally:
        for c in captures:
            c.stop()
