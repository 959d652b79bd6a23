"""Recorded runs: record a live run into one MCAP file, read it, replay it to a broker.

``format`` is the layout (channels, metadata, schema version), ``writer`` and ``reader``
write and open it, ``recorder`` records a live run (the broker tapped), ``resequence``
rewrites recorded MQTT traffic for a new session (a pure function), ``replay`` publishes
it paced or as fast as the broker acknowledges, ``rebirths`` answers a host's rebirth
requests during it, and ``opcua_values`` is the OPC UA stream. ``recorder.LiveRecorder``
writes a live run's traffic as it arrives (``iiotbed record``, ``iiotbed run --record``).
The answer key (:class:`AnswerKey`) is the simulator's KPIs over the recorded window.
Layer: beside ``testbed`` (may import devices, platform, protocols, mqtt).
"""

from iiotbed.recording.answer_key import AnswerKey, Difference
from iiotbed.recording.format import PROTOCOLS, SCHEMA_VERSION, RecordingError
from iiotbed.recording.reader import ChannelInfo, MqttMessage, Recording, open_recording
from iiotbed.recording.recorder import RecordOptions, RecordSummary, record

__all__ = [
    "PROTOCOLS",
    "SCHEMA_VERSION",
    "AnswerKey",
    "ChannelInfo",
    "Difference",
    "MqttMessage",
    "RecordOptions",
    "RecordSummary",
    "Recording",
    "RecordingError",
    "open_recording",
    "record",
]
