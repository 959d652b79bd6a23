"""VDA 5050 2.1 collector: AMR ``state``, ``connection`` and ``visualization`` → samples.

Topics ``<interface>/<major>/<manufacturer>/<serial>/<topic>``. Fields are type-checked by
hand (the full JSON schema costs ~1 ms a message). A ``connection`` of OFFLINE or
CONNECTIONBROKEN marks every tag of that AMR stale (quality Bad, no value).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any, Final

import orjson

from iiotbed.gateway.collectors._mqtt import MqttCollector, count_message
from iiotbed.gateway.collectors.base import CollectorStats, MalformedLog, Sink
from iiotbed.mqtt import Backoff, Message, MqttConnection
from iiotbed.protocols.vda5050.messages import INTERFACE_NAME, MAJOR_VERSION
from iiotbed.telemetry import Quality, Sample, Tag

__all__ = ["Vda5050Collector"]

log = logging.getLogger(__name__)

_CONNECTION_STATES: Final = frozenset(("ONLINE", "OFFLINE", "CONNECTIONBROKEN"))
_NUMBER: Final = (int, float)


class _Bad(Exception):
    pass


def _get(doc: Mapping[str, Any], key: str, kind: type | tuple[type, ...], required: bool) -> Any:
    v = doc.get(key)
    if v is None:
        if required:
            raise _Bad(f"missing {key!r}")
        return None
    if (isinstance(v, bool) and kind is not bool) or not isinstance(v, kind):
        raise _Bad(f"{key!r} has the wrong type: {type(v).__name__} {str(v)[:40]}")
    return v


class Vda5050Collector(MqttCollector):
    """Collects an AMR fleet's VDA 5050 messages into a :class:`Sink`.

    ``assets`` maps a serial number (or ``manufacturer/serial``) to an asset path; unmapped
    AMRs become ``<prefix>/<serial>`` (``prefix`` defaults to the manufacturer).
    """

    def __init__(
        self,
        broker: str,
        sink: Sink,
        *,
        epoch: float,
        manufacturer: str = "+",
        interface_name: str = INTERFACE_NAME,
        major_version: str = MAJOR_VERSION,
        assets: Mapping[str, str] | None = None,
        prefix: str | None = None,
        name: str = "vda5050",
        client_id: str | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
    ) -> None:
        self.broker = broker
        self.sink = sink
        self.epoch = epoch
        self.base = f"{interface_name}/{major_version}/{manufacturer}/+"
        self.assets = dict(assets or {})
        self.prefix = prefix
        self.name = name
        self.client_id = client_id or f"iiotbed-gw-vda-{manufacturer.replace('+', 'all')}"
        self.stats = CollectorStats()
        self._malformed = MalformedLog(self.stats, log)
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._conn: MqttConnection | None = None
        self._seen: dict[str, dict[str, str | None]] = {}  # asset -> tag -> unit
        self._last_t: dict[str, float] = {}

    def _subscriptions(self) -> list[tuple[str, int]]:
        return [(f"{self.base}/{t}", 1) for t in ("state", "connection", "visualization")]

    # ------------------------------------------------------------------ messages

    def _asset(self, manufacturer: str, serial: str) -> str:
        return (
            self.assets.get(f"{manufacturer}/{serial}")
            or self.assets.get(serial)
            or f"{self.prefix or manufacturer}/{serial}"
        )

    def _on_message(self, msg: Message) -> None:
        now = count_message(self.stats)
        if not msg.payload and msg.retain:
            return  # a cleared retained message
        try:
            self._handle(msg.topic, msg.payload, now)
        except _Bad as exc:
            self._malformed(msg.topic, str(exc))

    def _handle(self, topic: str, data: bytes, now: float) -> None:
        parts = topic.split("/")
        if len(parts) != 5 or not all(parts):
            raise _Bad("topic is not <interface>/<major>/<manufacturer>/<serial>/<topic>")
        manufacturer, serial, kind = parts[2], parts[3], parts[4]
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise _Bad(f"not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise _Bad(f"expected a JSON object, got {type(doc).__name__}")
        header = _get(doc, "headerId", int, True)
        stamp = _get(doc, "timestamp", str, True)
        try:
            ts = dt.datetime.fromisoformat(stamp)
        except ValueError:
            raise _Bad(f"timestamp {stamp[:40]!r} is not ISO 8601") from None
        if ts.tzinfo is None:
            raise _Bad(f"timestamp {stamp[:40]!r} has no UTC offset")
        if header < 0:
            raise _Bad(f"headerId {header} is negative")
        t = round(ts.timestamp() - self.epoch, 6)
        asset = self._asset(manufacturer, serial)
        if kind == "state":
            values = self._state(doc)
        elif kind == "visualization":
            values = self._position(doc, required=False)
        elif kind == "connection":
            self._connection(doc, asset, t, now, header)
            return
        else:
            raise _Bad(f"topic {kind!r} is not collected")
        self._emit(asset, t, now, header, values)

    def _position(self, doc: Mapping[str, Any], required: bool) -> list[tuple[str, Any, str | None]]:
        pos = _get(doc, "agvPosition", dict, required)
        if pos is None:
            return []
        x = _get(pos, "x", _NUMBER, True)
        y = _get(pos, "y", _NUMBER, True)
        theta = _get(pos, "theta", _NUMBER, True)
        return [(Tag.POSITION_X, x, "MTR"), (Tag.POSITION_Y, y, "MTR"), ("Heading", theta, "C81")]

    def _state(self, doc: Mapping[str, Any]) -> list[tuple[str, Any, str | None]]:
        battery = _get(doc, "batteryState", dict, True)
        charge = _get(battery, "batteryCharge", _NUMBER, True)
        charging = _get(battery, "charging", bool, True)
        driving = _get(doc, "driving", bool, True)
        paused = _get(doc, "paused", bool, False)
        errors = _get(doc, "errors", list, True)
        order = _get(doc, "orderId", str, True)
        last_node = _get(doc, "lastNodeId", str, True)
        last_seq = _get(doc, "lastNodeSequenceId", int, True)
        mode = _get(doc, "operatingMode", str, True)
        values: list[tuple[str, Any, str | None]] = [
            (Tag.BATTERY, charge, "P1"),
            ("Charging", charging, None),
            ("Driving", driving, None),
            ("ErrorCount", len(errors), "C62"),
            ("OrderId", order, None),
            ("LastNodeId", last_node, None),
            ("LastNodeSequenceId", last_seq, None),
            ("OperatingMode", mode, None),
        ]
        if paused is not None:
            values.append(("Paused", paused, None))
        return values + self._position(doc, required=False)

    def _emit(
        self, asset: str, t: float, now: float, seq: int, values: list[tuple[str, Any, str | None]]
    ) -> None:
        seen = self._seen.setdefault(asset, {})
        out = []
        for tag, value, unit in values:
            v = int(value) if isinstance(value, bool) else value
            if isinstance(v, float) and v - v != 0.0:  # NaN or infinity cannot be sent
                out.append(Sample(t, asset, tag, None, unit, Quality.Bad, now, seq))
            else:
                out.append(Sample(t, asset, tag, v, unit, Quality.Good, now, seq))
            seen[tag] = unit
        if t > self._last_t.get(asset, -float("inf")):
            self._last_t[asset] = t
        self.stats.samples += len(out)
        self.sink.samples(self.name, out)

    def _connection(self, doc: Mapping[str, Any], asset: str, t: float, now: float, seq: int) -> None:
        state = _get(doc, "connectionState", str, True)
        if state not in _CONNECTION_STATES:
            raise _Bad(f"connectionState {state[:40]!r} is not one of {sorted(_CONNECTION_STATES)}")
        t = max(t, self._last_t.get(asset, -float("inf")))  # a Will carries its CONNECT time
        out = [Sample(t, asset, "ConnectionState", state, None, Quality.Good, now, seq)]
        if state != "ONLINE":
            marks = [
                Sample(t, asset, tag, None, unit, Quality.Bad, now)
                for tag, unit in self._seen.get(asset, {}).items()
            ]
            self.stats.stale_marks += len(marks)
            out += marks
        self.stats.samples += len(out)
        self.sink.samples(self.name, out)
