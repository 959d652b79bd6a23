"""Writing a recording: :class:`RecordingWriter` lays out the channels of :mod:`.format`.

Blocking file I/O: callers on an event loop run it in a worker thread. Chunked, indexed
and zstd-compressed, as any MCAP tool expects.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from mcap.writer import CompressionType, Writer

from iiotbed import __version__
from iiotbed.eventlog import record_to_json
from iiotbed.recording.format import (
    EVENTS,
    OPCUA,
    PROFILE,
    SAMPLES,
    SCENARIO_PREFIX,
    SPARKPLUG_SCHEMA,
    protocol_of,
    sparkplug_schema,
)
from iiotbed.telemetry import Record, Sample

__all__ = ["RecordingWriter"]

_SAMPLE_SCHEMA = {
    "type": "object",
    "required": ["t", "asset", "tag", "value"],
    "properties": {
        "t": {"type": "number", "description": "sim s from the scenario epoch"},
        "asset": {"type": "string"}, "tag": {"type": "string"}, "value": {},
        "unit": {"type": "string"}, "quality": {"type": "integer"},
    },
}  # fmt: skip
_EVENT_SCHEMA = {
    "type": "object",
    "required": ["t", "asset", "event", "fields"],
    "properties": {"t": {"type": "number"}, "asset": {"type": "string"},
                   "event": {"type": "string"}, "fields": {"type": "object"}},
}  # fmt: skip
_OPCUA_SCHEMA = {
    "type": "object",
    "required": ["browse_path", "asset", "tag", "value", "source_ts", "status"],
    "properties": {
        "browse_path": {"type": "string", "description": "from Objects, '/'-separated"},
        "asset": {"type": "string"}, "tag": {"type": "string"}, "value": {},
        "unit": {"type": ["string", "null"]}, "data_type": {"type": "string"},
        "source_ts": {"type": "string", "format": "date-time"},
        "status": {"type": "string"}, "t": {"type": "number"},
    },
}  # fmt: skip


class RecordingWriter:
    """One recording being written; :meth:`close` writes the summary (index, statistics)."""

    def __init__(self, path: Path, *, epoch_s: float) -> None:
        self.path = path
        self._epoch_ns = round(epoch_s * 1e9)
        self._fp: IO[bytes] = path.open("wb")
        self._w = Writer(self._fp, compression=CompressionType.ZSTD)
        self._w.start(profile=PROFILE, library=f"iiotbed/{__version__}")
        self._spb = self._w.register_schema(SPARKPLUG_SCHEMA, "protobuf", sparkplug_schema())
        self._mqtt: dict[tuple[str, int, bool], int] = {}
        self._fixed: dict[str, int] = {}
        self._seq = 0
        self.messages = 0

    def ns(self, t: float) -> int:
        """Log time of sim time ``t``: ns since 1970."""
        return self._epoch_ns + round(t * 1e9)

    def mqtt(self, log_ns: int, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """One MQTT message as sent, on its (topic, qos, retain) channel."""
        key = (topic, qos, retain)
        ch = self._mqtt.get(key)
        if ch is None:
            protocol = protocol_of(topic)
            spb = protocol == "sparkplug" and "/STATE/" not in f"{topic}/"
            meta = {"stream": "mqtt", "protocol": protocol, "qos": str(qos),
                    "retain": "true" if retain else "false"}  # fmt: skip
            ch = self._mqtt[key] = self._w.register_channel(
                topic, "protobuf" if spb else "json", self._spb if spb else 0, meta
            )
        self._add(ch, log_ns, payload)

    def records(self, records: Iterable[Record]) -> None:
        """The simulator's samples and events (the event log)."""
        samples = self._channel(SAMPLES, "iiotbed.Sample", _SAMPLE_SCHEMA, "samples")
        events = self._channel(EVENTS, "iiotbed.Event", _EVENT_SCHEMA, "events")
        for r in records:
            ch = samples if isinstance(r, Sample) else events
            self._add(ch, self.ns(r.t), record_to_json(r).encode())

    def opcua(self, values: Iterable[tuple[float, Mapping[str, Any]]]) -> int:
        """``(sim t, value)`` pairs: what the OPC UA servers were given; returns how many."""
        ch = self._channel(OPCUA, "iiotbed.OpcUaValue", _OPCUA_SCHEMA, "opcua")
        n = 0
        for t, value in values:
            self._add(ch, self.ns(t), json.dumps(value, separators=(",", ":")).encode())
            n += 1
        return n

    def metadata(self, name: str, data: Mapping[str, str]) -> None:
        self._w.add_metadata(name, dict(data))

    def attach(self, name: str, text: str, media_type: str = "application/yaml") -> None:
        """A file kept beside the streams (the scenario and its bases)."""
        self._w.add_attachment(0, 0, SCENARIO_PREFIX + name, media_type, text.encode())

    def close(self) -> None:
        try:
            self._w.finish()  # type: ignore[no-untyped-call]  # mcap leaves it unannotated
        finally:
            self._fp.close()

    def _channel(self, topic: str, schema: str, body: dict[str, Any], stream: str) -> int:
        ch = self._fixed.get(topic)
        if ch is None:
            sid = self._w.register_schema(schema, "jsonschema", json.dumps(body).encode())
            ch = self._fixed[topic] = self._w.register_channel(
                topic, "json", sid, {"stream": stream}
            )
        return ch

    def _add(self, channel: int, log_ns: int, data: bytes) -> None:
        self._w.add_message(channel, log_time=log_ns, data=data, publish_time=log_ns,
                            sequence=self._seq)  # fmt: skip
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        self.messages += 1
