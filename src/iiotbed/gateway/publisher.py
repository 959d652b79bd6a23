"""UNS output over MQTT: samples → durable buffer → retained current values + batched stream.

:meth:`UnsPublisher.submit` encodes samples and appends them to the
:class:`~iiotbed.gateway.buffer.DurableBuffer`. A sender task reads the buffer oldest first
and publishes each batch as one stream message plus the latest value of every tag in it
as a retained current value, all QoS 1, on the one MQTT transport
(:meth:`iiotbed.mqtt.MqttConnection.send`). A batch is acknowledged in the buffer only
when the broker has PUBACKed every message of it; a lost connection fails what was in
flight, and the next connection replays from the last acknowledged position, so nothing
is lost. A PUBACK lost in flight
can make the broker see a batch twice: consumers drop the resend by the sample ``id``.

Hand-over to the platform (``ingest``): a PUBACK only says the broker has a message, not
that a consumer will get it. A broker without persistence that restarts forgets the
ingest's persistent session: what it PUBACKs before the ingest has subscribed again goes
to nobody, and what it PUBACKed just before it died but had not yet delivered dies with
it. So each ingest announces itself, retained, on ``<root>/_ingest/<client id>/status``
(``online`` once its subscription is live; ``offline`` as its Will and on a clean stop),
and the publisher subscribes to ``<root>/_ingest/+/status``:

* ``ingest="require"``: the stream is forwarded only while at least one ingest is online;
  otherwise it waits in the durable buffer (bounded by the buffer's ``max_rows``).
* ``ingest="auto"`` (default): the same, once an ingest has been online since this
  publisher started (the platform is the consumer); before that (a gateway alone feeding
  some other client), nothing waits.
* ``ingest="off"``: never waits.

After a lost broker connection, once an ingest is online again (or at once when nothing
waits), the batches the broker confirmed in the last ``resend_window`` seconds before the
loss are sent again, then the buffer drains; the store drops the resend by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

import orjson

from iiotbed._aio import AsyncClosing
from iiotbed.errors import ConnectorError, StorageError, UnsError
from iiotbed.gateway.buffer import BufferItem, BufferStats, DurableBuffer, PendingItem
from iiotbed.mqtt import Backoff, Message, MqttConnection, parse_broker_url
from iiotbed.protocols.uns import (
    DEFAULT_ROOT,
    current_topic,
    event_dict,
    join_batch,
    sample_dict,
    stream_topic,
)
from iiotbed.telemetry import Event, Sample

__all__ = ["INGEST_MODES", "IngestMode", "PublisherMetrics", "UnsPublisher", "presence_filter"]

log = logging.getLogger(__name__)

_EVENT: Final = ""  # the buffer's tag for events

IngestMode = Literal["auto", "require", "off"]
INGEST_MODES: Final[tuple[IngestMode, ...]] = ("auto", "require", "off")


def presence_filter(root: str = DEFAULT_ROOT) -> str:
    """The topic filter of every ingest's presence, ``<root>/_ingest/<client id>/status``
    (retained ``online`` / ``offline``; see :mod:`iiotbed.platform.ingest`)."""
    return f"{root}/_ingest/+/status"


@dataclass
class PublisherMetrics:
    """Counters of one publisher since it was created (samples unless noted)."""

    received: int = 0  # handed to submit() (samples) and submit_events()
    malformed: int = 0  # refused by the UNS encoder, not buffered
    duplicates: int = 0  # ignored by the buffer's dedup
    forwarded: int = 0  # PUBACKed in the stream
    current_values: int = 0  # retained current-value messages PUBACKed
    batches: int = 0  # stream messages PUBACKed
    lag_s: float = 0.0  # receive → PUBACK of the newest sample of the last batch
    connects: int = 0
    connection_losses: int = 0
    ingests_online: int = 0  # ingests announced online on the current broker session
    holds: int = 0  # times the stream was held back because no ingest was online
    held_back: int = 0  # samples and events waiting in the buffer when an ingest came back
    held_s: float = 0.0  # wall seconds spent holding back (finished holds)
    resends: int = 0  # reconnects after which recently confirmed batches were sent again
    resent: int = 0  # samples and events sent again after a reconnect (not in ``forwarded``)
    buffer: BufferStats | None = field(default=None, repr=False)  # for buffered/dropped

    @property
    def buffered(self) -> int:
        """Samples stored and not yet confirmed by the broker."""
        return self.buffer.pending_rows if self.buffer is not None else 0

    @property
    def dropped(self) -> int:
        """Samples the buffer dropped on overflow."""
        return self.buffer.dropped if self.buffer is not None else 0


class _Batch:
    __slots__ = ("confirmed", "count", "current", "last_pos", "newest_ts", "resent", "rows",
                 "values")  # fmt: skip

    def __init__(self, rows: list[PendingItem], resent: bool = False) -> None:
        self.rows = rows  # kept for a resend after a broker loss
        self.resent = resent
        self.last_pos = rows[-1].pos
        self.newest_ts = rows[-1].ts
        self.count = len(rows)
        self.current = 0
        self.values: dict[tuple[str, str], bytes] = {}
        # resolves when every message was PUBACKed, fails when the connection died first
        self.confirmed: asyncio.Future[None] | None = None


class UnsPublisher(AsyncClosing):
    """Publishes buffered samples of one line to the UNS; use as ``async with``.

    ``epoch`` is the scenario epoch (Unix seconds) for ``source_ts``; ``clock`` the
    gateway's wall clock (Unix seconds) for ``gateway_ts`` and lag. ``ingest`` and
    ``resend_window`` (seconds, 0: no resend) govern the hand-over (module docstring).
    """

    def __init__(
        self,
        broker: str,
        buffer: DurableBuffer,
        *,
        line: str,
        epoch: float,
        run_id: str,
        root: str = DEFAULT_ROOT,
        client_id: str | None = None,
        current_values: bool = True,
        only_changed: bool = False,
        batch_size: int = 1000,
        max_inflight_batches: int = 4,
        ack_timeout: float = 10.0,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        ingest: IngestMode = "auto",
        resend_window: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ingest not in INGEST_MODES:
            raise ValueError(f"ingest must be one of {', '.join(INGEST_MODES)}; got {ingest!r}")
        if not resend_window >= 0:
            raise ValueError(f"resend_window must be >= 0 seconds; got {resend_window!r}")
        self.url = parse_broker_url(broker)
        self.buffer = buffer
        self.line = line
        self.epoch = epoch
        self.run_id = run_id
        self.root = root
        self.stream_topic = stream_topic(line, root)
        self.client_id = client_id or f"iiotbed-gw-{uuid.uuid4().hex[:12]}"
        self.current_values = current_values
        self.only_changed = only_changed
        self.batch_size = batch_size
        self.max_inflight_batches = max_inflight_batches
        self.ack_timeout = ack_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.clock = clock
        self.ingest = ingest
        self.resend_window = resend_window
        self.metrics = PublisherMetrics(buffer=buffer.stats)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._presence_prefix = f"{root}/_ingest/"
        self._online: set[str] = set()  # client ids of the ingests online on this session
        self._ingest_seen = False  # an ingest was online since this publisher started
        self._held_since: float | None = None  # monotonic start of the current hold
        # (monotonic confirmation time, rows) of the batches confirmed lately: resent after
        # a broker loss; and the batches still to resend on the next session, in order
        self._recent: deque[tuple[float, list[PendingItem]]] = deque()
        self._resend: list[list[PendingItem]] = []
        self._conn = MqttConnection(
            broker,
            client_id=self.client_id,
            on_message=self._on_presence,
            subscriptions=[(presence_filter(root), 1)] if ingest != "off" else [],
            on_connect=self._on_connect,
            on_connection_lost=self._wake.set,
            backoff=Backoff(backoff_initial, backoff_max),
            connect_in_background=True,  # a broker away at start is waited for, buffering
            # several batches of up to batch_size current values each are in flight at once
            max_inflight=max(20, max_inflight_batches * (batch_size + 1)),
            nodelay=True,
        )
        self._published: dict[tuple[str, str], bytes] = {}  # confirmed current values
        self._topics: dict[tuple[str, str], str] = {}

    @property
    def connected(self) -> bool:
        return self._conn.connected

    async def wait_connected(self) -> None:
        """Wait until the publisher holds a confirmed broker connection."""
        await self._conn.wait_connected()

    async def open(self) -> None:
        await self._conn.open()
        self._task = asyncio.create_task(self._run(), name=f"uns-publisher-{self.client_id}")

    async def close(self) -> None:
        """Stop sending; un-acked samples stay in the buffer for the next start."""
        try:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task  # re-raises a StorageError that stopped it
        finally:
            self._task = None
            await self._conn.close()

    # ------------------------------------------------------------------ input

    async def submit(self, samples: Iterable[Sample]) -> int:
        """Encode and buffer samples; returns how many were stored (new, well-formed)."""
        batch = list(samples)
        # Encoding plus the SQLite commit is blocking CPU and disk work: one worker-thread hop.
        stored = await asyncio.to_thread(self._encode_and_append, batch)
        self._wake.set()
        return stored

    def _encode_and_append(self, samples: list[Sample]) -> int:
        now = self.clock()
        items: list[BufferItem] = []
        malformed = 0
        for s in samples:
            try:
                obj = sample_dict(s, epoch=self.epoch, run_id=self.run_id, gateway_ts=now)
            except UnsError as exc:
                malformed += 1
                if self.metrics.malformed + malformed <= 10:  # the first few, then only counted
                    log.warning("dropping malformed sample %s/%s: %s", s.asset, s.tag, exc.reason)
                continue
            items.append(BufferItem(obj["id"], s.asset, s.tag, orjson.dumps(obj), now))
        self.metrics.received += len(samples)
        self.metrics.malformed += malformed
        stored = self.buffer.append_sync(items)
        self.metrics.duplicates += len(items) - stored
        return stored

    async def submit_events(self, events: Iterable[Event]) -> int:
        """Encode and buffer events; they travel in the stream's ``events`` array only."""
        batch = list(events)
        # Encoding plus the SQLite commit is blocking CPU and disk work: one worker-thread hop.
        stored = await asyncio.to_thread(self._encode_events, batch)
        self._wake.set()
        return stored

    def _encode_events(self, events: list[Event]) -> int:
        now = self.clock()
        items: list[BufferItem] = []
        for e in events:
            try:
                obj = event_dict(e, epoch=self.epoch, run_id=self.run_id, gateway_ts=now)
                payload = orjson.dumps(obj)
            except (UnsError, TypeError) as exc:
                self.metrics.malformed += 1
                log.warning("dropping malformed event %s/%s: %s", e.asset, e.name, exc)
                continue
            # an empty tag marks an event: every sample has a non-empty tag
            items.append(BufferItem(obj["id"], e.asset, _EVENT, payload, now))
        self.metrics.received += len(events)
        stored = self.buffer.append_sync(items)
        self.metrics.duplicates += len(items) - stored
        return stored

    async def flush(self) -> None:
        """Wait until the broker confirmed everything buffered so far (bound it with
        ``asyncio.timeout``: while the broker is away this waits for its return)."""
        while self.buffer.stats.pending_rows > 0:
            self._wake.set()
            await asyncio.sleep(0.005)

    # ------------------------------------------------------------------ sending

    @property
    def waiting_for_ingest(self) -> bool:
        """True while the stream is held back because no ingest is online."""
        if self.ingest == "off" or (self.ingest == "auto" and not self._ingest_seen):
            return False
        return not self._online

    def _on_connect(self) -> None:
        self.metrics.connects += 1
        # a new broker session: presence is what its retained messages (and later
        # announcements) say; a restarted broker without persistence knows no ingest
        self._online.clear()
        self.metrics.ingests_online = 0
        self._wake.set()
        log.info("UNS publisher connected to %s as %s", self.url, self.client_id)

    def _on_presence(self, msg: Message) -> None:
        if msg.session != self._conn.session or not msg.topic.startswith(self._presence_prefix):
            return  # of an earlier connection, or not a presence topic
        who = msg.topic[len(self._presence_prefix) :].rsplit("/", 1)[0]
        online = msg.payload == b"online"
        if online == (who in self._online):
            return
        if online:
            self._online.add(who)
            if not self._ingest_seen and self.ingest == "auto":
                log.info("UNS publisher: ingest %s is online; from now on the stream waits "
                         "for an online ingest", who)  # fmt: skip
            self._ingest_seen = True
        else:
            self._online.discard(who)
        self.metrics.ingests_online = len(self._online)
        log.info("UNS publisher: ingest %s %s (%d online)", who,
                 "online" if online else "offline", len(self._online))  # fmt: skip
        self._wake.set()

    async def _run(self) -> None:
        conn = self._conn
        while True:
            await conn.wait_connected()  # the connection (re)connects itself, with backoff
            session = conn.session
            if session is None:  # lost again before this task ran
                await asyncio.sleep(0.01)
                continue
            try:
                await self._pump(session)
            except ConnectorError as exc:
                self.metrics.connection_losses += 1
                log.warning("%s; replaying from buffer position %d", exc, self.buffer.acked_through)
                if conn.session == session:  # the broker went quiet, the socket did not drop
                    await conn.reconnect()
            except StorageError:
                # the buffer is unusable (disk full, file gone): stop, and re-raise from close()
                log.exception("UNS publisher stops: the gateway buffer failed")
                raise

    async def _pump(self, session: int) -> None:
        conn = self._conn
        inflight: deque[_Batch] = deque()
        cursor = self.buffer.acked_through  # replay everything not yet acknowledged
        self._published.clear()  # a new broker session may have lost retained values
        resend, self._resend = self._resend, []
        announced = False
        try:
            while True:
                if conn.session != session:
                    raise ConnectorError(
                        f"lost the connection to {self.url}", endpoint=str(self.url)
                    )
                self._wake.clear()  # before reading: an append during the read wakes the next wait
                if self.waiting_for_ingest:
                    self._hold(inflight)
                else:
                    self._release(inflight)
                    if resend and not announced:
                        announced = True
                        self.metrics.resends += 1
                        log.info("UNS publisher: resending %d samples/events the broker confirmed "
                                 "in the last %g s before the connection loss",
                                 sum(len(r) for r in resend), self.resend_window)  # fmt: skip
                    while len(inflight) < self.max_inflight_batches:
                        if resend:  # first what the lost broker may not have delivered
                            inflight.append(self._publish(resend.pop(0), resent=True))
                            continue
                        rows = await self.buffer.read(self.batch_size, after=cursor)
                        # every batch of one pump goes to one session: the order on the wire holds
                        if not rows or conn.session != session:
                            break
                        inflight.append(self._publish(rows))
                        cursor = rows[-1].pos
                if not inflight:
                    # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                    # that arrives as the wake-up completes, and close() would wait forever
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5):
                            await self._wake.wait()
                    continue
                head = inflight[0]
                assert head.confirmed is not None
                try:
                    async with asyncio.timeout(self.ack_timeout):
                        await asyncio.shield(head.confirmed)  # ConnectorError if the link died
                except TimeoutError:
                    raise ConnectorError(
                        f"{self.url} did not PUBACK a batch within {self.ack_timeout} s",
                        endpoint=str(self.url),
                    ) from None
                inflight.popleft()
                m = self.metrics
                if head.resent:
                    m.resent += head.count
                else:
                    await self.buffer.ack(head.last_pos)
                    m.forwarded += head.count
                    m.batches += 1
                    m.lag_s = self.clock() - head.newest_ts
                m.current_values += head.current
                self._published.update(head.values)
                self._remember(head.rows)
        finally:
            for b in inflight:  # their session is over: replayed from the buffer next time
                if b.confirmed is None:
                    continue
                if not b.confirmed.done():
                    b.confirmed.cancel()
                elif not b.confirmed.cancelled():
                    b.confirmed.exception()  # retrieved: the replay covers it
            self._plan_resend(resend + [b.rows for b in inflight if b.resent])

    def _remember(self, rows: list[PendingItem]) -> None:
        if self.resend_window <= 0:
            return
        now = time.monotonic()
        recent = self._recent
        recent.append((now, rows))
        horizon = now - self.resend_window
        while recent[0][0] < horizon:
            recent.popleft()

    def _plan_resend(self, unsent: list[list[PendingItem]]) -> None:
        """After a session ended: what to send again first on the next one, in buffer order.

        The batches confirmed within ``resend_window`` s of the session's last confirmation
        (the broker may have died before delivering them) and resends not confirmed yet.
        Batches never confirmed are not here: they are still in the buffer, replayed anyway.
        """
        recent = self._recent
        again = list(unsent)
        if recent:
            horizon = recent[-1][0] - self.resend_window
            again += [rows for t, rows in recent if t >= horizon]
        recent.clear()
        by_pos = {rows[-1].pos: rows for rows in again if rows}
        self._resend = [by_pos[k] for k in sorted(by_pos)]

    def _hold(self, inflight: deque[_Batch]) -> None:
        if self._held_since is not None:
            return
        self._held_since = time.monotonic()
        self.metrics.holds += 1
        log.warning("UNS publisher: no ingest online on %s; holding the stream back in the "
                    "buffer (%d samples/events waiting)", self.url,
                    self._waiting(inflight))  # fmt: skip

    def _release(self, inflight: deque[_Batch]) -> None:
        if self._held_since is None:
            return
        took = time.monotonic() - self._held_since
        self._held_since = None
        waiting = self._waiting(inflight)
        m = self.metrics
        m.held_s += took
        m.held_back += waiting
        log.info("UNS publisher: an ingest is online; forwarding the %d samples/events held "
                 "back for %.1f s", waiting, took)  # fmt: skip

    def _waiting(self, inflight: deque[_Batch]) -> int:
        return max(
            0, self.buffer.stats.pending_rows - sum(b.count for b in inflight if not b.resent)
        )

    def _publish(self, rows: list[PendingItem], resent: bool = False) -> _Batch:
        batch = _Batch(rows, resent)
        has_events = any(r.tag == _EVENT for r in rows)
        if has_events:
            body = join_batch(
                [r.payload for r in rows if r.tag != _EVENT],
                [r.payload for r in rows if r.tag == _EVENT],
            )
        else:
            body = join_batch([r.payload for r in rows])
        messages = [(self.stream_topic, body, False)]
        if self.current_values:
            latest: dict[tuple[str, str], PendingItem] = {}
            for r in rows:  # retained topics keep only the newest value: coalesce per batch
                latest[(r.asset, r.tag)] = r
            if has_events:
                latest = {k: r for k, r in latest.items() if r.tag != _EVENT}
            for key, r in latest.items():
                if self.only_changed:
                    vkey = _value_key(r.payload)
                    if self._published.get(key) == vkey:
                        continue
                    batch.values[key] = vkey
                topic = self._topics.get(key)
                if topic is None:
                    topic = self._topics[key] = current_topic(r.asset, r.tag, self.root)
                messages.append((topic, r.payload, True))
            batch.current = len(messages) - 1
        batch.confirmed = self._conn.send(messages)
        return batch


def _value_key(payload: bytes) -> bytes:
    obj = orjson.loads(payload)
    return orjson.dumps((obj["value"], obj["quality"], obj["unit"]))
