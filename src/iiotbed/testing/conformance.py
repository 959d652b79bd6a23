"""Conformance checkers for any system's MQTT output: Sparkplug B, the UNS, VDA 5050.

Each checker takes the messages in the order a subscriber saw them (anything with
``topic`` and ``payload``, or ``(topic, payload)`` pairs) and returns a list of
:class:`Finding`: the rule broken, the message's index in the stream and its topic.
:func:`check_stream` routes each message to its checker by topic;
:func:`assert_conformant` raises with every finding, grouped by rule. No broker is needed:
give it what your system published (captured with ``iiotbed_capture``, read from a
recording, or built in a test).

Rules (ids as in :data:`RULES`):

========================= =================================================================
sparkplug/topic           ``spBv1.0/<group>/<type>/<edge node>[/<device>]``, a known type
sparkplug/payload         the payload is a Sparkplug B protobuf
sparkplug/nbirth-first    NDATA, DBIRTH, DDATA, DDEATH only inside a session opened by NBIRTH
sparkplug/bdseq           NBIRTH and NDEATH carry ``bdSeq``; the NDEATH's equals its NBIRTH's
sparkplug/seq             NBIRTH seq 0, then +1 per DBIRTH/NDATA/DDATA/DDEATH of the node,
                          255 wrapping to 0
sparkplug/dbirth-first    DDATA and DDEATH only for a device born (DBIRTH) in this session
sparkplug/birth-metrics   every birth metric has a name and a datatype
sparkplug/alias           aliases unique per edge node; a data metric's alias or name was
                          declared in the birth
sparkplug/timestamp       births, data and DDEATH carry a payload timestamp
uns/json                  the payload is one JSON document
uns/schema                it satisfies the UNS JSON Schema (``uns_schema.json``)
uns/topic                 a current value names the topic's asset and tag; batches go to
                          ``<root>/_stream/...``
vda5050/topic             ``<interface>/<major>/<manufacturer>/<serial>/<topic>``, a known topic
vda5050/json              the payload is a JSON object
vda5050/schema            the official 2.1.0 schema: required fields, types, enumerations
vda5050/identity          manufacturer, serialNumber and major version match the topic
vda5050/header            headerId increases from message to message of one topic
========================= =================================================================
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

    from iiotbed.protocols.sparkplug.codec import pb

__all__ = [
    "PROTOCOLS",
    "RULES",
    "Finding",
    "assert_conformant",
    "check_sparkplug",
    "check_stream",
    "check_uns",
    "check_vda5050",
    "protocol_of",
]

RULES: Mapping[str, str] = {
    "sparkplug/topic": "topic is spBv1.0/<group>/<type>/<edge node>[/<device>] of a known type",
    "sparkplug/payload": "payload is a Sparkplug B protobuf",
    "sparkplug/nbirth-first": "NDATA, DBIRTH, DDATA, DDEATH only after the node's NBIRTH",
    "sparkplug/bdseq": "NBIRTH and NDEATH carry bdSeq; the NDEATH's equals its NBIRTH's",
    "sparkplug/seq": "seq is 0 at NBIRTH, then +1 per message of the node, 255 -> 0",
    "sparkplug/dbirth-first": "DDATA and DDEATH only after the device's DBIRTH",
    "sparkplug/birth-metrics": "every birth metric has a name and a datatype",
    "sparkplug/alias": "aliases unique per node; data metrics declared in the birth",
    "sparkplug/timestamp": "births, data and DDEATH carry a payload timestamp",
    "uns/json": "payload is one JSON document",
    "uns/schema": "payload satisfies the UNS JSON Schema",
    "uns/topic": "a current value names the topic's asset and tag; batches on <root>/_stream/",
    "vda5050/topic": "topic is <interface>/<major>/<manufacturer>/<serial>/<topic>",
    "vda5050/json": "payload is a JSON object",
    "vda5050/schema": "payload satisfies the official VDA 5050 2.1.0 schema",
    "vda5050/identity": "manufacturer, serialNumber and major version match the topic",
    "vda5050/header": "headerId increases per topic",
}
PROTOCOLS = ("sparkplug", "uns", "vda5050")
_SPB_TYPES = frozenset(("NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA", "NCMD", "DCMD"))
_VDA_TOPICS = frozenset(("order", "instantActions", "state", "visualization", "connection",
                         "factsheet"))  # fmt: skip


class Published(Protocol):
    """A message as a subscriber saw it (paho's, iiotbed's and a recording's all fit)."""

    @property
    def topic(self) -> str: ...

    @property
    def payload(self) -> bytes: ...


Stream = Iterable[Published | tuple[str, bytes]]


@dataclass(frozen=True)
class Finding:
    """One broken rule: ``index`` counts from 0 in the stream the checker was given."""

    rule: str
    index: int
    topic: str
    detail: str

    def __str__(self) -> str:
        return f"message {self.index} on {self.topic}: {self.rule}: {self.detail}"


def _pairs(messages: Stream) -> Iterator[tuple[int, str, bytes]]:
    for i, m in enumerate(messages):
        if isinstance(m, tuple):
            yield i, m[0], bytes(m[1])
        else:
            yield i, m.topic, bytes(m.payload)


def protocol_of(topic: str, *, uns_root: str = "uns") -> str | None:
    """Which checker a topic belongs to: ``sparkplug``, ``vda5050``, ``uns`` or None."""
    if topic.startswith("spBv1.0/"):
        return "sparkplug"
    if topic == uns_root or topic.startswith(uns_root + "/"):
        return "uns"
    levels = topic.split("/")
    if len(levels) == 5 and levels[4] in _VDA_TOPICS:
        return "vda5050"
    return None


def check_stream(messages: Stream, *, uns_root: str = "uns", topic_prefix: str = "",
                 protocols: Iterable[str] | None = None) -> list[Finding]:  # fmt: skip
    """Every finding of every checker; each message goes to the checker its topic names
    (``topic_prefix`` is stripped first; other topics are ignored). ``protocols``: only these."""
    wanted = set(PROTOCOLS if protocols is None else protocols)
    if unknown := wanted - set(PROTOCOLS):
        raise ValueError(f"unknown protocol(s) {sorted(unknown)}; expected some of {PROTOCOLS}")
    checkers: dict[str, _Checker] = {
        "sparkplug": _Sparkplug(), "uns": _Uns(root=uns_root), "vda5050": _Vda5050(),
    }  # fmt: skip
    for i, topic, payload in _pairs(messages):
        if topic_prefix:
            if not topic.startswith(topic_prefix):
                continue
            topic = topic[len(topic_prefix) :]
        proto = protocol_of(topic, uns_root=uns_root)
        if proto in wanted:
            checkers[proto].check(i, topic, payload)
    return sorted((f for c in checkers.values() for f in c.findings), key=lambda f: f.index)


def check_sparkplug(messages: Stream) -> list[Finding]:
    """Sparkplug B session rules over ``messages`` (every message is taken as Sparkplug)."""
    return _run(_Sparkplug(), messages)


def check_uns(messages: Stream, *, root: str = "uns") -> list[Finding]:
    """UNS payload schema and topic rules over ``messages`` (every message taken as UNS)."""
    return _run(_Uns(root=root), messages)


def check_vda5050(messages: Stream) -> list[Finding]:
    """VDA 5050 2.1 schema, identity and headerId rules (every message taken as VDA 5050)."""
    return _run(_Vda5050(), messages)


def assert_conformant(messages: Stream | Iterable[Finding], *, uns_root: str = "uns",
                      topic_prefix: str = "", protocols: Iterable[str] | None = None,
                      limit: int = 20) -> None:  # fmt: skip
    """Raise ``AssertionError`` listing the findings (the first ``limit``, counts per rule)
    when ``messages`` break a rule; also takes a list of findings already made."""
    __tracebackhide__ = True
    items = list(messages)
    if items and all(isinstance(x, Finding) for x in items):
        findings: list[Finding] = [x for x in items if isinstance(x, Finding)]
    else:
        stream = [x for x in items if not isinstance(x, Finding)]
        findings = check_stream(stream, uns_root=uns_root, topic_prefix=topic_prefix,
                                protocols=protocols)  # fmt: skip
    if not findings:
        return
    per_rule = Counter(f.rule for f in findings)
    head = ", ".join(f"{rule} x{n}" for rule, n in sorted(per_rule.items()))
    lines = [f"{len(findings)} conformance finding(s) ({head}):"]
    lines += [f"  {f}" for f in findings[:limit]]
    if len(findings) > limit:
        lines.append(f"  ... and {len(findings) - limit} more")
    raise AssertionError("\n".join(lines))


def _run(checker: _Checker, messages: Stream) -> list[Finding]:
    for i, topic, payload in _pairs(messages):
        checker.check(i, topic, payload)
    return checker.findings


@dataclass
class _Checker:
    findings: list[Finding] = field(default_factory=list)

    def check(self, index: int, topic: str, payload: bytes) -> None:
        raise NotImplementedError

    def found(self, rule: str, index: int, topic: str, detail: str) -> None:
        self.findings.append(Finding(rule, index, topic, detail))


# --------------------------------------------------------------------------- Sparkplug B


@dataclass
class _Session:
    """One edge node's state: its last NBIRTH, seq, born devices and declared metrics."""

    alive: bool = False
    bdseq: int | None = None
    seq: int | None = None
    devices: set[str] = field(default_factory=set)
    # per device ("" = the node): alias -> name, and the names declared
    aliases: dict[str, dict[int, str]] = field(default_factory=dict)
    names: dict[str, set[str]] = field(default_factory=dict)
    owner: dict[int, str] = field(default_factory=dict)  # alias -> device, node-wide


@dataclass
class _Sparkplug(_Checker):
    nodes: dict[tuple[str, str], _Session] = field(default_factory=dict)

    def check(self, index: int, topic: str, payload: bytes) -> None:
        from iiotbed.protocols.sparkplug.codec import decode_payload

        levels = topic.split("/")
        if len(levels) >= 2 and levels[:2] == ["spBv1.0", "STATE"]:
            return  # a host application's STATE: not an edge node's message
        kind = levels[2] if len(levels) > 2 else ""
        need = 5 if kind.startswith("D") else 4
        if levels[0] != "spBv1.0" or kind not in _SPB_TYPES or len(levels) != need or "" in levels:
            self.found("sparkplug/topic", index, topic,
                       "expected spBv1.0/<group>/<type>/<edge node> (N*) or .../<device> (D*) "
                       f"with type one of {sorted(_SPB_TYPES)}")  # fmt: skip
            return
        if kind in ("NCMD", "DCMD"):
            return  # commands come from a host; no session rules apply to them
        try:
            p = decode_payload(payload)
        except ValueError as exc:
            self.found("sparkplug/payload", index, topic, str(exc))
            return
        node = self.nodes.setdefault((levels[1], levels[3]), _Session())
        device = levels[4] if need == 5 else ""
        if kind != "NDEATH" and not p.HasField("timestamp"):
            self.found("sparkplug/timestamp", index, topic, f"{kind} without a payload timestamp")
        if kind == "NBIRTH":
            self._nbirth(index, topic, p, node)
        elif kind == "NDEATH":
            self._ndeath(index, topic, p, node)
        else:
            self._in_session(index, topic, kind, device, p, node)

    def _nbirth(self, index: int, topic: str, p: pb.Payload, node: _Session) -> None:
        node.alive, node.devices = True, set()
        node.aliases, node.names, node.owner = {}, {}, {}
        node.bdseq = _bdseq(p)
        if node.bdseq is None:
            self.found("sparkplug/bdseq", index, topic, "NBIRTH without a bdSeq metric")
        if not p.HasField("seq") or p.seq != 0:
            got = p.seq if p.HasField("seq") else "none"
            self.found("sparkplug/seq", index, topic, f"NBIRTH seq must be 0, got {got}")
        node.seq = 0
        self._declare(index, topic, "", p, node)

    def _ndeath(self, index: int, topic: str, p: pb.Payload, node: _Session) -> None:
        got = _bdseq(p)
        if got is None:
            self.found("sparkplug/bdseq", index, topic, "NDEATH without a bdSeq metric")
        elif node.bdseq is not None and got != node.bdseq:
            self.found("sparkplug/bdseq", index, topic,
                       f"NDEATH bdSeq {got} differs from the NBIRTH's {node.bdseq}")  # fmt: skip
        node.alive, node.devices = False, set()

    def _in_session(self, index: int, topic: str, kind: str, device: str, p: pb.Payload,
                    node: _Session) -> None:  # fmt: skip
        if not node.alive:
            self.found("sparkplug/nbirth-first", index, topic,
                       f"{kind} while the edge node has no session (no NBIRTH since the start "
                       "or since its NDEATH)")  # fmt: skip
        if not p.HasField("seq"):
            self.found("sparkplug/seq", index, topic, f"{kind} without seq")
        elif node.seq is not None:
            want = (node.seq + 1) % 256
            if p.seq != want:
                self.found("sparkplug/seq", index, topic,
                           f"{kind} seq {p.seq}, expected {want} (previous {node.seq})")  # fmt: skip
            node.seq = p.seq  # resynchronise: one gap is one finding
        if kind == "DBIRTH":
            node.devices.add(device)
            for alias, owner in list(node.owner.items()):
                if owner == device:  # a rebirth of the device declares its metrics afresh
                    del node.owner[alias]
            node.aliases[device], node.names[device] = {}, set()
            self._declare(index, topic, device, p, node)
            return
        if kind in ("DDATA", "DDEATH") and device not in node.devices and node.alive:
            self.found("sparkplug/dbirth-first", index, topic,
                       f"{kind} for device {device!r}, which has no DBIRTH in this session")  # fmt: skip
        if kind == "DDEATH":
            node.devices.discard(device)
            return
        if node.alive and (device == "" or device in node.devices):
            self._data(index, topic, device, p, node)

    def _declare(self, index: int, topic: str, device: str, p: pb.Payload,
                 node: _Session) -> None:  # fmt: skip
        aliases = node.aliases.setdefault(device, {})
        names = node.names.setdefault(device, set())
        for k, m in enumerate(p.metrics):
            if not m.name or not m.HasField("datatype"):
                self.found("sparkplug/birth-metrics", index, topic,
                           f"birth metric #{k} ({m.name or 'no name'}) needs a name and a "
                           "datatype")  # fmt: skip
            names.add(m.name)
            if m.HasField("alias"):
                other = node.owner.get(m.alias)
                if other is not None:
                    where = f"device {other!r}" if other else "the NBIRTH"
                    self.found("sparkplug/alias", index, topic,
                               f"alias {m.alias} of {m.name!r} is already used in {where}")  # fmt: skip
                node.owner[m.alias] = device
                aliases[m.alias] = m.name

    def _data(self, index: int, topic: str, device: str, p: pb.Payload, node: _Session) -> None:
        aliases, names = node.aliases.get(device, {}), node.names.get(device, set())
        for k, m in enumerate(p.metrics):
            if m.name:
                if m.name not in names:
                    self.found("sparkplug/alias", index, topic,
                               f"metric {m.name!r} was not declared in the birth")  # fmt: skip
            elif not m.HasField("alias"):
                self.found("sparkplug/alias", index, topic, f"metric #{k} has no name and no alias")
            elif m.alias not in aliases:
                self.found("sparkplug/alias", index, topic,
                           f"alias {m.alias} was not declared in the birth")  # fmt: skip


def _bdseq(p: pb.Payload) -> int | None:
    for m in p.metrics:
        if m.name == "bdSeq":
            return int(m.long_value) if m.HasField("long_value") else int(m.int_value)
    return None


# --------------------------------------------------------------------------- UNS


@cache
def _uns_validator() -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    from iiotbed.protocols.uns import schema

    return Draft202012Validator(schema())


@dataclass
class _Uns(_Checker):
    root: str = "uns"

    def check(self, index: int, topic: str, payload: bytes) -> None:
        try:
            doc: Any = json.loads(payload)
        except ValueError as exc:
            self.found("uns/json", index, topic, f"not JSON: {exc}")
            return
        errors = sorted(_uns_validator().iter_errors(doc), key=lambda e: list(e.path))
        if errors:
            from jsonschema.exceptions import best_match

            e = best_match(errors)
            self.found("uns/schema", index, topic, f"{e.json_path}: {e.message}")
            return
        stream = topic.startswith(f"{self.root}/_stream/")
        batch = isinstance(doc, dict) and "samples" in doc
        if batch != stream:
            where = f"{self.root}/_stream/<line>" if batch else f"{self.root}/<asset>/<tag>"
            self.found("uns/topic", index, topic,
                       f"a {'batch' if batch else 'current value'} belongs on {where}")  # fmt: skip
        elif not batch and not topic.endswith(f"/{doc['asset']}/{doc['tag']}"):
            self.found("uns/topic", index, topic,
                       f"the payload names {doc['asset']}/{doc['tag']}, not this topic's asset "
                       "and tag")  # fmt: skip


# --------------------------------------------------------------------------- VDA 5050


@dataclass
class _Vda5050(_Checker):
    headers: dict[str, int] = field(default_factory=dict)

    def check(self, index: int, topic: str, payload: bytes) -> None:
        from iiotbed.protocols.vda5050.messages import schema_errors

        levels = topic.split("/")
        if len(levels) != 5 or levels[4] not in _VDA_TOPICS or "" in levels:
            self.found("vda5050/topic", index, topic,
                       "expected <interface>/<major>/<manufacturer>/<serial>/<topic> with topic "
                       f"one of {sorted(_VDA_TOPICS)}")  # fmt: skip
            return
        try:
            doc: Any = json.loads(payload)
        except ValueError as exc:
            self.found("vda5050/json", index, topic, f"not JSON: {exc}")
            return
        if not isinstance(doc, dict):
            self.found(
                "vda5050/json", index, topic, f"expected an object, got {type(doc).__name__}"
            )
            return
        errors = schema_errors(levels[4], doc)  # type: ignore[arg-type]
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            self.found("vda5050/schema", index, topic, errors[0] + more)
        self._identity(index, topic, levels, doc)
        header = doc.get("headerId")
        if isinstance(header, int) and not isinstance(header, bool):
            last = self.headers.get(topic)
            if last is not None and header <= last:
                self.found("vda5050/header", index, topic,
                           f"headerId {header} after {last}: it must increase per topic")  # fmt: skip
            self.headers[topic] = header

    def _identity(self, index: int, topic: str, levels: list[str], doc: dict[str, Any]) -> None:
        checks: list[tuple[str, object, str, Callable[[], bool]]] = [
            ("manufacturer", doc.get("manufacturer"), levels[2],
             lambda: doc.get("manufacturer") == levels[2]),
            ("serialNumber", doc.get("serialNumber"), levels[3],
             lambda: doc.get("serialNumber") == levels[3]),
            ("version", doc.get("version"), f"{levels[1].lstrip('v')}.x.x",
             lambda: str(doc.get("version", "")).split(".")[0] == levels[1].lstrip("v")),
        ]  # fmt: skip
        for name, got, want, ok in checks:
            if got is not None and not ok():
                self.found("vda5050/identity", index, topic,
                           f"{name} {got!r} does not match the topic ({want})")  # fmt: skip
