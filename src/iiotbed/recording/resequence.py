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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from iiotbed.protocols.sparkplug.codec import (
    BDSEQ_METRIC,
    NAMESPACE,
    REBIRTH_METRIC,
    decode_payload,
    pb,
)
from iiotbed.recording.reader import MqttMessage

__all__ = [
    "Outgoing",
    "Resequencer",
    "WillMessage",
    "plan",
    "rebirth",
    "rebirth_alias",
    "rebirth_requested",
]

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


def rebirth(history: Sequence[Outgoing], timestamp_ms: int) -> list[Outgoing]:
    """What a live edge node answers a rebirth request with: its NBIRTH and one DBIRTH per
    device still born, carrying the values ``history`` left current (``history``: the
    node's messages of this session in the order sent, its NBIRTH first). As Sparkplug B
    3.0 asks: ``seq`` 0 at NBIRTH and on from there, the session's ``bdSeq`` unchanged, dated
    ``timestamp_ms``."""
    node: pb.Payload | None = None
    devices: dict[str, pb.Payload] = {}
    first: Outgoing | None = None
    head = ""  # <prefix>spBv1.0/<group>/, learnt from the NBIRTH
    for o in history:
        if "/NBIRTH/" in o.topic:
            node, first = decode_payload(o.payload), o
            head = o.topic[: o.topic.rindex("/NBIRTH/") + 1]
            devices.clear()
            continue
        if node is None or not o.topic.startswith(head):
            continue
        kind = o.topic[len(head) :].split("/", 1)[0]
        if kind == "DBIRTH":
            devices[o.topic] = decode_payload(o.payload)
        elif kind == "DDEATH":
            devices.pop(o.topic.replace("/DDEATH/", "/DBIRTH/"), None)
        elif kind == "NDATA":
            _update(node, decode_payload(o.payload))
        elif kind == "DDATA":
            birth = devices.get(o.topic.replace("/DDATA/", "/DBIRTH/"))
            if birth is not None:
                _update(birth, decode_payload(o.payload))
    if node is None or first is None:
        return []
    out = []
    for seq, (topic, payload) in enumerate([(first.topic, node), *devices.items()]):
        payload.timestamp = timestamp_ms
        payload.seq = seq
        data = payload.SerializeToString(deterministic=True)
        out.append(
            Outgoing(first.log_ns, first.client, topic, data, first.qos, first.retain, "sparkplug")
        )
    return out


def rebirth_requested(payload: bytes, alias: int | None = None) -> bool:
    """An NCMD asks for a rebirth: ``Node Control/Rebirth`` (by name, or by the ``alias``
    the NBIRTH gave it) set to true."""
    try:
        cmd = decode_payload(payload)
    except ValueError:
        return False
    for m in cmd.metrics:
        named = m.name == REBIRTH_METRIC or (
            not m.name and alias is not None and m.HasField("alias") and m.alias == alias
        )
        if named and m.WhichOneof("value") == "boolean_value" and m.boolean_value:
            return True
    return False


def rebirth_alias(nbirth: bytes) -> int | None:
    """The alias an NBIRTH gave ``Node Control/Rebirth`` (None: none)."""
    for m in decode_payload(nbirth).metrics:
        if m.name == REBIRTH_METRIC and m.HasField("alias"):
            return int(m.alias)
    return None


def _update(birth: pb.Payload, data: pb.Payload) -> None:
    """Set the values of ``data``'s metrics (by alias, else name) in ``birth``."""
    by_alias = {m.alias: m for m in birth.metrics if m.HasField("alias")}
    by_name = {m.name: m for m in birth.metrics}
    for d in data.metrics:
        m = (
            by_name.get(d.name)
            if d.name
            else by_alias.get(d.alias)
            if d.HasField("alias")
            else None
        )
        if m is None or d.is_historical:
            continue
        which = d.WhichOneof("value")
        if which is None:
            m.ClearField("value")
        else:
            setattr(m, which, getattr(d, which))
        m.is_null = d.is_null
        if d.HasField("timestamp"):
            m.timestamp = d.timestamp
        if d.HasField("properties"):
            m.properties.CopyFrom(d.properties)


def _death(bd_seq: int, timestamp_ms: int) -> bytes:
    payload = pb.Payload(timestamp=timestamp_ms)
    payload.metrics.add(name=BDSEQ_METRIC, datatype=pb.Int64, long_value=bd_seq)
    return payload.SerializeToString(deterministic=True)
