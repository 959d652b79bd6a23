"""The gateway service: collectors → outbox → durable buffer → UNS publisher, plus health.

:class:`Gateway` (an ``async with``) opens the buffer and the publisher, and one TaskGroup
owns every collector, the forwarder (outbox → buffer in batches) and the health reporter.
Health and metrics go retained to ``<root>/_gateway/<id>/status`` (``online``/``offline``,
the Will) and ``<root>/_gateway/<id>/metrics`` every ``metrics_interval`` seconds, and to
the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any, Self

import orjson

from iiotbed._aio import ExcInfo
from iiotbed.gateway.buffer import DurableBuffer
from iiotbed.gateway.collectors._mqtt import hold_connection
from iiotbed.gateway.collectors.base import Collector, CollectorStats
from iiotbed.gateway.publisher import UnsPublisher
from iiotbed.gateway.settings import GatewaySettings
from iiotbed.mqtt import Backoff, MqttConnection, Will
from iiotbed.protocols.uns import format_ts
from iiotbed.telemetry import Event, Sample

__all__ = ["Gateway", "Outbox", "build_collectors"]

log = logging.getLogger(__name__)


class _Tasks:
    """A TaskGroup for the gateway's own tasks that lets the body's exception pass unchanged.

    A plain TaskGroup wraps any exception of its body in an ExceptionGroup; here only a
    cancellation reaches the group (it may stand for a failed task, which the group then
    raises), and any other body exception goes on as it is.
    """

    def __init__(self) -> None:
        self._tg = asyncio.TaskGroup()

    async def __aenter__(self) -> asyncio.TaskGroup:
        return await self._tg.__aenter__()

    async def __aexit__(self, *exc_info: *ExcInfo) -> None:
        exc_type = exc_info[0]
        if exc_type is not None and not issubclass(exc_type, asyncio.CancelledError):
            exc_info = (None, None, None)  # the caller cancelled every task already
        await self._tg.__aexit__(*exc_info)


class Outbox:
    """The :class:`~iiotbed.gateway.collectors.Sink` of a gateway: collectors append, the
    forwarder takes everything in one go. Past ``limit`` records the oldest are dropped
    (counted): a stalled disk must not eat the memory."""

    def __init__(self, wake: asyncio.Event, *, batch: int = 1000, limit: int = 1_000_000) -> None:
        self._wake = wake
        self._batch = batch
        self._limit = limit
        self._samples: deque[Sample] = deque()
        self._events: list[Event] = []
        self.dropped = 0

    def samples(self, collector: str, samples: Sequence[Sample]) -> None:
        self._samples.extend(samples)
        over = len(self._samples) - self._limit
        if over > 0:
            for _ in range(over):
                self._samples.popleft()
            self.dropped += over
        if len(self._samples) >= self._batch:
            self._wake.set()

    def events(self, collector: str, events: Sequence[Event]) -> None:
        self._events.extend(events)
        self._wake.set()

    def __len__(self) -> int:
        return len(self._samples) + len(self._events)

    def take(self) -> tuple[list[Sample], list[Event]]:
        samples, events = list(self._samples), self._events
        self._samples.clear()
        self._events = []
        return samples, events


def build_collectors(settings: GatewaySettings, sink: Outbox) -> list[Collector]:
    """The collectors the settings ask for (asyncua is imported only with OPC UA)."""
    out: list[Collector] = []
    epoch_s = settings.epoch.timestamp()
    default_broker = settings.output.broker
    if settings.opcua is not None:
        from iiotbed.gateway.collectors.opcua import OpcUaCollector

        o = settings.opcua
        out.append(
            OpcUaCollector(
                o.endpoints, sink, epoch=settings.epoch, assets=o.assets,
                sampling_interval=o.sampling_interval, publishing_interval=o.publishing_interval,
                queue_size=o.queue_size, events=o.events, user=o.user, password=o.password,
                certificate=o.certificate, private_key=o.private_key,
                backoff_initial=o.backoff.initial, backoff_max=o.backoff.max,
            )
        )
    if settings.sparkplug is not None:
        from iiotbed.gateway.collectors.sparkplug import SparkplugHost

        s = settings.sparkplug
        out.append(
            SparkplugHost(
                s.broker or default_broker, sink, epoch=epoch_s, host_id=s.host_id,
                groups=s.groups, edge_nodes=s.edge_nodes, assets=s.assets,
                rebirth_interval=s.rebirth_interval,
                client_id=f"iiotbed-{settings.id}-spb-host",
                backoff_initial=s.backoff.initial, backoff_max=s.backoff.max,
            )
        )
    if settings.vda5050 is not None:
        from iiotbed.gateway.collectors.vda5050 import Vda5050Collector

        v = settings.vda5050
        out.append(
            Vda5050Collector(
                v.broker or default_broker, sink, epoch=epoch_s, manufacturer=v.manufacturer,
                interface_name=v.interface_name, major_version=v.major_version,
                assets=v.assets, prefix=v.prefix, client_id=f"iiotbed-{settings.id}-vda",
                backoff_initial=v.backoff.initial, backoff_max=v.backoff.max,
            )
        )
    if settings.json_mqtt is not None:
        from iiotbed.gateway.collectors.json_mqtt import JsonMapping, JsonMqttCollector

        j = settings.json_mqtt
        out.append(
            JsonMqttCollector(
                j.broker or default_broker, sink,
                [JsonMapping(**m.model_dump()) for m in j.mappings], epoch=epoch_s, qos=j.qos,
                client_id=f"iiotbed-{settings.id}-json",
                backoff_initial=j.backoff.initial, backoff_max=j.backoff.max,
            )
        )
    return out


class Gateway:
    """One gateway; see the module docstring. ``collectors`` replaces the ones the settings
    describe (tests); they must feed :attr:`outbox`."""

    def __init__(self, settings: GatewaySettings, *, collectors: Sequence[Collector] | None = None) -> None:
        self.settings = settings
        out = settings.output
        self._wake = asyncio.Event()
        self.outbox = Outbox(self._wake, batch=out.batch_size)
        self.collectors: list[Collector] = (
            list(collectors) if collectors is not None else build_collectors(settings, self.outbox)
        )
        names = [c.name for c in self.collectors]
        if len(set(names)) != len(names):
            raise ValueError(f"collector names must be unique, got {names}")
        # the dedup memory is the run's: a repeated run's samples are not resends of the last
        self.buffer = DurableBuffer(out.buffer, max_rows=out.max_rows, run_id=settings.run_id)
        self.publisher = UnsPublisher(
            out.broker, self.buffer, line=settings.line, epoch=settings.epoch.timestamp(),
            run_id=settings.run_id, root=out.root, client_id=f"iiotbed-{settings.id}-uns",
            current_values=out.current_values, batch_size=out.batch_size,
            backoff_initial=out.backoff.initial, backoff_max=out.backoff.max,
            ingest=out.ingest, resend_window=out.resend_window,
        )  # fmt: skip
        base = f"{out.root}/_gateway/{settings.id}"
        self.status_topic = f"{base}/status"
        self.metrics_topic = f"{base}/metrics"
        self._stack: AsyncExitStack | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._status: MqttConnection | None = None
        self._status_backoff = Backoff(0.5, 10.0)
        self._started = time.time()
        self._forward_lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            await stack.enter_async_context(self.buffer)
            await stack.enter_async_context(self.publisher)
            stack.push_async_callback(self._drain)  # runs after the TaskGroup ends
            tg = await stack.enter_async_context(_Tasks())
            for c in self.collectors:
                self._tasks[c.name] = tg.create_task(c.run(), name=f"collector-{c.name}")
            self._tasks["_forwarder"] = tg.create_task(self._forwarder(), name="gateway-forwarder")
            self._tasks["_status"] = tg.create_task(self._hold_status(), name="gateway-status")
            self._tasks["_metrics"] = tg.create_task(self._reporter(), name="gateway-metrics")
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        self._started = time.time()
        log.info("gateway %s up: %s", self.settings.id, ", ".join(c.name for c in self.collectors))
        return self

    async def __aexit__(self, *exc_info: *ExcInfo) -> None:
        stack, self._stack = self._stack, None
        if stack is None:
            return
        for task in self._tasks.values():
            task.cancel()
        # the body's exception goes through every exit (and out, unchanged, after them)
        await stack.__aexit__(*exc_info)

    async def _drain(self) -> None:
        # what collectors handed over before the stop goes to the buffer (replayed next start)
        await self._forward()

    async def wait(self) -> None:
        """Run until a collector or the forwarder fails (re-raised) or the task is cancelled."""
        tasks = list(self._tasks.values())
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]

    # ------------------------------------------------------------------ forwarding

    async def _forwarder(self) -> None:
        interval = self.settings.output.flush_interval
        while True:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            self._wake.clear()
            await self._forward()

    async def _forward(self) -> None:
        async with self._forward_lock:
            samples, events = self.outbox.take()
            if samples:
                await self.publisher.submit(samples)
            if events:
                await self.publisher.submit_events(events)

    async def flush(self) -> None:
        """Forward what collectors handed over and wait until the broker confirmed it all
        (bound it with ``asyncio.timeout``)."""
        await self._forward()
        await self.publisher.flush()

    # ------------------------------------------------------------------ health

    @property
    def healthy(self) -> bool:
        """Every collector and the forwarder are running and the buffer works."""
        return all(not t.done() for t in self._tasks.values()) and bool(self._tasks)

    def metrics(self) -> dict[str, Any]:
        """Counters of the gateway and of each collector (see docs/gateway.md)."""
        now = time.time()
        pm = self.publisher.metrics
        collectors: dict[str, Any] = {}
        for c in self.collectors:
            st: CollectorStats = c.stats
            d = dataclasses.asdict(st)
            d.pop("last_message")
            d["received"] = st.samples + st.events
            lag = st.lag(now)
            d["lag_s"] = None if lag is None else round(lag, 3)
            d["connected"] = c.connected
            task = self._tasks.get(c.name)
            d["running"] = task is not None and not task.done()
            collectors[c.name] = d
        return {
            "id": self.settings.id,
            "run_id": self.settings.run_id,
            "time": format_ts(now),
            "uptime_s": round(now - self._started, 3),
            "healthy": self.healthy,
            "received": sum(c.stats.samples + c.stats.events for c in self.collectors),
            "malformed": sum(c.stats.malformed for c in self.collectors) + pm.malformed,
            "forwarded": pm.forwarded,
            "buffered": pm.buffered + len(self.outbox),
            "dropped": pm.dropped + self.outbox.dropped,
            "duplicates": pm.duplicates,
            "lag_s": round(pm.lag_s, 3),
            "output": {
                "connected": self.publisher.connected,
                "connects": pm.connects,
                "connection_losses": pm.connection_losses,
                "batches": pm.batches,
                "malformed": pm.malformed,
                "ingests_online": pm.ingests_online,
                "holds": pm.holds,
                "held_back": pm.held_back,
                "resent": pm.resent,
            },
            "collectors": collectors,
        }

    def _status_connection(self) -> MqttConnection:
        out = self.settings.output
        return MqttConnection(
            out.broker,
            client_id=f"iiotbed-{self.settings.id}-health",
            on_message=lambda m: None,
            will=lambda: Will(self.status_topic, b"offline", qos=1, retain=True),
            on_connect=self._announce,
            backoff=self._status_backoff,
        )

    def _announce(self) -> None:
        if self._status is not None:
            self._status.publish(self.status_topic, b"online", qos=1, retain=True)

    def _opened(self, conn: MqttConnection | None) -> None:
        self._status = conn
        self._announce()

    async def _hold_status(self) -> None:
        await hold_connection(
            self._status_connection, self._opened, self._status_backoff, log, self._offline
        )

    async def _offline(self, conn: MqttConnection) -> None:
        self.publish_metrics()  # the final counters stay readable after the gateway stopped
        await conn.publish_and_wait(self.status_topic, b"offline", retain=True, ack_wait=2.0)

    async def _reporter(self) -> None:
        while True:
            await asyncio.sleep(self.settings.metrics_interval)
            self.publish_metrics()

    def publish_metrics(self) -> dict[str, Any]:
        """Log the metrics and publish them retained; returns them."""
        m = self.metrics()
        per = ", ".join(
            f"{n}: {c['received']} rx {c['malformed']} bad" for n, c in m["collectors"].items()
        )
        log.info(
            "gateway %s: received %d, forwarded %d, buffered %d, dropped %d, duplicates %d, "
            "malformed %d (%s)",
            m["id"], m["received"], m["forwarded"], m["buffered"], m["dropped"], m["duplicates"],
            m["malformed"], per,
        )  # fmt: skip
        if self._status is not None:
            self._status.publish(self.metrics_topic, orjson.dumps(m), qos=0, retain=True)
        return m
