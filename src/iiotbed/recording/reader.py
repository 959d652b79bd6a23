"""Reading a recording: :func:`open_recording` checks the file and returns a :class:`Recording`.

A file that is not MCAP, is truncated (no summary: the writer never finished) or was
written with a newer schema version raises :class:`~.format.RecordingError` naming the
file and the fix. Reading is blocking file I/O.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcap.exceptions import McapError
from mcap.reader import make_reader
from mcap.records import Channel

from iiotbed.recording.answer_key import AnswerKey
from iiotbed.recording.format import (
    EVENTS,
    META_ANSWER_KEY,
    META_IIOTBED,
    OPCUA,
    PROFILE,
    SAMPLES,
    SCENARIO_PREFIX,
    SCHEMA_VERSION,
    RecordingError,
)

if TYPE_CHECKING:
    from iiotbed.scenario import Scenario
    from iiotbed.telemetry import Record

__all__ = ["ChannelInfo", "MqttMessage", "Recording", "open_recording"]


@dataclass(frozen=True, slots=True)
class MqttMessage:
    """One recorded MQTT message: when (ns since 1970, sim clock), where, what, how."""

    log_ns: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    protocol: str


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """One channel: its topic, stream (mqtt, samples, events, opcua) and message count."""

    topic: str
    stream: str
    protocol: str
    encoding: str
    qos: int | None
    retain: bool | None
    messages: int


class Recording:
    """An opened recording (see :mod:`iiotbed.recording.format`); streams are read on demand."""

    def __init__(self, path: Path, meta: dict[str, str], answer_key: AnswerKey,
                 channels: list[ChannelInfo], attachments: dict[str, str],
                 start_ns: int, end_ns: int) -> None:  # fmt: skip
        self.path = path
        self.meta = meta
        self.answer_key = answer_key
        self.channels = channels
        self.attachments = attachments
        self.start_ns = start_ns
        self.end_ns = end_ns

    @property
    def schema_version(self) -> int:
        return int(self.meta["schema_version"])

    @property
    def epoch_s(self) -> float:
        return float(self.meta["epoch_s"])

    @property
    def paced_from(self) -> float:
        """Sim time the recording started pacing at (before it: unpaced, as the live run)."""
        return float(self.meta.get("paced_from", "0"))

    @property
    def protocols(self) -> list[str]:
        found = {c.protocol for c in self.channels if c.stream == "mqtt"}
        if any(c.stream == "opcua" for c in self.channels):
            found.add("opcua")
        return sorted(found)

    def counts(self) -> dict[str, int]:
        """Messages per stream and MQTT protocol."""
        out: Counter[str] = Counter()
        for c in self.channels:
            out[c.protocol if c.stream == "mqtt" else c.stream] += c.messages
        return dict(sorted(out.items()))

    def mqtt_messages(self, protocols: Iterable[str] | None = None) -> Iterator[MqttMessage]:
        """The MQTT messages in log-time order (file order on ties), optionally only some
        protocols'."""
        wanted = None if protocols is None else set(protocols)
        topics = sorted({c.topic for c in self.channels if c.stream == "mqtt"
                         and (wanted is None or c.protocol in wanted)})  # fmt: skip
        if not topics:
            return
        for _schema, ch, msg in self._iter(topics):
            md = ch.metadata
            yield MqttMessage(msg.log_time, ch.topic, msg.data, int(md.get("qos", "0")),
                              md.get("retain") == "true", md.get("protocol", "mqtt"))  # fmt: skip

    def records(self) -> list[Record]:
        """The simulator's samples and events, in time order (the run's event log)."""
        from iiotbed.eventlog import load_records

        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "events.jsonl"
            with log.open("wb") as fp:
                for _s, _ch, msg in self._iter([SAMPLES, EVENTS]):
                    fp.write(msg.data + b"\n")
            return load_records(log)

    def opcua_values(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(log ns, value)``: what the OPC UA servers were given, in time order."""
        for _s, _ch, msg in self._iter([OPCUA]):
            yield msg.log_time, json.loads(msg.data)

    def scenario(self) -> Scenario:
        """The recorded scenario, loaded from its attachments (its bases beside it)."""
        from iiotbed.scenario import load_scenario

        main = self.meta.get("scenario_file", "")
        if main not in self.attachments:
            raise RecordingError("holds no scenario file", path=self.path)
        with tempfile.TemporaryDirectory() as tmp:
            for name, text in self.attachments.items():
                (Path(tmp) / name).write_text(text, encoding="utf-8")
            return load_scenario(Path(tmp) / main)

    def to_dict(self) -> dict[str, Any]:
        """What ``iiotbed recording info --json`` prints."""
        m = self.meta
        return {
            "path": str(self.path),
            "schema_version": self.schema_version,
            "software_version": m.get("software_version"),
            "scenario": m.get("scenario_name"),
            "scenario_file": m.get("scenario_file"),
            "seed": int(m["seed"]) if "seed" in m else None,
            "replication": int(m["replication"]) if "replication" in m else None,
            "speed": float(m["speed"]) if m.get("speed") else None,
            "window": list(self.answer_key.window),
            "paced_from": self.paced_from,
            "sparkplug": {"group": m.get("sparkplug_group"), "edge_node": m.get("edge_node")},
            "counts": self.counts(),
            "channels": [_channel_dict(c) for c in self.channels],
            "answer_key": self.answer_key.to_dict(),
        }

    def _iter(self, topics: list[str]) -> Iterator[Any]:
        try:
            with self.path.open("rb") as fp:
                yield from make_reader(fp).iter_messages(topics=topics, log_time_order=True)
        except (McapError, OSError, ValueError, KeyError) as exc:
            raise RecordingError(f"cannot be read: {exc}", path=self.path) from exc


def open_recording(path: Path) -> Recording:
    """Open and check ``path``: MCAP with the iiotbed profile, a known schema version."""
    try:
        with path.open("rb") as fp:
            reader = make_reader(fp)
            header = reader.get_header()
            summary = reader.get_summary()
            if summary is None:
                raise RecordingError(
                    "has no summary: the file is truncated (the recorder did not finish); "
                    "record it again", path=path)  # fmt: skip
            meta: dict[str, dict[str, str]] = {m.name: dict(m.metadata)
                                               for m in reader.iter_metadata()}  # fmt: skip
            attachments = {a.name[len(SCENARIO_PREFIX):]: a.data.decode("utf-8")
                           for a in reader.iter_attachments()
                           if a.name.startswith(SCENARIO_PREFIX)}  # fmt: skip
    except FileNotFoundError:
        raise RecordingError("no such file", path=path) from None
    except IsADirectoryError:
        raise RecordingError("is a directory, not a recording", path=path) from None
    except RecordingError:
        raise
    except (McapError, ValueError, KeyError, UnicodeDecodeError, OSError) as exc:
        raise RecordingError(f"is not an MCAP recording ({exc})", path=path) from None
    if header.profile != PROFILE or META_IIOTBED not in meta:
        raise RecordingError(
            f"is an MCAP file but not an iiotbed recording (profile {header.profile!r})", path=path
        )
    info = meta[META_IIOTBED]
    try:
        version = int(info["schema_version"])
    except (KeyError, ValueError):
        raise RecordingError("has no valid schema_version in its metadata", path=path) from None
    if version > SCHEMA_VERSION:
        raise RecordingError(
            f"was written with recording schema version {version} (by iiotbed "
            f"{info.get('software_version', '?')}); this iiotbed reads up to version "
            f"{SCHEMA_VERSION}: upgrade iiotbed", path=path)  # fmt: skip
    try:
        key = AnswerKey.from_json(meta[META_ANSWER_KEY])
    except (KeyError, ValueError, TypeError) as exc:
        raise RecordingError(f"has no valid answer key ({exc})", path=path) from None
    counts = summary.statistics.channel_message_counts if summary.statistics else {}
    channels = [_channel_info(ch, counts.get(cid, 0))
                for cid, ch in sorted(summary.channels.items())]  # fmt: skip
    stats = summary.statistics
    start = stats.message_start_time if stats else 0
    end = stats.message_end_time if stats else 0
    return Recording(path, info, key, channels, attachments, start, end)


def _channel_dict(c: ChannelInfo) -> dict[str, Any]:
    return {"topic": c.topic, "stream": c.stream, "protocol": c.protocol, "encoding": c.encoding,
            "qos": c.qos, "retain": c.retain, "messages": c.messages}  # fmt: skip


def _channel_info(ch: Channel, count: int) -> ChannelInfo:
    md = ch.metadata
    stream = md.get("stream", "mqtt")
    mqtt = stream == "mqtt"
    return ChannelInfo(
        topic=ch.topic, stream=stream, protocol=md.get("protocol", stream) if mqtt else stream,
        encoding=ch.message_encoding, qos=int(md.get("qos", "0")) if mqtt else None,
        retain=md.get("retain") == "true" if mqtt else None, messages=count,
    )  # fmt: skip
