"""Holding an MQTT connection for a collector: retry the first connect, then let it reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from iiotbed.errors import ConnectorError
from iiotbed.gateway.collectors.base import CollectorStats
from iiotbed.mqtt import Backoff, Message, MqttConnection, Will

__all__ = ["MqttCollector", "count_message", "hold_connection", "match_topic"]


async def hold_connection(
    make: Callable[[], MqttConnection],
    on_open: Callable[[MqttConnection | None], None],
    backoff: Backoff,
    log: logging.Logger,
    before_close: Callable[[MqttConnection], Awaitable[None]] | None = None,
) -> None:
    """Keep a connection made by ``make()`` open until cancelled.

    :class:`MqttConnection` reconnects by itself once up, but its first connect raises when
    the broker is away: that one is retried here with ``backoff`` (give the connection the
    same object, so both follow one policy).
    """
    while True:
        conn = make()
        try:
            async with conn:
                backoff.reset()
                on_open(conn)
                try:
                    await asyncio.Future()  # until cancelled; the connection reconnects itself
                finally:
                    if before_close is not None and conn.connected:
                        with contextlib.suppress(ConnectorError):
                            await before_close(conn)
                    on_open(None)
        except ConnectorError as exc:
            wait = backoff.next()
            log.warning("%s; retrying in %.2f s", exc, wait)
            await asyncio.sleep(wait)


class MqttCollector:
    """A collector on one MQTT connection, held by :func:`hold_connection` until cancelled."""

    broker: str
    client_id: str
    stats: CollectorStats
    _backoff: Backoff
    _conn: MqttConnection | None

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.connected

    def _subscriptions(self) -> list[tuple[str, int]]:
        raise NotImplementedError

    def _on_message(self, msg: Message) -> None:
        raise NotImplementedError

    def _will(self) -> Will | None:
        return None

    def _make(self) -> MqttConnection:
        return MqttConnection(
            self.broker,
            client_id=self.client_id,
            on_message=self._on_message,
            subscriptions=self._subscriptions(),
            will=self._will,
            on_connect=self._on_connect,
            on_connection_lost=self._on_lost,
            backoff=self._backoff,  # one policy for the first connect and every reconnect
        )

    def _on_connect(self) -> None:
        self.stats.connects += 1

    def _on_lost(self) -> None:
        self.stats.connection_losses += 1

    def _opened(self, conn: MqttConnection | None) -> None:
        self._conn = conn

    async def _before_close(self, conn: MqttConnection) -> None:
        """What to publish on a clean way out (nothing by default)."""

    async def run(self) -> None:
        """Collect until cancelled."""
        # logged under the collector's module, as its other messages are
        log = logging.getLogger(type(self).__module__)
        await hold_connection(self._make, self._opened, self._backoff, log, self._before_close)


def count_message(stats: CollectorStats) -> float:
    """Count one received message; the gateway's receive time (Unix seconds)."""
    now = time.time()
    stats.messages += 1
    stats.last_message = now
    return now


def match_topic(filter_levels: list[str], topic_levels: list[str]) -> bool:
    """MQTT topic filter matching (``+`` one level, ``#`` the rest)."""
    for i, f in enumerate(filter_levels):
        if f == "#":
            return True
        if i >= len(topic_levels) or (f != "+" and f != topic_levels[i]):
            return False
    return len(filter_levels) == len(topic_levels)
