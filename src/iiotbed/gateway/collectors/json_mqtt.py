"""Generic JSON-over-MQTT collector driven by a mapping: topic filter → asset/tag/value/unit/time.

Each :class:`JsonMapping` names a topic filter (MQTT wildcards), an asset path template
(``{0}``, ``{1}``... are the topic's levels), a tag, a JSON pointer (RFC 6901) to the value,
a UNECE unit, and optionally pointers to a source timestamp and a quality. A message
matching several mappings yields one sample per mapping.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from iiotbed.gateway.collectors._mqtt import MqttCollector, count_message, match_topic
from iiotbed.gateway.collectors.base import CollectorStats, MalformedLog, Sink
from iiotbed.gateway.normalise import normalise_value, unit_code
from iiotbed.mqtt import Backoff, Message, MqttConnection
from iiotbed.telemetry import Quality, Sample

__all__ = ["JsonMapping", "JsonMqttCollector", "resolve_pointer"]

log = logging.getLogger(__name__)

_QUALITIES: Final = {q.name: q for q in Quality}
_MISSING: Final = object()


@dataclass(frozen=True)
class JsonMapping:
    """One rule: messages on ``topic`` give ``tag`` of ``asset`` from ``value`` (a JSON pointer).

    ``timestamp`` points at the source time: epoch seconds or milliseconds (a number above
    1e11 is taken as ms) or an ISO 8601 string with an offset. Without it the gateway's
    receive time is the source time. ``quality`` points at ``"Good"``/``"Uncertain"``/``"Bad"``.
    """

    topic: str
    asset: str
    tag: str
    value: str = ""
    unit: str | None = None
    timestamp: str | None = None
    quality: str | None = None

    def __post_init__(self) -> None:
        levels = self.topic.split("/")
        if not self.topic or any(("#" in lv and lv != "#") or ("+" in lv and lv != "+") for lv in levels):
            raise ValueError(f"topic filter {self.topic!r} is not a valid MQTT filter")
        if "#" in levels[:-1]:
            raise ValueError(f"topic filter {self.topic!r}: '#' must be the last level")
        for ptr in (self.value, self.timestamp, self.quality):
            if ptr and not ptr.startswith("/"):
                raise ValueError(f"JSON pointer {ptr!r} must be empty or start with '/'")
        unit_code(self.unit)  # raises on a unit without a UNECE code


def resolve_pointer(doc: Any, pointer: str) -> Any:
    """RFC 6901 JSON pointer lookup; raises KeyError when the path does not exist."""
    if pointer == "":
        return doc
    cur = doc
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(cur, dict):
            if token not in cur:
                raise KeyError(pointer)
            cur = cur[token]
        elif isinstance(cur, list):
            if not token.isdigit() or int(token) >= len(cur):
                raise KeyError(pointer)
            cur = cur[int(token)]
        else:
            raise KeyError(pointer)
    return cur


class _Bad(Exception):
    pass


class JsonMqttCollector(MqttCollector):
    """Collects JSON messages by a list of :class:`JsonMapping` rules into a :class:`Sink`."""

    def __init__(
        self,
        broker: str,
        sink: Sink,
        mappings: Sequence[JsonMapping],
        *,
        epoch: float,
        name: str = "json_mqtt",
        client_id: str | None = None,
        qos: int = 1,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
    ) -> None:
        if not mappings:
            raise ValueError("the JSON-over-MQTT collector needs at least one mapping")
        self.broker = broker
        self.sink = sink
        self.mappings = tuple(mappings)
        self.epoch = epoch
        self.name = name
        self.client_id = client_id or f"iiotbed-gw-{name}"
        self.qos = qos
        self.stats = CollectorStats()
        self._rules = [(m.topic.split("/"), m, unit_code(m.unit)) for m in self.mappings]
        self._malformed = MalformedLog(self.stats, log)
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._conn: MqttConnection | None = None

    def _subscriptions(self) -> list[tuple[str, int]]:
        filters = list(dict.fromkeys(m.topic for m in self.mappings))
        return [(f, self.qos) for f in filters]

    def _on_message(self, msg: Message) -> None:
        now = count_message(self.stats)
        try:
            self._handle(msg.topic, msg.payload, now)
        except _Bad as exc:
            self._malformed(msg.topic, str(exc))

    def _handle(self, topic: str, data: bytes, now: float) -> None:
        levels = topic.split("/")
        rules = [(m, u) for f, m, u in self._rules if match_topic(f, levels)]
        if not rules:
            raise _Bad("no mapping matches this topic")
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise _Bad(f"not JSON: {exc}") from None
        out = [self._sample(m, unit, levels, doc, now) for m, unit in rules]
        self.stats.samples += len(out)
        self.sink.samples(self.name, out)

    def _sample(
        self, m: JsonMapping, unit: str | None, levels: list[str], doc: Any, now: float
    ) -> Sample:
        try:
            asset = m.asset.format(*levels)
        except (IndexError, KeyError, ValueError) as exc:
            raise _Bad(f"asset template {m.asset!r} does not fit the topic: {exc}") from None
        raw = _lookup(doc, m.value)
        if raw is _MISSING:
            raise _Bad(f"no value at {m.value!r}")
        if isinstance(raw, dict | list):
            raise _Bad(f"value at {m.value!r} is a {type(raw).__name__}, not a number or string")
        quality = Quality.Good
        if m.quality:
            q = _lookup(doc, m.quality)
            if not isinstance(q, str) or q not in _QUALITIES:
                raise _Bad(f"quality at {m.quality!r} must be Good, Uncertain or Bad, got {q!r}")
            quality = _QUALITIES[q]
        t = now - self.epoch
        if m.timestamp:
            t = _source_time(_lookup(doc, m.timestamp), m.timestamp) - self.epoch
        value, quality = normalise_value(raw, quality)
        return Sample(round(t, 6), asset, m.tag, value, unit, quality, now)


def _lookup(doc: Any, pointer: str) -> Any:
    try:
        return resolve_pointer(doc, pointer)
    except KeyError:
        return _MISSING


def _source_time(v: Any, pointer: str) -> float:
    if isinstance(v, bool) or v is _MISSING or v is None:
        raise _Bad(f"no timestamp at {pointer!r}")
    if isinstance(v, int | float):
        if v - v != 0:
            raise _Bad(f"timestamp at {pointer!r} is not finite")
        return v / 1000.0 if abs(v) > 1e11 else float(v)
    if isinstance(v, str):
        try:
            d = dt.datetime.fromisoformat(v)
        except ValueError:
            raise _Bad(f"timestamp {v[:40]!r} at {pointer!r} is not ISO 8601") from None
        if d.tzinfo is None:
            raise _Bad(f"timestamp {v[:40]!r} at {pointer!r} has no UTC offset")
        return d.timestamp()
    raise _Bad(f"timestamp at {pointer!r} is a {type(v).__name__}")
