"""VDA 5050 2.1 messages: topics, headers, timestamps, schema validation, typed orders.

Shared by the AMR agent (:mod:`iiotbed.devices.vda5050`) and the master control
(:mod:`iiotbed.devices.vda5050_master`). The official 2.1.0 JSON schemas ship as package
data in ``vda5050_schemas/``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib.resources import files
from typing import Any, Final, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

__all__ = [
    "INTERFACE_NAME",
    "MAJOR_VERSION",
    "TOPICS",
    "VERSION",
    "Action",
    "Order",
    "OrderEdge",
    "OrderNode",
    "Topic",
    "edge",
    "instant_action",
    "iso_timestamp",
    "node",
    "schema_errors",
    "topic_prefix",
]

INTERFACE_NAME: Final = "uagv"
MAJOR_VERSION: Final = "v2"
VERSION: Final = "2.1.0"

Topic = Literal["order", "instantActions", "state", "visualization", "connection", "factsheet"]
TOPICS: Final[tuple[Topic, ...]] = (
    "order", "instantActions", "state", "visualization", "connection", "factsheet",
)  # fmt: skip


def topic_prefix(manufacturer: str, serial_number: str, *, interface_name: str = INTERFACE_NAME,
                 major_version: str = MAJOR_VERSION) -> str:  # fmt: skip
    """``<interfaceName>/<majorVersion>/<manufacturer>/<serialNumber>``."""
    for what, value in (("manufacturer", manufacturer), ("serial number", serial_number)):
        if not value or any(c in value for c in "/+#"):
            raise ValueError(f"VDA 5050 {what} {value!r} must be non-empty without '/', '+' or '#'")
    return f"{interface_name}/{major_version}/{manufacturer}/{serial_number}"


def iso_timestamp(t: float) -> str:
    """UTC seconds since the Unix epoch -> ``2026-01-01T08:00:00.250Z``."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@cache
def _validator(topic: str) -> Draft202012Validator:
    text = files("iiotbed.protocols.vda5050").joinpath("schemas", f"{topic}.schema").read_text("utf-8")
    return Draft202012Validator(json.loads(text))


def schema_errors(topic: Topic, message: object) -> list[str]:
    """Violations of the official 2.1.0 schema for ``topic``; empty when valid.

    The most relevant violation comes first, each as ``<json path>: <reason>``.
    """
    v = _validator(topic)
    errors = list(v.iter_errors(message))
    if not errors:
        return []
    first = best_match(errors)
    ordered = [first, *(e for e in errors if e is not first)]
    return [f"{e.json_path}: {e.message}" for e in ordered]


# ---- typed orders ---------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """An action of an order node/edge or an instant action."""

    action_id: str
    action_type: str
    blocking_type: str
    parameters: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Action:
        params = {p["key"]: p["value"] for p in d.get("actionParameters", [])}
        return cls(d["actionId"], d["actionType"], d["blockingType"], params)


@dataclass(frozen=True)
class OrderNode:
    node_id: str
    sequence_id: int
    released: bool
    position: tuple[float, float] | None
    map_id: str | None
    actions: tuple[Action, ...]


@dataclass(frozen=True)
class OrderEdge:
    edge_id: str
    sequence_id: int
    released: bool
    start_node_id: str
    end_node_id: str
    actions: tuple[Action, ...]


@dataclass(frozen=True)
class Order:
    """A schema-valid order (or order update) as the AMR accepted it."""

    order_id: str
    order_update_id: int
    nodes: tuple[OrderNode, ...]
    edges: tuple[OrderEdge, ...]
    header_id: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Order:
        nodes = []
        for n in d["nodes"]:
            pos = n.get("nodePosition")
            nodes.append(OrderNode(
                n["nodeId"], n["sequenceId"], n["released"],
                (pos["x"], pos["y"]) if pos else None, pos["mapId"] if pos else None,
                tuple(Action.from_json(a) for a in n["actions"]),
            ))  # fmt: skip
        edges = tuple(
            OrderEdge(e["edgeId"], e["sequenceId"], e["released"], e["startNodeId"],
                      e["endNodeId"], tuple(Action.from_json(a) for a in e["actions"]))
            for e in d["edges"]
        )  # fmt: skip
        return cls(d["orderId"], d["orderUpdateId"], tuple(nodes), edges, d["headerId"])

    def sequence_problem(self) -> str | None:
        """Why the node/edge sequence breaks VDA 5050 §6.6 rules, or None if it holds.

        Nodes carry even, edges odd sequence ids, alternating node-edge-node with steps of
        one; each edge joins its neighbours; released (base) elements precede the horizon.
        """
        if not self.nodes:
            return "an order needs at least one node"
        if len(self.edges) != len(self.nodes) - 1:
            return f"{len(self.nodes)} nodes need {len(self.nodes) - 1} edges, got {len(self.edges)}"
        first = self.nodes[0].sequence_id
        if first % 2:
            return f"node sequenceIds must be even, {self.nodes[0].node_id!r} has {first}"
        for i, n in enumerate(self.nodes):
            if n.sequence_id != first + 2 * i:
                return f"node {n.node_id!r} has sequenceId {n.sequence_id}, expected {first + 2 * i}"
        for i, e in enumerate(self.edges):
            a, b = self.nodes[i], self.nodes[i + 1]
            if e.sequence_id != a.sequence_id + 1:
                return f"edge {e.edge_id!r} has sequenceId {e.sequence_id}, expected {a.sequence_id + 1}"
            if (e.start_node_id, e.end_node_id) != (a.node_id, b.node_id):
                return (f"edge {e.edge_id!r} joins {e.start_node_id!r}->{e.end_node_id!r}, "
                        f"expected {a.node_id!r}->{b.node_id!r}")  # fmt: skip
        in_horizon = False
        elements: list[OrderNode | OrderEdge] = [*self.nodes, *self.edges]
        for x in sorted(elements, key=lambda x: x.sequence_id):
            if not x.released:
                in_horizon = True
            elif in_horizon:
                return f"released sequenceId {x.sequence_id} follows the unreleased horizon"
        if not self.nodes[0].released:
            return "the first node must be released"
        return None


# ---- builders for master control and tests --------------------------------------------


def _params(parameters: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return [{"key": k, "value": v} for k, v in (parameters or {}).items()]


def instant_action(action_type: str, action_id: str, *, blocking_type: str = "HARD",
                   parameters: Mapping[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """One action object (for instantActions or a node's/edge's actions)."""
    a: dict[str, Any] = {"actionId": action_id, "actionType": action_type, "blockingType": blocking_type}
    if parameters:
        a["actionParameters"] = _params(parameters)
    return a


def node(node_id: str, sequence_id: int, *, x: float | None = None, y: float | None = None,
         map_id: str = "floor-1", released: bool = True,
         actions: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:  # fmt: skip
    """One order node; ``x``/``y`` in metres on ``map_id``."""
    n: dict[str, Any] = {"nodeId": node_id, "sequenceId": sequence_id, "released": released,
                         "actions": [dict(a) for a in actions]}  # fmt: skip
    if x is not None and y is not None:
        n["nodePosition"] = {"x": x, "y": y, "mapId": map_id}
    return n


def edge(edge_id: str, sequence_id: int, start_node_id: str, end_node_id: str, *,
         released: bool = True, actions: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:  # fmt: skip
    """One order edge between two nodes."""
    return {"edgeId": edge_id, "sequenceId": sequence_id, "released": released,
            "startNodeId": start_node_id, "endNodeId": end_node_id,
            "actions": [dict(a) for a in actions]}  # fmt: skip
