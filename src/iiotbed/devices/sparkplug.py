"""A Sparkplug B 3.0 edge node: births, data by exception, deaths, commands.

Topics are ``spBv1.0/<group>/<type>/<edge>[/<device>]``. The node registers NDEATH
(with ``bdSeq``) as the MQTT Will before every CONNECT, publishes NBIRTH and one DBIRTH
per device (optionally after the Primary Host's ``STATE`` says online), reports changed
values in NDATA/DDATA, rebirths on ``Node Control/Rebirth`` and hands writes arriving
in NCMD/DCMD to a callback. Payloads use the specification's protobuf schema.

Store and forward (Sparkplug 3.0 ``is_historical``, :mod:`iiotbed.devices.edge_store`):
without a session (broker away, or the Primary Host offline) the node keeps every change in
a bounded store (the oldest dropped first, counted) and, right after the next births, sends
it per device in one DATA message of historical metrics with their own timestamps. It
starts with each metric's value as last known delivered: DATA is QoS 0, so what went out
within ``resend_window`` s before the loss is sent again (a host drops what it holds). With
``store_path`` the store is on disk too: what the process held at its stop goes out after
the next start's births, and leaves the file once the broker acknowledged it (QoS 1).

Devices come and go (Sparkplug 3.0): :meth:`device_left` publishes the device's DDEATH, and
:meth:`device_returned` its DBIRTH, both in the node's ``seq``. While a device is away the
node does not see it: its values are neither published nor stored, and its DBIRTH on return
carries the values read then, dated then.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from iiotbed.devices._spb_commands import command_writes
from iiotbed.devices._spb_types import NodeMetric as _Metric
from iiotbed.devices._spb_types import SparkplugStats
from iiotbed.devices.edge_store import Change as _Change
from iiotbed.devices.edge_store import EdgeStore, Held, HeldStore, RecentlySent, Sent
from iiotbed.errors import CommandRefused
from iiotbed.mqtt import Message, MqttAdapter, MqttConnection, Will
from iiotbed.protocols.sparkplug.codec import (
    BDSEQ_METRIC,
    DATATYPES,
    NAMESPACE,
    REBIRTH_METRIC,
    UNIT_PROPERTY,
    MetricDef,
    check_id,
    check_value,
    decode_payload,
    encode_value,
    pb,
)

__all__ = ["CommandHandler", "MetricDef", "SparkplugEdgeNode", "SparkplugStats"]

log = logging.getLogger(__name__)


#: ``on_command(device or None for the node, metric, value) -> accepted``; it may raise
#: :class:`~iiotbed.errors.CommandRefused`, which refuses the write (counted and logged).
CommandHandler = Callable[[str | None, str, object], bool]


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class SparkplugEdgeNode(MqttAdapter):
    """One Sparkplug edge node with its devices, over one MQTT connection.

    ``clock`` gives the source time in epoch ms for births and deaths (default: wall
    clock); data timestamps come with each :meth:`set`. Writes arrive at ``on_command``,
    which returns whether it accepted them; the caller reports applied values with
    :meth:`set` like any other change. ``store_limit`` bounds the store-and-forward store
    (metric values; 0 turns it off: a birth then carries only the latest value).
    ``store_path`` keeps that store on disk too, under ``store_scope`` (the run): rows of
    another scope in the file are discarded, never replayed. ``host_grace`` (s, at most
    ``resend_window``): how long the Primary Host's offline may wait for a newer online (a
    redundant host under its id) before the session ends; what the node sent meanwhile is in
    the resend window, so stored and forwarded if it does end.
    """

    def __init__(
        self,
        broker: str,
        group_id: str,
        edge_node_id: str,
        *,
        node_metrics: Sequence[MetricDef] = (),
        devices: Mapping[str, Sequence[MetricDef]] | None = None,
        primary_host_id: str | None = None,
        on_command: CommandHandler | None = None,
        client_id: str | None = None,
        clock: Callable[[], int] | None = None,
        use_aliases: bool = True,
        store_limit: int = 100_000,
        resend_window: float = 2.0,
        host_grace: float = 0.0,
        store_path: Path | None = None,
        store_scope: str = "",
    ) -> None:
        if not 0 <= host_grace <= resend_window:
            raise ValueError(f"host_grace ({host_grace} s) must be in 0-{resend_window} s")
        if store_limit < 0 or resend_window < 0:
            raise ValueError(
                f"store_limit ({store_limit}) and resend_window ({resend_window} s) must be >= 0"
            )
        check_id("group_id", group_id)
        check_id("edge_node_id", edge_node_id)
        self.group_id = group_id
        self.edge_node_id = edge_node_id
        self.primary_host_id = primary_host_id
        self.stats = SparkplugStats()
        self._on_command = on_command
        self._clock = clock or _wall_ms
        self._use_aliases = use_aliases
        self._metrics: dict[str | None, dict[str, _Metric]] = {}
        self._by_alias: dict[int, tuple[str | None, str]] = {}
        alias = 0
        for device, defs in [(None, node_metrics), *sorted((devices or {}).items())]:
            if device is not None:
                check_id("device_id", device)
            table: dict[str, _Metric] = {}
            for d in defs:
                if d.name in table or (device is None and d.name in (BDSEQ_METRIC, REBIRTH_METRIC)):
                    raise ValueError(
                        f"metric {d.name!r} of {device or edge_node_id!r} is defined twice or "
                        "reuses a name Sparkplug reserves"
                    )
                alias += 1
                table[d.name] = _Metric(d, alias)
                self._by_alias[alias] = (device, d.name)
            self._metrics[device] = table
        # every change since the last flush, in order: a value that goes 1 -> 2 -> 1 between
        # two flushes is two transitions a KPI needs, not "unchanged"
        self._pending: dict[str | None, dict[str, list[tuple[object, int]]]] = {}
        # changes kept while offline, oldest first (and on disk with a store_path)
        file = None
        if store_path is not None:
            file = EdgeStore(store_path, f"{store_scope}|{group_id}/{edge_node_id}")
        self._store = HeldStore(store_limit, file, edge_node_id, self.stats)
        self._away: set[str] = set()  # devices out of the node's reach (DDEATH sent or due)
        # (monotonic s, change, the metric's value before it): DATA published lately, which a
        # lost link may have swallowed (QoS 0); kept for resend_window seconds
        self._recent = RecentlySent(resend_window, enabled=store_limit > 0)
        self._bd_seq = -1
        self._seq = 0
        self._born = False
        self._host_online = primary_host_id is None
        self._host_grace = host_grace
        self._host_ts = -1
        self._tasks: set[asyncio.Task[None]] = set()
        self._announcement: tuple[str, bytes] | None = None
        base = f"{NAMESPACE}/{group_id}"
        self._topic_ncmd = f"{base}/NCMD/{edge_node_id}"
        self._topic_dcmd = f"{base}/DCMD/{edge_node_id}/"
        self._topic_state = f"{NAMESPACE}/STATE/{primary_host_id}" if primary_host_id else None
        subs = [(self._topic_ncmd, 0), (self._topic_dcmd + "+", 0)]
        if self._topic_state:
            subs.append((self._topic_state, 1))
        self._conn = MqttConnection(
            broker,
            client_id=client_id or f"spb-{group_id}-{edge_node_id}",
            on_message=self._on_message,
            subscriptions=subs,
            will=self._next_will,
            on_connect=self._on_connected,
            on_connection_lost=self._on_lost,
        )

    # -- public API --

    @property
    def bd_seq(self) -> int:
        """The bdSeq of the current (or last) connection."""
        return self._bd_seq

    @property
    def born(self) -> bool:
        """True once NBIRTH went out on the current connection."""
        return self._born

    @property
    def stored(self) -> int:
        """Changes held for forwarding (0 while a session is up)."""
        return len(self._store)

    def topic(self, message_type: str, device: str | None = None) -> str:
        """The topic of a message type, e.g. ``topic("DDATA", "press-01")``."""
        t = f"{NAMESPACE}/{self.group_id}/{message_type}/{self.edge_node_id}"
        return t if device is None else f"{t}/{device}"

    def set(self, device: str | None, metric: str, value: object, timestamp_ms: int) -> None:
        """Buffer a new value (None = node metric); unchanged values are not reported."""
        table = self._metrics.get(device)
        if table is None:
            raise ValueError(f"edge node {self.edge_node_id!r} has no device {device!r}")
        m = table.get(metric)
        if m is None:
            raise ValueError(
                f"{device or self.edge_node_id!r} has no metric {metric!r}; "
                f"known: {', '.join(table) or 'none'}"
            )
        if value is not None:
            value = check_value(m.defn.datatype, value)
        changes = self._pending.setdefault(device, {}).setdefault(metric, [])
        if changes:
            last, known = changes[-1][0], True
        else:
            last, known = m.value, m.timestamp_ms is not None
        if known and value == last and type(value) is type(last):
            return  # unchanged since the last value reported or buffered
        changes.append((value, timestamp_ms))

    async def flush(self) -> None:
        """Publish one NDATA/DDATA per node/device with the changes since the last flush;
        without a session, keep them for forwarding (store and forward)."""
        pending, self._pending = self._pending, {}
        for device, changes in pending.items():
            if not changes:
                continue
            if device in self._away:  # out of reach: the DBIRTH on its return reads it
                self._absorb(device, changes)
                continue
            payload = pb.Payload()
            table = self._metrics[device]
            newest = 0
            sent: list[Sent] = []
            for name, values in changes.items():
                m = table[name]
                for value, ts in values:
                    sent.append(((device, name, value, ts), (m.value, m.timestamp_ms)))
                    m.value, m.timestamp_ms = value, ts
                    newest = max(newest, ts)
                    if not self._born:
                        continue  # kept below, or the next birth carries the last one
                    self._add_data_metric(payload, m, value, ts)
            if self._born and payload.metrics:
                payload.timestamp = newest
                payload.seq = self._next_seq()
                kind = "NDATA" if device is None else "DDATA"
                published = self._publish(self.topic(kind, device), payload)
                self._recent.add(sent)
                if not published:
                    # the link is gone and the loss not yet handled: the store starts with
                    # the values before these (kept as unsure), and so does the session's end
                    self._begin_store()
                    self._born = False
                continue
            for change, _ in sent:
                self._store.keep(change)
        await self._store.sync()

    async def device_left(self, device: str, timestamp_ms: int) -> None:
        """``device`` is out of the node's reach: its changes so far go out, then its DDEATH
        (in the ``seq``); until :meth:`device_returned` its values are not reported."""
        self._device(device)
        if device in self._away:
            return
        if self._born:
            await self.flush()
        self._away.add(device)
        if self._born and self._ddeath(device, timestamp_ms):
            self.stats.device_deaths += 1

    async def device_returned(self, device: str, timestamp_ms: int) -> None:
        """``device`` is back: its DBIRTH (in the ``seq``) with its values as read now, each
        dated ``timestamp_ms``."""
        self._device(device)
        if device not in self._away:
            return
        changes = self._pending.pop(device, None)
        if changes:
            self._absorb(device, changes)
        self._away.discard(device)
        for m in self._metrics[device].values():
            if m.timestamp_ms is not None:
                m.timestamp_ms = timestamp_ms  # read again on its return
        if self._born:
            self._publish_dbirth(device, timestamp_ms)
            self.stats.device_births += 1

    def announce(self, topic: str, payload: bytes) -> None:
        """Keep ``payload`` retained on ``topic`` (QoS 1): published now when connected and
        again on every connect, before the births; an empty one clears it. An application
        topic beside Sparkplug's (the run this node belongs to: :mod:`.live.announce`)."""
        self._announcement = (topic, payload)
        if self._conn.connected:
            self._conn.publish(topic, payload, qos=1, retain=True)

    @property
    def away(self) -> frozenset[str]:
        """Devices out of the node's reach."""
        return frozenset(self._away)

    def _ddeath(self, device: str, timestamp_ms: int) -> bool:
        payload = pb.Payload(timestamp=timestamp_ms, seq=self._next_seq())
        return self._publish(self.topic("DDEATH", device), payload)

    def _device(self, device: str) -> None:
        if device not in self._metrics:
            raise ValueError(f"edge node {self.edge_node_id!r} has no device {device!r}")

    def _absorb(self, device: str | None, changes: dict[str, list[tuple[object, int]]]) -> None:
        table = self._metrics[device]
        for name, values in changes.items():
            if values:
                m = table[name]
                m.value, m.timestamp_ms = values[-1]

    def _add_data_metric(
        self, payload: pb.Payload, m: _Metric, value: object, ts: int, historical: bool = False
    ) -> None:
        pm = payload.metrics.add(timestamp=ts)
        if historical:
            pm.is_historical = True
        if self._use_aliases:
            pm.alias = m.alias
        else:
            pm.name = m.defn.name
            pm.datatype = DATATYPES[m.defn.datatype][0]
        encode_value(pm, m.defn.datatype, value)

    # -- store and forward --

    def _begin_store(self) -> None:
        """The session ended: keep changes from here on (see :meth:`HeldStore.begin_after_loss`)."""
        away = self._away
        recent = [s for s in self._recent.take() if s[0][0] not in away]
        last = [(d, n, m.value, m.timestamp_ms) for d, table in self._metrics.items()
                if d not in away for n, m in table.items()]  # fmt: skip
        self._store.begin_after_loss(recent, last)

    def _forward(self) -> None:
        """After the births: the store as historical DATA, one message per node/device (a
        host resolves what it already holds per message), each metric's values in time order.

        With the store on disk this DATA goes at QoS 1 (Sparkplug 3.0 asks QoS 0 of DATA): a
        value leaves the file only once the broker acknowledged it. A host receives it at
        its subscription's QoS; the ``seq`` is the same."""
        store = self._store
        n, by_device = store.take(lambda device: device in self._away)  # away: DBIRTH restates
        if not n:
            return
        for device, held_rows in by_device.items():
            payload = pb.Payload()
            table = self._metrics[device]
            for _, (_, name, value, ts) in held_rows:
                self._add_data_metric(payload, table[name], value, ts, historical=True)
            payload.timestamp = max(c[3] for _, c in held_rows)
            payload.seq = self._next_seq()
            kind = "NDATA" if device is None else "DDATA"
            topic = self.topic(kind, device)
            if store.file is None:
                if self._publish(topic, payload):
                    self.stats.forwarded += len(held_rows)
                else:  # lost again at once: keep them for the next session
                    store.keep_again(held_rows)
                continue
            acked = self._conn.send([(topic, payload.SerializeToString(), False)], qos=1)
            acked.add_done_callback(functools.partial(self._forwarded, held_rows))
        log.info("%s forwarded %d stored values as historical", self.edge_node_id, n)

    def _forwarded(self, rows: list[Held], acked: asyncio.Future[None]) -> None:
        if not acked.cancelled() and acked.exception() is None:
            self.stats.published += 1
            self.stats.forwarded += len(rows)
            self._store.done(rid for rid, _ in rows)
        else:  # the connection ended first: held again (still on disk) for the next session
            self._store.keep_again(rows)

    async def open(self) -> None:
        """Read back what the store file holds (sent after the first births), then connect."""

        def known(change: _Change) -> bool:
            return change[1] in self._metrics.get(change[0], {})

        self.stats.loaded = await self._store.load(known)
        await super().open()

    async def close(self) -> None:
        """Publish a DDEATH per device still in reach (QoS 0, in the seq), then NDEATH (QoS
        1) and disconnect; the broker then drops the Will. NDEATH's PUBACK means the broker
        has the DDEATHs before it (one connection, in order). Values still stored stay in
        the store file for the next start (without one: lost, logged)."""
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._born:
            now = self._clock()
            for device in self._metrics:
                if device is not None and device not in self._away:
                    self._ddeath(device, now)
        if await self._publish_farewell(
            self.topic("NDEATH"),
            self._death_payload(self._bd_seq),
            what=f"NDEATH of {self.edge_node_id}",
        ):
            self.stats.published += 1
        self._born = False
        try:
            await super().close()  # fails forwards still unacknowledged: they are held again
        finally:
            await asyncio.sleep(0)  # their callbacks run now
            await self._store.close()

    # -- connection life cycle --

    def _next_will(self) -> Will:
        self._bd_seq = (self._bd_seq + 1) % 256
        return Will(self.topic("NDEATH"), self._death_payload(self._bd_seq), qos=1, retain=False)

    def _death_payload(self, bd_seq: int) -> bytes:
        payload = pb.Payload(timestamp=self._clock())
        payload.metrics.add(name=BDSEQ_METRIC, datatype=pb.Int64, long_value=bd_seq)
        return payload.SerializeToString()

    def _on_connected(self) -> None:
        self._born = False
        if self._announcement is not None:
            self._conn.publish(*self._announcement, qos=1, retain=True)
        self._host_online = self.primary_host_id is None
        if self._host_online:
            self._publish_births()

    def _on_lost(self) -> None:
        if self._born:
            self._begin_store()
        self._born = False

    def _next_seq(self) -> int:
        s = self._seq
        self._seq = (s + 1) % 256
        return s

    def _publish(self, topic: str, payload: pb.Payload) -> bool:
        if self._conn.publish(topic, payload.SerializeToString(), qos=0, retain=False):
            self.stats.published += 1
            return True
        return False

    def _publish_births(self) -> None:
        # Births carry every value, including changes not flushed yet; the ones a later
        # change replaced go on to the host as history (with store and forward).
        for device, changes in self._pending.items():
            if device in self._away:
                self._absorb(device, changes)
                continue
            for name, values in changes.items():
                if not values:
                    continue
                for value, ts in values[:-1]:  # the birth carries the last
                    self._store.keep((device, name, value, ts))
                m = self._metrics[device][name]
                m.value, m.timestamp_ms = values[-1]
        self._pending = {}
        self._recent.clear()
        now = self._clock()
        self._seq = 0
        nbirth = pb.Payload(timestamp=now, seq=self._next_seq())
        nbirth.metrics.add(
            name=BDSEQ_METRIC, timestamp=now, datatype=pb.Int64, long_value=self._bd_seq
        )
        nbirth.metrics.add(
            name=REBIRTH_METRIC, timestamp=now, datatype=pb.Boolean, boolean_value=False
        )
        self._add_birth_metrics(nbirth, None, now)
        self._publish(self.topic("NBIRTH"), nbirth)
        for device in self._metrics:
            if device is not None and device not in self._away:  # away: DBIRTH on return
                self._publish_dbirth(device, now)
        self._born = True
        self.stats.births += 1
        self._forward()

    def _publish_dbirth(self, device: str, now: int) -> None:
        dbirth = pb.Payload(timestamp=now, seq=self._next_seq())
        self._add_birth_metrics(dbirth, device, now)
        self._publish(self.topic("DBIRTH", device), dbirth)

    def _add_birth_metrics(self, payload: pb.Payload, device: str | None, now: int) -> None:
        for name, m in self._metrics[device].items():
            pm = payload.metrics.add(
                name=name,
                timestamp=m.timestamp_ms if m.timestamp_ms is not None else now,
                datatype=DATATYPES[m.defn.datatype][0],
            )
            if self._use_aliases:
                pm.alias = m.alias
            if m.defn.unit is not None:
                pm.properties.keys.append(UNIT_PROPERTY)
                pm.properties.values.add(type=pb.String, string_value=m.defn.unit)
            encode_value(pm, m.defn.datatype, m.value)

    # -- incoming messages --

    def _on_message(self, msg: Message) -> None:
        if msg.topic == self._topic_state:
            self._on_state(msg.payload)
        elif msg.topic == self._topic_ncmd:
            self._on_command_message(msg.topic, None, msg.payload)
        elif msg.topic.startswith(self._topic_dcmd):
            self._on_command_message(msg.topic, msg.topic[len(self._topic_dcmd) :], msg.payload)

    def _on_state(self, data: bytes) -> None:
        try:
            state = json.loads(data)
            online, ts = state["online"], state["timestamp"]
            if not isinstance(online, bool) or not isinstance(ts, int):
                raise TypeError("online must be a bool and timestamp an int")
        except (ValueError, TypeError, KeyError) as exc:
            self.stats.malformed += 1
            log.warning("malformed STATE from %s: %r (%s)", self.primary_host_id, data[:200], exc)
            return
        if ts < self._host_ts:
            return  # Sparkplug 3.0: a STATE older than the last one seen is ignored
        self._host_ts = ts
        self._host_online = online
        if online and not self._born:
            self._publish_births()
        elif not online and self._born and not self._tasks:
            # The Primary Host went away: end this session (explicit NDEATH) and start a
            # new one, whose births wait for the host to come back online.
            # owned: close() cancels and awaits it; _reaped collects the outcome of a finished one
            task = asyncio.create_task(
                self._restart_session(), name=f"spb-restart-{self.edge_node_id}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._reaped)

    def _reaped(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.stats.restart_failures += 1
            log.error("session restart of %s failed: %r", self.edge_node_id, exc, exc_info=exc)

    async def _restart_session(self) -> None:
        if self._host_grace:  # a redundant host under the id may answer with a newer online
            await asyncio.sleep(self._host_grace)
            if self._host_online or not self._born:
                return  # it did: the session goes on (that host had every message)
        self._begin_store()  # the host is away: what it missed goes to it when back
        self._born = False
        with contextlib.suppress(Exception):
            await self._conn.publish_and_wait(
                self.topic("NDEATH"), self._death_payload(self._bd_seq), qos=1
            )
            self.stats.published += 1
        await self._conn.reconnect()

    def _refuse(self, topic: str, metric: str, reason: str) -> None:
        self.stats.commands_refused += 1
        log.warning("refused command on %s, metric %r: %s", topic, metric, reason)

    def _on_command_message(self, topic: str, device: str | None, data: bytes) -> None:
        try:
            payload = decode_payload(data)
        except ValueError as exc:
            self.stats.malformed += 1
            log.warning("malformed command on %s (%d bytes): %s", topic, len(data), exc)
            return
        if not payload.metrics:
            self.stats.malformed += 1
            log.warning("command on %s carries no metrics", topic)
            return
        table = self._metrics.get(device)
        defs = None if table is None else {n: m.defn for n, m in table.items()}
        for name, value, why in command_writes(payload, device, defs, self._by_alias):
            if why is not None:
                self._refuse(topic, name, why)
                continue
            if device is None and name == REBIRTH_METRIC:
                self.stats.commands_accepted += 1
                if value and self._born:
                    log.info("rebirth requested for %s", self.edge_node_id)
                    self._publish_births()
                continue
            if self._on_command is None:
                self._refuse(topic, name, "no command handler")
                continue
            try:
                ok = self._on_command(device, name, value)
            except CommandRefused as exc:  # the one mapping: refused, counted and logged
                self._refuse(topic, name, str(exc))
                continue
            except Exception:
                log.exception("command handler failed on %s, metric %r", topic, name)
                ok = False
            if ok:
                self.stats.commands_accepted += 1
            else:
                self._refuse(topic, name, f"handler declined value {value!r}")
