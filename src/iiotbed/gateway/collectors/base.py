"""What every collector shares: the sink it feeds, its counters, malformed-input logging.

A collector turns one protocol's traffic into :class:`~iiotbed.telemetry.Sample` and
:class:`~iiotbed.telemetry.Event` records and hands them to a :class:`Sink` without
waiting: protocol callbacks never block on the output. ``run()`` works until cancelled
and reconnects by itself, with :class:`iiotbed.mqtt.Backoff`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from iiotbed.mqtt import Backoff  # re-exported: the one backoff policy lives with the transport
from iiotbed.telemetry import Event, Sample

__all__ = ["Backoff", "Collector", "CollectorStats", "MalformedLog", "Sink"]


class Sink(Protocol):
    """Where collectors put records; both calls return at once (the gateway batches them)."""

    def samples(self, collector: str, samples: Sequence[Sample]) -> None: ...
    def events(self, collector: str, events: Sequence[Event]) -> None: ...


@dataclass
class CollectorStats:
    """Counters of one collector since it was created."""

    messages: int = 0  # protocol messages (MQTT messages, OPC UA notifications) received
    samples: int = 0  # samples handed to the sink
    events: int = 0  # events handed to the sink
    malformed: int = 0  # messages (or parts) refused: bad encoding, types, topics, aliases
    stale_marks: int = 0  # samples marked stale (death, broken connection)
    connects: int = 0
    connection_losses: int = 0
    last_message: float | None = None  # gateway wall clock of the last message

    def lag(self, now: float) -> float | None:
        """Seconds since the last message arrived (None before the first)."""
        return None if self.last_message is None else max(0.0, now - self.last_message)


@runtime_checkable
class Collector(Protocol):
    """A protocol collector: ``await run()`` collects until cancelled."""

    name: str

    @property
    def stats(self) -> CollectorStats: ...

    @property
    def connected(self) -> bool: ...

    async def run(self) -> None: ...


class MalformedLog:
    """Counts refused input and logs it with its topic, at most ``burst`` lines per ``period`` s.

    A flood of garbage must not flood the log or slow valid traffic: past the burst, lines
    are suppressed and their number is reported with the next logged one.
    """

    def __init__(
        self,
        stats: CollectorStats,
        logger: logging.Logger,
        *,
        burst: int = 10,
        period: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stats = stats
        self.log = logger
        self.burst = burst
        self.period = period
        self.clock = clock
        self._window_start = -float("inf")
        self._in_window = 0
        self._suppressed = 0

    def __call__(self, where: str, reason: str) -> None:
        self.stats.malformed += 1
        now = self.clock()
        if now - self._window_start >= self.period:
            self._window_start, self._in_window = now, 0
        if self._in_window >= self.burst:
            self._suppressed += 1
            return
        self._in_window += 1
        more = f" ({self._suppressed} more suppressed)" if self._suppressed else ""
        self._suppressed = 0
        self.log.warning("malformed input on %s: %s%s", where, reason[:300], more)
