"""VDA 5050 master control: sends orders and instant actions, follows AMR states.

The simulation's dispatcher speaks to the AMRs through this class, so a third-party
fleet manager on the same broker can take its place. Outgoing messages are checked
against the official schema before they leave; incoming ones that fail it are counted
and dropped.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from iiotbed.mqtt import Message, MqttAdapter, MqttConnection
from iiotbed.protocols.vda5050.messages import (
    INTERFACE_NAME,
    MAJOR_VERSION,
    VERSION,
    Topic,
    iso_timestamp,
    schema_errors,
    topic_prefix,
)

__all__ = ["MasterControl", "MasterStats"]

log = logging.getLogger(__name__)


@dataclass
class MasterStats:
    """Counters of one master control (since construction)."""

    orders_sent: int = 0
    instant_actions_sent: int = 0
    states_received: int = 0
    invalid_received: int = 0


class MasterControl(MqttAdapter):
    """Master control for every AMR of one ``manufacturer``.

    ``on_state(serial, state)`` and ``on_connection(serial, connectionState)`` run in
    the event loop for each schema-valid message. ``clock`` gives UTC epoch seconds.
    """

    def __init__(
        self,
        broker: str,
        manufacturer: str,
        *,
        on_state: Callable[[str, dict[str, Any]], None] | None = None,
        on_connection: Callable[[str, str], None] | None = None,
        interface_name: str = INTERFACE_NAME,
        major_version: str = MAJOR_VERSION,
        clock: Callable[[], float] | None = None,
        client_id: str | None = None,
    ) -> None:
        self.manufacturer = manufacturer
        self._iface, self._major = interface_name, major_version
        self._on_state = on_state
        self._on_connection = on_connection
        self._clock = clock or time.time
        self._headers: dict[tuple[str, str], int] = {}
        self.stats = MasterStats()
        #: Latest valid state and connection state per serial number.
        self.states: dict[str, dict[str, Any]] = {}
        self.connections: dict[str, str] = {}
        base = f"{interface_name}/{major_version}/{manufacturer}/+"
        self._conn = MqttConnection(
            broker,
            client_id=client_id or f"vda-master-{manufacturer}",
            on_message=self._on_message,
            subscriptions=[(f"{base}/state", 0), (f"{base}/connection", 1)],
        )

    def send_order(
        self,
        serial_number: str,
        order_id: str,
        order_update_id: int,
        nodes: Sequence[Mapping[str, Any]],
        edges: Sequence[Mapping[str, Any]],
    ) -> dict[str, Any]:
        """Publish an order (build nodes/edges with ``iiotbed.protocols.vda5050.messages.node``/``edge``)."""
        msg = {**self._header(serial_number, "order"), "orderId": order_id,
               "orderUpdateId": order_update_id, "nodes": [dict(n) for n in nodes],
               "edges": [dict(e) for e in edges]}  # fmt: skip
        self._send(serial_number, "order", msg)
        self.stats.orders_sent += 1
        return msg

    def send_instant_actions(
        self, serial_number: str, actions: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """Publish instant actions (build them with ``iiotbed.protocols.vda5050.messages.instant_action``)."""
        msg = {**self._header(serial_number, "instantActions"), "actions": [dict(a) for a in actions]}
        self._send(serial_number, "instantActions", msg)
        self.stats.instant_actions_sent += 1
        return msg

    def _header(self, serial: str, topic: Topic) -> dict[str, Any]:
        key = (serial, topic)
        header_id = self._headers.get(key, 0)
        self._headers[key] = header_id + 1
        return {"headerId": header_id, "timestamp": iso_timestamp(self._clock()),
                "version": VERSION, "manufacturer": self.manufacturer, "serialNumber": serial}  # fmt: skip

    def _send(self, serial: str, topic: Topic, msg: dict[str, Any]) -> None:
        problems = schema_errors(topic, msg)
        if problems:
            raise ValueError(f"{topic} for {serial} breaks the VDA 5050 schema: {problems[0]}")
        prefix = topic_prefix(self.manufacturer, serial, interface_name=self._iface,
                              major_version=self._major)  # fmt: skip
        self._conn.publish(f"{prefix}/{topic}", json.dumps(msg).encode(), qos=0)

    def _on_message(self, msg: Message) -> None:
        parts = msg.topic.split("/")
        if len(parts) != 5 or not msg.payload:
            return  # e.g. a retained connection message being cleared
        serial, topic = parts[3], parts[4]
        try:
            doc = json.loads(msg.payload)
        except (UnicodeDecodeError, ValueError):
            doc = None
        kind: Topic = "state" if topic == "state" else "connection"
        if doc is None or schema_errors(kind, doc):
            self.stats.invalid_received += 1
            log.warning("invalid %s from %s dropped", topic, serial)
            return
        if kind == "state":
            self.stats.states_received += 1
            self.states[serial] = doc
            if self._on_state is not None:
                self._on_state(serial, doc)
        else:
            self.connections[serial] = doc["connectionState"]
            if self._on_connection is not None:
                self._on_connection(serial, doc["connectionState"])
