"""Sparkplug B 3.0 host application: births, data, deaths → samples; rebirth on gaps.

The host publishes its ``spBv1.0/STATE/<host_id>`` (retained JSON ``online``/``timestamp``,
the Will says offline) and follows it: an offline there while it is connected (the Will of
another host under the same id: redundant gateways) is answered with online, under a newer
timestamp when edge nodes took that offline. It learns each node's and device's metrics
(names, aliases, datatypes, ``engUnit``) from NBIRTH/DBIRTH, checks ``seq`` (0-255) on every
message and asks for a rebirth (NCMD ``Node Control/Rebirth``) on a gap or on data before a birth.
NDEATH (with the bdSeq of the birth) and DDEATH mark the metrics stale: quality Bad, no value;
so does losing the broker (Sparkplug 3.0: a host that loses its connection must consider every
node's metrics stale), at the newest sim time seen from each node, and every node then needs a
new birth. A stale mark lies just after the newest value it ends, so a value restated at the
mark is a new sample (dedup by id would drop an exact repeat and leave the gap open). The
values of a birth after a stale mark are dated no earlier than the mark: the gap stays marked
where the node's values are newer, and ends at the mark where the node only restates values
it held all along.

Historical metrics (``is_historical``, an edge node's store and forward after its rebirth)
keep their own timestamps and fill the gap: per metric and message, values dated from the
mark up to the birth's are passed on, the newest one before the mark is restated at the mark
(the value held when the host lost sight of the node), and older ones, and ones the birth
already carried, are dropped. A historical value never marks anything stale.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import orjson

from iiotbed.errors import UnsError
from iiotbed.gateway.collectors._mqtt import MqttCollector, count_message
from iiotbed.gateway.collectors.base import CollectorStats, MalformedLog, Sink
from iiotbed.gateway.normalise import normalise_value, unit_code
from iiotbed.mqtt import Backoff, Message, MqttConnection, Will
from iiotbed.protocols.sparkplug.codec import (
    BDSEQ_METRIC,
    DATATYPE_NAMES,
    MESSAGE_TYPES,
    NAMESPACE,
    REBIRTH_METRIC,
    UNIT_PROPERTY,
    command_payload,
    decode_payload,
    metric_value,
    pb,
)
from iiotbed.telemetry import Quality, Sample

__all__ = ["SparkplugHost", "SparkplugHostStats"]

log = logging.getLogger(__name__)


@dataclass
class SparkplugHostStats(CollectorStats):
    """Collector counters plus the Sparkplug host's own."""

    births: int = 0
    deaths: int = 0
    seq_gaps: int = 0
    unborn_data: int = 0  # data from a node or device whose birth was not seen
    rebirths_requested: int = 0
    historical: int = 0  # historical metric values received (store and forward)
    state_republished: int = 0  # online STATE restated after our own topic said offline


@dataclass
class _Metric:
    name: str
    datatype: str
    unit: str | None


@dataclass
class _Table:
    """The metrics one birth declared (a node's or a device's)."""

    asset: str
    by_name: dict[str, _Metric] = field(default_factory=dict)
    by_alias: dict[int, _Metric] = field(default_factory=dict)
    last_t: float = -float("inf")
    floor: float = -float("inf")  # the node's last stale mark: no value dated before it
    birth_t: dict[str, float] = field(default_factory=dict)  # metric -> its birth value's time


@dataclass
class _Node:
    bd_seq: int | None = None
    seq: int | None = None
    table: _Table | None = None  # None until NBIRTH
    devices: dict[str, _Table] = field(default_factory=dict)
    last_rebirth: float = -float("inf")
    floor: float = -float("inf")  # sim time of the last stale mark (death or broker lost)


class _Bad(Exception):
    """A message (or metric) the host refuses; the text says why."""


class SparkplugHost(MqttCollector):
    """A Sparkplug B host application feeding a :class:`Sink`; ``await run()`` until cancelled.

    ``assets`` maps ``device``, ``edge/device``, ``group/edge/device`` (devices) or
    ``edge``, ``group/edge`` (node metrics) to an ISA-95 asset path; the most specific key
    wins, and unmapped ones become ``<group>/<edge>[/<device>]``. ``epoch`` (Unix seconds)
    turns Sparkplug's epoch-ms timestamps into sim time.
    """

    def __init__(
        self,
        broker: str,
        sink: Sink,
        *,
        epoch: float,
        host_id: str = "iiotbed-gateway",
        groups: Sequence[str] = (),
        edge_nodes: Sequence[str] = (),
        assets: Mapping[str, str] | None = None,
        name: str = "sparkplug",
        client_id: str | None = None,
        rebirth_interval: float = 2.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
    ) -> None:
        if not host_id or any(c in host_id for c in "/+#"):
            raise ValueError(
                f"Sparkplug host_id {host_id!r} must be non-empty without '/', '+', '#'"
            )
        self.broker = broker
        self.sink = sink
        self.epoch = epoch
        self.host_id = host_id
        self.groups = tuple(groups)
        self.edge_nodes = tuple(edge_nodes)
        self.assets = dict(assets or {})
        self.name = name
        self.client_id = client_id or f"iiotbed-host-{host_id}"
        self.rebirth_interval = rebirth_interval
        self.stats: SparkplugHostStats = SparkplugHostStats()
        self.state_topic = f"{NAMESPACE}/STATE/{host_id}"
        self._malformed = MalformedLog(self.stats, log)
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._nodes: dict[tuple[str, str], _Node] = {}
        self._conn: MqttConnection | None = None
        self._state_ts = 0
        self._closing = False

    # ------------------------------------------------------------------ lifecycle

    def _subscriptions(self) -> list[tuple[str, int]]:
        groups = self.groups or ("+",)
        if self.edge_nodes:  # spBv1.0/<group>/<type>/<edge>[/<device>]
            filters = [f"{NAMESPACE}/{g}/+/{e}/#" for g in groups for e in self.edge_nodes]
        else:
            filters = [f"{NAMESPACE}/{g}/#" for g in self.groups] or [f"{NAMESPACE}/#"]
        if not any(f == f"{NAMESPACE}/#" for f in filters):
            filters.append(self.state_topic)  # Sparkplug 3.0: a host follows its own STATE
        return [(f, 1) for f in filters]

    async def run(self) -> None:
        """Collect until cancelled; publishes STATE offline (retained) on the way out."""
        await super().run()

    async def _before_close(self, conn: MqttConnection) -> None:
        self._closing = True  # our own offline coming back is no cue to restate online
        await conn.publish_and_wait(
            self.state_topic, self._state(False), qos=1, retain=True, ack_wait=2.0
        )

    def _opened(self, conn: MqttConnection | None) -> None:
        self._conn = conn
        if conn is not None:  # the first connect: _on_connect ran before we held the connection
            conn.publish(self.state_topic, self._state(True), qos=1, retain=True)

    def _state(self, online: bool) -> bytes:
        return orjson.dumps({"online": online, "timestamp": self._state_ts})

    def _will(self) -> Will:
        # Sparkplug 3.0: the Will and the following online STATE carry the same timestamp.
        self._state_ts = time.time_ns() // 1_000_000
        return Will(self.state_topic, self._state(False), qos=1, retain=True)

    def _own_state(self, data: bytes) -> None:
        """Our STATE topic says offline while we are connected: the Will of another host under
        this id (a redundant gateway) or of an earlier session of ours. Sparkplug 3.0: answer
        online with a new timestamp, so edge nodes that took the offline (its timestamp not
        older than the newest they saw) come back, and the retained STATE says online again.
        A Will older than our own STATE only left the retained value wrong (edge nodes ignore
        it): we restate our online with its timestamp, which keeps our Will's matching ours."""
        conn = self._conn
        try:
            state = orjson.loads(data)
            online, ts = state["online"], state["timestamp"]
            if not isinstance(online, bool) or not isinstance(ts, int):
                raise TypeError("online must be a bool and timestamp an int")
        except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
            log.warning("malformed STATE on %s: %r (%s)", self.state_topic, data[:200], exc)
            return
        if online or conn is None or self._closing or not self.connected:
            return
        if ts >= self._state_ts:
            # edge nodes took it: a newer online (our Will keeps the older timestamp, which
            # edge nodes then ignore; docs/compose.md says what that means)
            self._state_ts = max(time.time_ns() // 1_000_000, ts + 1)
        self.stats.state_republished += 1
        log.info("%s said offline (timestamp %d) while we are connected: online again, "
                 "timestamp %d", self.state_topic, ts, self._state_ts)  # fmt: skip
        conn.publish(self.state_topic, self._state(True), qos=1, retain=True)

    def _on_lost(self) -> None:
        super()._on_lost()
        # Sparkplug 3.0 (host applications): on losing the broker, every metric is stale;
        # the births that answer the reconnect (our STATE online, or a rebirth request) restate them
        for key, node in self._nodes.items():
            if node.table is None:
                continue
            log.info("broker lost: marking the metrics of %s/%s stale", *key)
            self._mark_stale([node.table, *node.devices.values()], None, time.time(), node)
            node.table, node.devices, node.seq = None, {}, None

    def _on_connect(self) -> None:
        self.stats.connects += 1
        conn = self._conn
        if conn is not None:  # a reconnect (the first connect is handled in _opened)
            conn.publish(self.state_topic, self._state(True), qos=1, retain=True)

    # ------------------------------------------------------------------ messages

    def _on_message(self, msg: Message) -> None:
        now = count_message(self.stats)
        parts = msg.topic.split("/")
        if len(parts) >= 2 and parts[1] == "STATE":
            if msg.topic == self.state_topic:
                self._own_state(msg.payload)
            return  # host STATE messages (ours and other hosts') are not telemetry
        try:
            self._handle(parts, msg.payload, now)
        except _Bad as exc:
            self._malformed(msg.topic, str(exc))

    def _handle(self, parts: list[str], data: bytes, now: float) -> None:
        if len(parts) not in (4, 5) or parts[0] != NAMESPACE or parts[2] not in MESSAGE_TYPES:
            raise _Bad("topic is not spBv1.0/<group>/<type>/<edge>[/<device>]")
        group, kind, edge = parts[1], parts[2], parts[3]
        device = parts[4] if len(parts) == 5 else None
        if (device is None) != (kind[0] == "N") or not all(parts[1:]):
            raise _Bad(f"{kind} with {'a' if device else 'no'} device id")
        if kind in ("NCMD", "DCMD"):
            return  # commands to nodes (ours included) are not telemetry
        try:
            payload = decode_payload(data)
        except ValueError as exc:
            raise _Bad(str(exc)) from None
        if kind != "NDEATH" and (not payload.HasField("seq") or not 0 <= payload.seq <= 255):
            raise _Bad(f"{kind} without a seq in 0-255")
        key = (group, edge)
        node = self._nodes.get(key)
        if kind == "NBIRTH":
            self._nbirth(key, payload, now)
        elif kind == "NDEATH":
            self._ndeath(key, node, payload, now)
        elif node is None or node.table is None:
            self.stats.unborn_data += 1
            self._request_rebirth(key, self._nodes.setdefault(key, _Node()), "data before NBIRTH")
        elif kind == "DBIRTH":
            assert device is not None
            self._check_seq(key, node, payload)
            self._dbirth(key, node, device, payload, now)
        elif kind == "DDEATH":
            assert device is not None
            self._check_seq(key, node, payload)
            table = node.devices.pop(device, None)
            if table is not None:
                self.stats.deaths += 1
                self._mark_stale([table], payload, now, None)
        else:
            table = node.table if device is None else node.devices.get(device)
            if table is None:
                self.stats.unborn_data += 1
                self._request_rebirth(key, node, f"DDATA before DBIRTH of {device}")
                return
            samples, problems, valid = self._resolve(table, payload, now)
            if not valid:
                # garbage never moves the seq: only a message with real data is checked
                raise _Bad("; ".join(problems[:3]) or f"{kind} without metrics")
            self._check_seq(key, node, payload)
            self._emit(table, samples, problems)

    def _asset(self, group: str, edge: str, device: str | None) -> str:
        keys = (
            [f"{group}/{edge}/{device}", f"{edge}/{device}", device]
            if device is not None
            else [f"{group}/{edge}", edge]
        )
        for k in keys:
            asset = self.assets.get(k)
            if asset is not None:
                return asset
        return f"{group}/{edge}" if device is None else f"{group}/{edge}/{device}"

    def _nbirth(self, key: tuple[str, str], payload: pb.Payload, now: float) -> None:
        bd = next((m for m in payload.metrics if m.name == BDSEQ_METRIC), None)
        if bd is None or bd.WhichOneof("value") != "long_value":
            raise _Bad("NBIRTH without an Int64 bdSeq metric")
        node = self._nodes.setdefault(key, _Node())
        # a new birth ends every device of the previous session
        node.bd_seq = bd.long_value
        node.seq = payload.seq if payload.HasField("seq") else 0
        node.devices = {}
        node.table = _Table(self._asset(*key, None), floor=node.floor)
        self.stats.births += 1
        self._birth(node.table, payload, now)

    def _dbirth(
        self, key: tuple[str, str], node: _Node, device: str, payload: pb.Payload, now: float
    ) -> None:
        table = _Table(self._asset(*key, device), floor=node.floor)
        node.devices[device] = table
        self.stats.births += 1
        self._birth(table, payload, now)

    def _birth(self, table: _Table, payload: pb.Payload, now: float) -> None:
        problems = []
        for m in payload.metrics:
            if m.name in (BDSEQ_METRIC,) or m.name.startswith("Node Control/"):
                continue
            dtype = DATATYPE_NAMES.get(m.datatype)
            if not m.name or dtype is None:
                problems.append(f"metric {m.name!r}: no name or unsupported datatype {m.datatype}")
                continue
            unit = None
            props = m.properties
            for k, v in zip(props.keys, props.values, strict=False):
                if k == UNIT_PROPERTY and v.WhichOneof("value") == "string_value":
                    try:
                        unit = unit_code(v.string_value)
                    except UnsError as exc:
                        problems.append(f"metric {m.name!r}: {exc.reason}")
            metric = _Metric(m.name, dtype, unit)
            table.by_name[m.name] = metric
            if m.HasField("alias"):
                table.by_alias[m.alias] = metric
        samples, more, _ = self._resolve(table, payload, now, birth=True)
        self._emit(table, samples, problems + more)

    def _resolve(
        self, table: _Table, payload: pb.Payload, now: float, *, birth: bool = False
    ) -> tuple[list[Sample], list[str], int]:
        """Samples of the payload's metrics, problems, and how many metrics were valid."""
        out: list[Sample] = []
        problems: list[str] = []
        seq = payload.seq if payload.HasField("seq") else None
        floor = table.floor
        valid = 0
        history: dict[str, list[Sample]] = {}
        for m in payload.metrics:
            if m.HasField("name") and m.name:
                if m.name == BDSEQ_METRIC or m.name.startswith("Node Control/"):
                    continue
                metric = table.by_name.get(m.name)
            elif m.HasField("alias"):
                metric = table.by_alias.get(m.alias)
            else:
                metric = None
            if metric is None:
                problems.append(f"unknown metric {m.name or f'alias {m.alias}'!r}")
                continue
            try:
                raw = metric_value(m, metric.datatype)
            except ValueError as exc:
                problems.append(str(exc))
                continue
            if isinstance(raw, bytes):
                problems.append(f"metric {metric.name!r}: Bytes cannot travel in the UNS")
                continue
            ts = m.timestamp if m.HasField("timestamp") else payload.timestamp
            t = ts / 1000.0 - self.epoch if ts else now - self.epoch
            valid += 1
            value, quality = normalise_value(raw)
            if m.is_historical and not birth:
                s = Sample(t, table.asset, metric.name, value, metric.unit, quality, now, seq)
                history.setdefault(metric.name, []).append(s)
                continue
            if birth:
                table.birth_t[metric.name] = t
            if t < floor:  # a value held since before the stale mark is known again from it
                t = floor
            out.append(Sample(t, table.asset, metric.name, value, metric.unit, quality, now, seq))
        for name, values in history.items():
            self.stats.historical += len(values)
            out += _fill(values, floor, table.birth_t.get(name, math.inf))
        return out, problems, valid

    def _emit(self, table: _Table, samples: list[Sample], problems: list[str]) -> None:
        if samples:
            table.last_t = max(table.last_t, max(s.t for s in samples))
            self.stats.samples += len(samples)
            self.sink.samples(self.name, samples)
        if problems:
            more = f" (+{len(problems) - 3})" if len(problems) > 3 else ""
            raise _Bad("; ".join(problems[:3]) + more)

    def _ndeath(
        self, key: tuple[str, str], node: _Node | None, payload: pb.Payload, now: float
    ) -> None:
        bd = next((m for m in payload.metrics if m.name == BDSEQ_METRIC), None)
        if bd is None or bd.WhichOneof("value") != "long_value":
            raise _Bad("NDEATH without an Int64 bdSeq metric")
        if node is None or node.table is None or bd.long_value != node.bd_seq:
            # the death of an older session (its Will arriving late): not this birth's
            log.info("ignoring NDEATH of %s/%s with bdSeq %d", *key, bd.long_value)
            return
        self.stats.deaths += 1
        self._mark_stale([node.table, *node.devices.values()], payload, now, node)
        node.table, node.devices, node.seq = None, {}, None

    def _mark_stale(
        self, tables: list[_Table], payload: pb.Payload | None, now: float, node: _Node | None
    ) -> None:
        """Bad, no value, for every metric of ``tables``: at the death's time, or just after
        the newest value of the node it ends (a broker lost: no death), whichever is later."""
        out = []
        newest = max(table.last_t for table in tables)
        if payload is None:
            if newest == -float("inf"):
                return  # no value ever came: nothing to mark
            stamp = newest
        else:
            stamp = (
                payload.timestamp / 1000.0 - self.epoch if payload.timestamp else now - self.epoch
            )
        # strictly after every value it ends: a value restated at the mark then differs from
        # the one sent before (same time and value: the same sample id, dropped as a duplicate)
        t = max(stamp, math.nextafter(newest, math.inf))
        if node is not None and t > node.floor:
            node.floor = t
        for table in tables:
            for metric in table.by_name.values():
                out.append(Sample(t, table.asset, metric.name, None, metric.unit, Quality.Bad, now))
        if out:
            self.stats.stale_marks += len(out)
            self.stats.samples += len(out)
            self.sink.samples(self.name, out)

    def _check_seq(self, key: tuple[str, str], node: _Node, payload: pb.Payload) -> None:
        expected = None if node.seq is None else (node.seq + 1) % 256
        node.seq = payload.seq
        if expected is not None and payload.seq != expected:
            self.stats.seq_gaps += 1
            self._request_rebirth(key, node, f"seq {payload.seq}, expected {expected}")

    def _request_rebirth(self, key: tuple[str, str], node: _Node, why: str) -> None:
        mono = time.monotonic()
        conn = self._conn
        if conn is None or mono - node.last_rebirth < self.rebirth_interval:
            return  # one request per interval: the rebirth answers every gap before it
        node.last_rebirth = mono
        group, edge = key
        body = command_payload([(REBIRTH_METRIC, "Boolean", True)], time.time_ns() // 1_000_000)
        if conn.publish(f"{NAMESPACE}/{group}/NCMD/{edge}", body, qos=0):
            self.stats.rebirths_requested += 1
            log.info("requested a rebirth of %s/%s: %s", group, edge, why)


def _fill(values: list[Sample], floor: float, birth_t: float) -> list[Sample]:
    """The historical values of one metric (in the edge's order) that fill a stale gap:
    those dated from ``floor`` to before ``birth_t``, led by the newest older one restated
    at ``floor`` (when the birth's value is newer than the mark)."""
    held: Sample | None = None
    out: list[Sample] = []
    for s in values:
        if s.t >= birth_t:
            continue  # the birth carried it (or a newer value)
        if s.t < floor:
            held = s
        else:
            out.append(s)
    if held is not None and birth_t > floor:
        out.insert(0, dataclasses.replace(held, t=floor))
    return out
