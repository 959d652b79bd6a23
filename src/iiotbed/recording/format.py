"""The recording format: one MCAP file, a channel per stream, metadata with the answer key.

::

    channel topic                      encoding   schema                             what
    <the MQTT topic>                   protobuf   org.eclipse.tahu.protobuf.Payload  Sparkplug B, as sent
    <the MQTT topic>                   json       (none)                             VDA 5050, other MQTT
    /iiotbed/samples                   json       iiotbed.Sample                     the simulator's samples
    /iiotbed/events                    json       iiotbed.Event                      the simulator's events
    /iiotbed/opcua                     json       iiotbed.OpcUaValue                 values the OPC UA servers got

An MQTT channel's metadata holds ``stream=mqtt``, ``protocol`` (sparkplug, vda5050, mqtt),
``qos`` and ``retain``: a topic sent with other flags gets a second channel. Log times are
nanoseconds since 1970 on the simulation's clock (scenario epoch + sim time): for MQTT the
sim time at which the recorder received the message, kept strictly increasing; for records
their ``t``. Metadata records: ``iiotbed`` (schema version, software version, scenario
name and file, seed, replication, speed, window, ids), ``answer_key`` (``line`` and
``stations`` as JSON). The scenario file and each file it ``extends:`` are attachments
named ``scenario/<file name>``. Readers refuse a ``schema_version`` above theirs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final, Literal

from iiotbed.errors import StorageError
from iiotbed.protocols.sparkplug.codec import NAMESPACE

__all__ = [
    "EVENTS",
    "META_ANSWER_KEY",
    "META_IIOTBED",
    "OPCUA",
    "PROFILE",
    "PROTOCOLS",
    "SAMPLES",
    "SCENARIO_PREFIX",
    "SCHEMA_VERSION",
    "SPARKPLUG_SCHEMA",
    "Protocol",
    "RecordingError",
    "protocol_of",
    "retained_by_protocol",
    "sparkplug_schema",
]

#: the version of this layout; a reader opens every version up to its own
SCHEMA_VERSION: Final = 1
#: the MCAP header's profile
PROFILE: Final = "iiotbed"
SAMPLES: Final = "/iiotbed/samples"
EVENTS: Final = "/iiotbed/events"
OPCUA: Final = "/iiotbed/opcua"
META_IIOTBED: Final = "iiotbed"
META_ANSWER_KEY: Final = "answer_key"
SCENARIO_PREFIX: Final = "scenario/"
SPARKPLUG_SCHEMA: Final = "org.eclipse.tahu.protobuf.Payload"

#: what ``--only`` selects: MQTT by protocol, and the OPC UA values
Protocol = Literal["sparkplug", "vda5050", "mqtt", "opcua"]
PROTOCOLS: Final[tuple[str, ...]] = ("sparkplug", "vda5050", "mqtt", "opcua")

#: ``<interface>/<major version>/<manufacturer>/<serial>/<topic>`` (VDA 5050 2.x §6.1)
_VDA_TOPIC = re.compile(
    r"^[^/]+/v\d+/[^/]+/[^/]+/(order|instantActions|state|visualization|connection|factsheet)$"
)


class RecordingError(StorageError):
    """A recording cannot be read or written: not MCAP, truncated, a newer schema; ``path``."""

    def __init__(self, message: str, *, path: Path) -> None:
        self.path = path
        super().__init__(f"{path}: {message}", url=str(path))


def protocol_of(topic: str) -> Protocol:
    """The protocol an MQTT topic belongs to, by its namespace."""
    if topic.startswith(NAMESPACE + "/"):
        return "sparkplug"
    if _VDA_TOPIC.match(topic):
        return "vda5050"
    return "mqtt"


def retained_by_protocol(topic: str) -> bool:
    """VDA 5050 ``connection`` messages are sent retained (§6.6). MQTT 3.1.1 clears the
    retain flag of a message delivered live, so the recorder restores it from this rule."""
    return protocol_of(topic) == "vda5050" and topic.endswith("/connection")


def sparkplug_schema() -> bytes:
    """The Sparkplug B payload schema as a serialized ``FileDescriptorSet`` (MCAP's
    ``protobuf`` schema encoding), so MCAP tools decode the payloads."""
    from google.protobuf import descriptor_pb2

    from iiotbed.protocols.sparkplug.codec import pb

    fds = descriptor_pb2.FileDescriptorSet()
    pb.DESCRIPTOR.CopyToProto(fds.file.add())
    return fds.SerializeToString()
