"""Recorded MQTT traffic rewritten for a new session: a pure function of the messages.

Byte replay fails real clients: a Sparkplug host checks ``bdSeq`` against the Will and
``seq`` message by message, a VDA 5050 master checks ``headerId``. :class:`Resequencer`
turns each recorded message into what one live publisher would send now:

- **Sparkplug B**: one client per edge node. The first NBIRTH opens a session (a new
  connection whose Will is NDEATH with the session's ``bdSeq``: 0, 1, 2... per replay);
  NBIRTH carries that ``bdSeq`` and ``seq`` 0, every later message of the node ``seq`` + 1
  (mod 256), NDEATH the session's ``bdSeq`` and then the connection closes. A recorded
  rebirth (NBIRTH while born) keeps the session. Data before a birth cannot be replayed
  truthfully: skipped (counted). Host messages (NCMD, DCMD, STATE) are not device output:
  skipped.
- **VDA 5050**: one client per AMR (``state``, ``connection``, ``visualization``,
  ``factsheet``; Will ``connection`` CONNECTIONBROKEN, retained) and one per master control
  (``order``, ``instantActions``). ``headerId`` counts per topic from 0 and goes on across
  loops. ``connection`` OFFLINE ends the AMR's session.
- Anything else goes out unchanged on one client.

``topic_prefix`` is put before every topic (Wills too). Same input, same output: replay
is deterministic.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from iiotbed.protocols.sparkplug.codec import BDSEQ_METRIC, NAMESPACE, decode_payload, pb
from iiotbed.recording.reader import MqttMessage

__all__ = ["Outgoing", "Resequencer", "WillMessage", "plan"]

_HOST_TYPES = frozenset({"NCMD", "DCMD", "STATE"})
_MASTER_TOPICS = frozenset({"order", "instantActions"})


@dataclass(frozen=True, slots=True)
class WillMessage:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish. ``connect``: its client opens a new session first (with
    ``will``); ``disconnect``: the client closes its session after it."""

    log_ns: int
    client: str
    topic: str
    payload: bytes
    qos: int
    retain: bool
    protocol: str
    connect: bool = False
    disconnect: bool = False
    will: WillMessage | None = None


@dataclass
class _Edge:
    bd_seq: int = -1
    seq: int = 0
    born: bool = False


@dataclass
class Resequencer:
    """Rewrites recorded messages for a new session; see the module docstring."""

    topic_prefix: str = ""
    skipped: int = 0
    _edges: dict[str, _Edge] = field(default_factory=dict)
    _header: dict[str, int] = field(default_factory=dict)
    _vda_up: set[str] = field(default_factory=set)

    def rewrite(self, msg: MqttMessage) -> list[Outgoing]:
        if msg.protocol == "sparkplug":
            out = self._sparkplug(msg)
        elif msg.protocol == "vda5050":
            out = self._vda(msg)
        else:
            out = Outgoing(msg.log_ns, "mqtt", self.topic_prefix + msg.topic, msg.payload,
                           msg.qos, msg.retain, msg.protocol)  # fmt: skip
        if out is None:
            self.skipped += 1
            return []
        return [out]

    def finish(self, log_ns: int) -> list[Outgoing]:
        """Close every session still open (a loop ends as the recording did): NDEATH."""
        out = []
        for client, edge in sorted(self._edges.items()):
            if edge.born:
                edge.born = False
                group, node = client.split(":", 1)[1].split("/", 1)
                topic = f"{self.topic_prefix}{NAMESPACE}/{group}/NDEATH/{node}"
                out.append(Outgoing(log_ns, client, topic, _death(edge.bd_seq, log_ns // 10**6),
                                    1, False, "sparkplug", disconnect=True))  # fmt: skip
        for client in sorted(self._vda_up):
            out.append(Outgoing(log_ns, client, "", b"", 0, False, "vda5050", disconnect=True))
        self._vda_up.clear()
        return out

    # ------------------------------------------------------------------ Sparkplug B

    def _sparkplug(self, msg: MqttMessage) -> Outgoing | None:
        parts = msg.topic.split("/")
        if len(parts) < 4 or parts[2] in _HOST_TYPES:
            return None
        group, kind, node = parts[1], parts[2], parts[3]
        client = f"spb:{group}/{node}"
        edge = self._edges.setdefault(client, _Edge())
        topic = self.topic_prefix + msg.topic
        try:
            payload = decode_payload(msg.payload)
        except ValueError:
            return None
        connect, disconnect, will = False, False, None
        if kind == "NBIRTH":
            if not edge.born:
                edge.bd_seq = (edge.bd_seq + 1) % 256
                edge.born = connect = True
                death = f"{self.topic_prefix}{NAMESPACE}/{group}/NDEATH/{node}"
                will = WillMessage(death, _death(edge.bd_seq, payload.timestamp), 1, False)
            edge.seq = 0
            for m in payload.metrics:
                if m.name == BDSEQ_METRIC:
                    m.long_value = edge.bd_seq
            payload.seq = 0
        elif not edge.born:
            return None  # data or a death before any birth of this replay
        elif kind == "NDEATH":
            edge.born, disconnect = False, True
            del payload.metrics[:]
            payload.metrics.add(name=BDSEQ_METRIC, datatype=pb.Int64, long_value=edge.bd_seq)
            payload.ClearField("seq")
        else:
            edge.seq = (edge.seq + 1) % 256
            payload.seq = edge.seq
        data = payload.SerializeToString(deterministic=True)
        return Outgoing(msg.log_ns, client, topic, data, msg.qos, msg.retain, "sparkplug",
                        connect, disconnect, will)  # fmt: skip

    # ------------------------------------------------------------------ VDA 5050

    def _vda(self, msg: MqttMessage) -> Outgoing | None:
        prefix, _, leaf = msg.topic.rpartition("/")
        master = leaf in _MASTER_TOPICS
        client = f"vda-master:{prefix.rpartition('/')[0]}" if master else f"vda:{prefix}"
        topic = self.topic_prefix + msg.topic
        try:
            body = json.loads(msg.payload)
        except ValueError:
            body = None
        if isinstance(body, dict) and "headerId" in body:
            body["headerId"] = self._next_header(topic)
            data = json.dumps(body).encode()
        else:
            data = msg.payload
        connect, disconnect, will = client not in self._vda_up, False, None
        if connect:
            self._vda_up.add(client)
            if not master and isinstance(body, dict):
                conn_topic = f"{self.topic_prefix}{prefix}/connection"
                broken = {k: body[k] for k in ("timestamp", "version", "manufacturer",
                                               "serialNumber") if k in body}  # fmt: skip
                broken = {"headerId": self._header.get(conn_topic, -1) + 1, **broken,
                          "connectionState": "CONNECTIONBROKEN"}  # fmt: skip
                will = WillMessage(conn_topic, json.dumps(broken).encode(), 1, True)
        if (
            leaf == "connection"
            and isinstance(body, dict)
            and body.get("connectionState") == "OFFLINE"
        ):
            disconnect = True
            self._vda_up.discard(client)
        return Outgoing(msg.log_ns, client, topic, data, msg.qos, msg.retain, "vda5050",
                        connect, disconnect, will)  # fmt: skip

    def _next_header(self, topic: str) -> int:
        n = self._header.get(topic, -1) + 1
        self._header[topic] = n
        return n


def plan(
    messages: Iterable[MqttMessage], loops: int = 1, topic_prefix: str = ""
) -> Iterator[Outgoing]:
    """Every message of ``loops`` passes over ``messages`` (a sequence), rewritten."""
    msgs = list(messages)
    rs = Resequencer(topic_prefix)
    for _ in range(loops):
        for m in msgs:
            yield from rs.rewrite(m)
        yield from rs.finish(msgs[-1].log_ns if msgs else 0)


def _death(bd_seq: int, timestamp_ms: int) -> bytes:
    payload = pb.Payload(timestamp=timestamp_ms)
    payload.metrics.add(name=BDSEQ_METRIC, datatype=pb.Int64, long_value=bd_seq)
    return payload.SerializeToString(deterministic=True)
