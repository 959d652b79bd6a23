"""UNS ingest: MQTT stream batches → decode → dedup → store, and a live KPI view per run.

:class:`Ingest` subscribes to ``<root>/_stream/#`` (and, optionally, the retained
current-value topics), decodes each message with :func:`iiotbed.protocols.uns.decode_batch` in a
worker thread, drops samples whose id it has seen lately, and writes the rest to the store
in one batch per round (the store deduplicates by id as well, so a resend can never be
counted twice). New samples also feed one :class:`~iiotbed.platform.kpi.KpiAccumulator`
per run, in time order after a short hold-back, for live KPIs without a database query.

Nothing is lost while the platform is down: the ingest keeps a persistent MQTT session
under a client id derived from its store and acknowledges (PUBACK) a message only once it
is stored, so the broker queues the stream for it and resends what was not acknowledged; a
failing store is retried, not skipped. A malformed payload, a sample outside its run's
window and a run nobody registered are counted and logged (rate-limited), never fatal.

With ``share=GROUP`` the ingest subscribes ``$share/GROUP/<filter>`` (an MQTT shared
subscription, which Mosquitto 2 serves to MQTT 3.1.1 clients too): the broker hands each
message to one member of the group, so several ingest processes writing to one store each
store part of the stream. Each member needs its own client id (:func:`client_id_for` with a
``member`` name); its live KPI view then covers its part only, while KPIs read from the
store are whole. Mosquitto keeps dealing an absent member (a persistent session) its part,
queued until it reconnects under the same id: a member must come back, under its name.

Presence: each ingest announces itself, retained, on ``<root>/_ingest/<client id>/status``:
``online`` once its subscription is live (its readiness probe came back), ``offline`` as
its MQTT Will and on a clean stop. The gateway's UNS publisher forwards the stream only
while an ingest is online (:mod:`iiotbed.gateway.publisher`): a broker restarted without
persistence has forgotten this session, and what it accepted before the ingest subscribed
again would reach nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import heapq
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from iiotbed._aio import AsyncClosing
from iiotbed.errors import ConnectorError, StorageError, UnsError
from iiotbed.mqtt import Backoff, BrokerRefused, Message, MqttConnection, Will
from iiotbed.platform.catalog import RunCatalog, run_info, scenario_assets
from iiotbed.platform.kpi import KpiAccumulator, KpiReport
from iiotbed.platform.store.base import RunInfo, Store
from iiotbed.platform.timeline import StateTimeline
from iiotbed.protocols.uns import DEFAULT_ROOT, STREAM_LEVEL, decode_batch, decode_sample
from iiotbed.telemetry import Event, Sample, Tag

__all__ = [
    "MAX_T", "Ingest", "IngestMetrics", "LiveRun", "check_share", "client_id_for", "presence_topic"
]  # fmt: skip

log = logging.getLogger(__name__)

_LOGGED_MALFORMED = 10  # log the first few malformed messages in full, then every 1000th
#: a sample time (s since the epoch) no run reaches: a year and a month of sim time
MAX_T = 400 * 86400.0


def _logged(n: int) -> bool:
    """Rate limit of bad-input logs: the first few, then every 1000th."""
    return n <= _LOGGED_MALFORMED or n % 1000 == 0


def client_id_for(
    store_url: str, root: str = DEFAULT_ROOT, share: str | None = None, member: str = ""
) -> str:
    """The ingest's fixed MQTT client id: the same store and root resume the same session.

    With a shared subscription (``share``), the members of the group write to one store, so
    the id also names the group and the ``member`` (e.g. host and HTTP port): each member
    has a session of its own, resumed when that member restarts.
    """
    key = f"{store_url}|{root}" if share is None else f"{store_url}|{root}|{share}|{member}"
    return f"iiotbed-platform-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def presence_topic(client_id: str, root: str = DEFAULT_ROOT) -> str:
    """Where an ingest announces itself, retained: ``online`` / ``offline``."""
    return f"{root}/_ingest/{client_id}/status"


def check_share(group: str) -> str:
    """A shared subscription's group name, checked: ValueError says what is wrong."""
    if not group or any(c in group for c in "/+#") or len(group) > 200:
        raise ValueError(
            f"a shared subscription's group is a name of 1 to 200 characters without "
            f"'/', '+' or '#' (it goes in $share/GROUP/...); got {group!r}"
        )
    return group


@dataclass
class IngestMetrics:
    """Counters since the ingest started (samples unless noted)."""

    messages: int = 0  # MQTT messages received
    received: int = 0  # samples decoded
    events: int = 0  # events decoded
    stored: int = 0  # samples newly written to the store
    events_stored: int = 0
    duplicates: int = 0  # samples and events already seen (in memory or in the store)
    malformed: int = 0  # messages that did not decode (dropped whole)
    out_of_window: int = 0  # samples and events refused: t < 0, t > MAX_T, or no valid epoch
    unknown_run: int = 0  # samples and events refused: a run nobody registered
    store_retries: int = 0  # store transactions that failed and were tried again
    late: int = 0  # samples too old for the live KPI view (still stored)
    writes: int = 0  # store transactions
    pending: int = 0  # messages received, not yet stored
    lag_s: float = 0.0  # gateway receive -> stored, newest sample of the last write
    max_lag_s: float = 0.0
    connected: bool = False
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LiveRun:
    """The live view of one run: KPI accumulator, state timeline and the newest sample of
    every tag; all in source (sim) time."""

    run_id: str
    accumulator: KpiAccumulator | None
    timeline: StateTimeline | None = None
    latest: dict[tuple[str, str], Sample] = field(default_factory=dict)
    state_since: dict[str, float] = field(default_factory=dict)  # asset -> its ItemState's start
    last_t: float = 0.0  # newest sample time seen
    fed_t: float = 0.0  # newest sample time fed to the accumulator
    late: int = 0  # samples that came after the live view had moved past them (stored)
    _held: list[tuple[float, int, Sample]] = field(default_factory=list, repr=False)
    # (wall time of arrival, newest sample time then), one per batch: the wall hold-back
    _marks: deque[tuple[float, float]] = field(default_factory=deque, repr=False)
    _wall_t: float = -math.inf

    def report(self) -> KpiReport | None:
        """KPIs from the run's start to the newest sample fed; None without a layout."""
        acc = self.accumulator
        if acc is None:
            return None
        return acc.report(max(self.fed_t, acc.start))


class _Decoded:
    __slots__ = (
        "duplicates", "events", "malformed", "newest_gw", "out_of_window", "received", "samples"
    )  # fmt: skip

    def __init__(self) -> None:
        self.samples: dict[str, list[Sample]] = {}
        self.events: dict[str, list[Event]] = {}
        self.received = 0
        self.malformed = 0
        self.duplicates = 0
        self.out_of_window = 0
        self.newest_gw = 0.0


class Ingest(AsyncClosing):
    """Consumes the UNS from ``broker`` into ``store``; run it with ``async with`` or
    :meth:`run` in a TaskGroup.

    ``catalog`` gives each run its KPI layout and says which runs are known
    (:meth:`RunCatalog.accepts`); ``runs`` names more runs to accept (registered on first
    sight with the epoch read off the payload). Samples of any other run are refused.
    ``client_id`` defaults to :func:`client_id_for` the store, so a restarted platform
    resumes its persistent session and receives what the broker queued meanwhile.
    ``share`` subscribes ``$share/<share>/<filter>`` instead (give each member of the
    group its own ``client_id``); the readiness probe then goes to a topic of its own,
    ``<root>/_ingest/<client id>``, subscribed directly, as a shared subscription would
    hand it to any member.
    ``reorder_s`` (sim seconds) and ``reorder_wall_s`` (wall seconds since arrival) are the
    hold-back that puts samples of different sources back in time order before the live
    KPI view sees them: both must pass, as a fast run's sources differ by many sim seconds.
    """

    def __init__(
        self,
        store: Store,
        broker: str,
        *,
        catalog: RunCatalog | None = None,
        root: str = DEFAULT_ROOT,
        current_values: bool = False,
        client_id: str | None = None,
        share: str | None = None,
        runs: Sequence[str] = (),
        # ~230 B per id: the store deduplicates for good, this only spares it recent resends
        dedup_window: int = 50_000,
        reorder_s: float = 5.0,
        reorder_wall_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.broker = broker
        self.catalog = catalog if catalog is not None else RunCatalog(store)
        self.root = root
        self.current_values = current_values
        self.share = check_share(share) if share is not None else None
        self.client_id = client_id or client_id_for(store.url, root, self.share)
        self.catalog.expect(*runs)
        self.dedup_window = dedup_window
        self.reorder_s = reorder_s
        self.reorder_wall_s = reorder_wall_s
        self.clock = clock
        self.metrics = IngestMetrics()
        self.runs: dict[str, LiveRun] = {}
        self.ready = asyncio.Event()  # set once subscribed
        self._stream_prefix = f"{root}/{STREAM_LEVEL}/"
        # our own message on a topic we subscribed: when it comes back, the subscription is live
        self._probe_topic = f"{self._stream_prefix}_ingest/{self.client_id}"
        if self.share is not None:  # outside the shared filter (a stream topic's level 2)
            self._probe_topic = f"{root}/_ingest/{self.client_id}"
        # other ingests' probes (a shared subscription may hand them to us) and every
        # ingest's presence (under <root>/#): not data
        self._probes = (f"{self._stream_prefix}_ingest/", f"{root}/_ingest/")
        self.presence_topic = presence_topic(self.client_id, root)
        self._conn: MqttConnection | None = None
        self._inbox: list[Message] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._epochs: dict[str, dt.datetime] = {}
        self._seq = 0
        self._refused: set[str] = set()  # run ids refused (logged once each, up to a bound)
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        self._task = task = asyncio.create_task(self.run(), name=f"ingest-{self.client_id}")
        ready = asyncio.ensure_future(self.ready.wait())
        try:
            done, _ = await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                task.result()  # raises what stopped it
        except BaseException:
            # cancelled (or failed) while starting: no task outlives a failed __aenter__
            ready.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ready
            self._task = None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            raise

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        """Connect (retrying while the broker is away), subscribe and store until cancelled."""
        subs = [(f"{self.root}/#", 1)] if self.current_values else [(f"{self._stream_prefix}#", 1)]
        if self.share is not None:
            subs = [(f"$share/{self.share}/{t}", q) for t, q in subs]
            subs.append((self._probe_topic, 1))  # subscribed after the shared filter
        backoff = Backoff(0.2, 10.0)
        while True:
            self._conn = conn = MqttConnection(
                self.broker,
                client_id=self.client_id,
                # the broker queues the stream while we are away and resends what we did not
                # acknowledge; we acknowledge a message once it is stored (_consume)
                clean_session=False,
                manual_ack=True,
                on_message=self._on_message,
                subscriptions=subs,
                on_connect=self._on_connect,
                on_connection_lost=self._on_lost,
                backoff=backoff,  # one policy for the first connect (below) and every reconnect
                will=lambda: Will(self.presence_topic, b"offline", qos=1, retain=True),
            )
            try:
                async with conn:
                    backoff.reset()
                    try:
                        await self._consume()
                    finally:
                        await self._announce_offline(conn)
            except BrokerRefused:
                raise  # a refused login or certificate: retrying cannot help
            except ConnectorError as exc:
                self.metrics.connected = False
                self.metrics.last_error = str(exc)
                wait = backoff.next()
                log.warning("%s; ingest retries in %.1f s", exc, wait)
                await asyncio.sleep(wait)

    def _on_connect(self) -> None:
        # the broker handles our SUBSCRIBE before this PUBLISH: its echo means we are subscribed
        if self._conn is not None:
            self._conn.publish(self._probe_topic, b"ready", qos=1)

    async def _announce_offline(self, conn: MqttConnection) -> None:
        # a clean stop sends no Will: the gateway holds the stream back in its own durable
        # buffer meanwhile instead of the broker's queue (lost if the broker restarts)
        if not conn.connected:
            return
        try:
            await conn.publish_and_wait(self.presence_topic, b"offline", retain=True, ack_wait=2.0)
        except ConnectorError as exc:
            log.warning("ingest's offline presence not confirmed: %s", exc)

    def _on_lost(self) -> None:
        self.metrics.connected = False

    def _on_message(self, msg: Message) -> None:
        if msg.topic == self._probe_topic:
            if self._conn is not None:
                self._conn.ack(msg)
                # subscribed: the gateway may forward the stream to us now
                self._conn.publish(self.presence_topic, b"online", qos=1, retain=True)
            self.metrics.connected = True
            self.ready.set()
            return
        if msg.topic.startswith(self._probes):  # another ingest's probe
            if self._conn is not None:
                self._conn.ack(msg)
            return
        self._inbox.append(msg)
        self.metrics.messages += 1
        self.metrics.pending += 1
        self._idle.clear()
        self._wake.set()

    async def drain(self) -> None:
        """Wait until every message received so far is stored (bound it with asyncio.timeout)."""
        while self._inbox or not self._idle.is_set():
            await self._idle.wait()
            await asyncio.sleep(0)

    # ------------------------------------------------------------------ the pipeline

    async def _consume(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            msgs, self._inbox = self._inbox, []
            if not msgs:
                self._idle.set()
                continue
            try:
                # decoding and dedup are pure CPU work: a worker thread keeps the API responsive
                decoded = await asyncio.to_thread(self._decode, msgs)
                self._count(decoded)
                await self._store_retrying(decoded)
            finally:
                self.metrics.pending -= len(msgs)
            # stored (or refused for good): only now may the broker forget them
            conn = self._conn
            if conn is not None:
                for msg in msgs:
                    conn.ack(msg)
            if not self._inbox:
                self._idle.set()

    async def _store_retrying(self, d: _Decoded) -> None:
        """Store ``d``, retrying with backoff while the store fails (PostgreSQL restarting):
        the messages stay unacknowledged meanwhile, so even a crash now loses nothing."""
        backoff = Backoff(0.2, 5.0)
        while True:
            try:
                await self._store(d)
                return
            except StorageError as exc:
                m = self.metrics
                m.last_error = str(exc)
                m.store_retries += 1
                wait = backoff.next()
                if _logged(m.store_retries):
                    log.error("ingest could not store (retry #%d in %.1f s): %s",
                              m.store_retries, wait, exc)  # fmt: skip
                await asyncio.sleep(wait)

    def _is_new(self, key: str) -> bool:
        seen = self._seen
        if key in seen:
            return False
        seen[key] = None
        if len(seen) > self.dedup_window:
            seen.popitem(last=False)
        return True

    def _in_window(self, t: float, rid: str, what: str, out: _Decoded) -> bool:
        if 0.0 <= t <= MAX_T:  # False for NaN too
            return True
        out.out_of_window += 1
        n = self.metrics.out_of_window + out.out_of_window
        if _logged(n):
            log.warning("refusing %s of run %r at t = %r s: outside [0, %g] (#%d)",
                        what, rid, t, MAX_T, n)  # fmt: skip
        return False

    def _decode(self, msgs: Sequence[Message]) -> _Decoded:
        out = _Decoded()
        for msg in msgs:
            try:
                if msg.topic.startswith(self._stream_prefix):
                    samples, events = decode_batch(msg.payload, msg.topic)
                else:
                    samples, events = [decode_sample(msg.payload, msg.topic)], []
            except UnsError as exc:
                out.malformed += 1
                n = self.metrics.malformed + out.malformed
                if _logged(n):
                    log.warning("dropping malformed UNS message #%d: %s", n, exc)
                continue
            out.received += len(samples)
            for u in samples:
                if not self._is_new(u.id):
                    out.duplicates += 1
                    continue
                s = u.sample
                rid = s.run_id or ""
                if not self._in_window(s.t, rid, "a sample", out):
                    continue
                if rid not in self.runs and rid not in self._epochs:
                    # the epoch of a run the store may not know, read off the payload
                    try:
                        self._epochs[rid] = u.source_ts - dt.timedelta(seconds=s.t)
                    except OverflowError:  # a source_ts near year 1: no epoch before it
                        self._in_window(-1.0, rid, "a sample (its source_ts)", out)
                        continue
                out.samples.setdefault(rid, []).append(s)
                gw = s.gateway_ts or 0.0
                if gw > out.newest_gw:
                    out.newest_gw = gw
            for e in events:
                if not self._in_window(e.event.t, e.run_id, "an event", out):
                    continue
                if not self._is_new(e.id):
                    out.duplicates += 1
                    continue
                out.events.setdefault(e.run_id, []).append(e.event)
            self.metrics.events += len(events)
        return out

    async def _register(self, run_id: str, asset: str | None = None) -> LiveRun:
        run = await self.store.get_run(run_id)
        if run is None:
            default = self.catalog.default_for(asset)  # of a plant: the line of ``asset``
            if default is not None:
                await self.store.upsert_run(run_info(default, run_id))
                await self.store.upsert_assets(scenario_assets(default))
            else:
                epoch = self._epochs.get(run_id)
                await self.store.upsert_run(
                    RunInfo(
                        run_id,
                        scenario="unknown",
                        epoch=epoch.isoformat() if epoch is not None else None,
                        started=dt.datetime.now(dt.UTC),
                    )
                )
            log.info("ingest registered run %s", run_id)
        layout = await self.catalog.layout(run_id)
        acc = KpiAccumulator(layout, start=0.0) if layout is not None else None
        timeline = StateTimeline(layout) if layout is not None else None
        live = self.runs[run_id] = LiveRun(run_id, acc, timeline)
        return live

    def _count(self, d: _Decoded) -> None:
        m = self.metrics
        m.received += d.received
        m.malformed += d.malformed
        m.duplicates += d.duplicates
        m.out_of_window += d.out_of_window

    async def _accepts(self, run_id: str) -> bool:
        """A run the platform was told about (registered in the store, named in ``runs``)
        or a run of its default scenario (:meth:`RunCatalog.accepts`)."""
        if run_id in self.runs:
            return True
        return await self.catalog.accepts(run_id, self._epochs.get(run_id))

    def _refuse(self, run_id: str, n: int) -> None:
        m = self.metrics
        m.unknown_run += n
        self._epochs.pop(run_id, None)
        if run_id not in self._refused and len(self._refused) < 1000:
            self._refused.add(run_id)
            if _logged(len(self._refused)):
                log.warning(
                    "refusing %d sample(s)/event(s) of run %r: no run of that id is registered "
                    "(register it with `iiotbed run`, or start the platform with the run's "
                    "--scenario); %d refused so far", n, run_id[:80], m.unknown_run,
                )  # fmt: skip

    async def _store(self, d: _Decoded) -> None:
        """Write ``d`` run by run; each part written leaves ``d``, so a retry after a store
        error writes only the rest."""
        m = self.metrics
        for run_id in sorted(set(d.samples) | set(d.events)):
            live = self.runs.get(run_id)
            if live is None:
                if not await self._accepts(run_id):
                    self._refuse(
                        run_id,
                        len(d.samples.pop(run_id, ())) + len(d.events.pop(run_id, ())),
                    )
                    continue
                first = d.samples.get(run_id) or d.events.get(run_id)
                live = await self._register(run_id, first[0].asset if first else None)
            samples = d.samples.get(run_id, [])
            if samples:
                inserted = await self.store.write_samples(samples, run_id)
                del d.samples[run_id]
                m.stored += inserted
                m.duplicates += len(samples) - inserted
                m.writes += 1
                self._feed(live, samples)
            events = d.events.get(run_id, [])
            if events:
                inserted = await self.store.write_events(events, run_id)
                del d.events[run_id]
                m.events_stored += inserted
                m.duplicates += len(events) - inserted
        if d.newest_gw > 0:
            m.lag_s = max(0.0, self.clock() - d.newest_gw)
            m.max_lag_s = max(m.max_lag_s, m.lag_s)

    def _feed(self, live: LiveRun, samples: Sequence[Sample]) -> None:
        latest = live.latest
        held = live._held
        for s in samples:
            key = (s.asset, s.tag)
            old = latest.get(key)
            if old is None or s.t >= old.t:
                latest[key] = s
                if s.tag == Tag.ITEM_STATE and (old is None or old.value != s.value):
                    live.state_since[s.asset] = s.t
            if s.t > live.last_t:
                live.last_t = s.t
            self._seq += 1
            heapq.heappush(held, (s.t, self._seq, s))
        live._marks.append((time.monotonic(), live.last_t))
        self._release_due(live)

    def _release_due(self, live: LiveRun) -> None:
        # sim time the sources have all reached: what arrived reorder_wall_s ago, so that a
        # slower source (e.g. OPC UA's publishing interval) at 1000x speed is not "late"
        marks = live._marks
        due = time.monotonic() - self.reorder_wall_s
        while marks and marks[0][0] <= due:
            live._wall_t = marks.popleft()[1]
        self._release(live, min(live.last_t - self.reorder_s, live._wall_t))

    def _release(self, live: LiveRun, until: float) -> None:
        held = live._held
        acc = live.accumulator
        timeline = live.timeline
        while held and held[0][0] <= until:
            t, _, s = heapq.heappop(held)
            if acc is None:
                continue
            if t < live.fed_t:
                self.metrics.late += 1  # the live view has moved on; the store has it
                live.late += 1
                continue
            acc.feed(s)
            if timeline is not None:
                timeline.feed(s)
            live.fed_t = t

    def settle(self, run_id: str | None = None) -> None:
        """Feed every held-back sample to the live view (e.g. when a run has ended)."""
        for live in self.runs.values() if run_id is None else [self.runs[run_id]]:
            self._release(live, float("inf"))

    def live(self, run_id: str) -> LiveRun | None:
        """The live view of a run this ingest has seen (what is due fed to it), else None."""
        live = self.runs.get(run_id)
        if live is not None:
            self._release_due(live)  # the stream may have paused since the last batch
        return live
