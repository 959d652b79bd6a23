"""A VDA 5050 2.1 AMR agent: the vehicle side of the fleet interface over MQTT.

It publishes ``connection`` (retained; ONLINE, OFFLINE, CONNECTIONBROKEN as the Will),
``state`` on every relevant change and at least every 30 s of the caller's clock, and
``visualization`` with each new position. It accepts ``order`` and ``instantActions``
after checking them against the official 2.1.0 schema and the order rules; refused input
becomes a WARNING in the state's ``errors`` and never raises. Accepted work goes to
callbacks; the simulation reports progress through :meth:`AmrAgent.update`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from iiotbed.errors import CommandRefused
from iiotbed.mqtt import Message, MqttAdapter, MqttConnection, Will
from iiotbed.protocols.vda5050.messages import (
    INTERFACE_NAME,
    MAJOR_VERSION,
    VERSION,
    Action,
    Order,
    Topic,
    iso_timestamp,
    schema_errors,
    topic_prefix,
)

__all__ = ["AmrAgent", "AmrStats", "InstantActionHandler", "OrderHandler"]

log = logging.getLogger(__name__)

#: Called with each accepted order or order update.
OrderHandler = Callable[[Order], None]
#: Called with each instant action; returns whether it was carried out. Built-in actions
#: (startPause, stopPause, cancelOrder) are applied by the agent whatever it returns.
InstantActionHandler = Callable[[Action], bool]  # True: handled; may raise CommandRefused

_BUILT_IN: Final = frozenset({"startPause", "stopPause", "cancelOrder"})
_MAX_ERRORS: Final = 20
_ACTION_STATUSES: Final = frozenset({"WAITING", "INITIALIZING", "RUNNING", "FINISHED", "FAILED"})


@dataclass
class AmrStats:
    """Counters of one agent (since construction)."""

    published: int = 0
    states: int = 0
    orders_accepted: int = 0
    orders_rejected: int = 0
    instant_actions: int = 0
    invalid_messages: int = 0


class AmrAgent(MqttAdapter):
    """One AMR on the broker under ``<interface>/<major>/<manufacturer>/<serial>/...``.

    Times ``t`` are UTC seconds since the Unix epoch from the caller's clock (scenario
    epoch + sim time). ``clock`` stamps messages not caused by :meth:`update` (connection,
    answers to orders); without it the last ``t`` given to :meth:`update` is used.
    """

    def __init__(
        self,
        broker: str,
        manufacturer: str,
        serial_number: str,
        *,
        on_order: OrderHandler | None = None,
        on_instant_action: InstantActionHandler | None = None,
        interface_name: str = INTERFACE_NAME,
        major_version: str = MAJOR_VERSION,
        map_id: str = "floor-1",
        position: tuple[float, float] = (0.0, 0.0),
        battery: float = 100.0,
        state_interval: float = 30.0,
        clock: Callable[[], float] | None = None,
        client_id: str | None = None,
    ) -> None:
        self.manufacturer = manufacturer
        self.serial_number = serial_number
        self.prefix = topic_prefix(
            manufacturer, serial_number, interface_name=interface_name, major_version=major_version
        )
        self.stats = AmrStats()
        self._on_order = on_order
        self._on_instant_action = on_instant_action
        self._clock = clock
        self._state_interval = state_interval
        self._headers: dict[str, int] = {}
        self._t = clock() if clock is not None else time.time()
        self._last_state_t: float | None = None
        # Vehicle state as VDA 5050 names it.
        self.map_id = map_id
        self._x, self._y = position
        self._theta = 0.0
        self._velocity: tuple[float, float, float] | None = None
        self._battery = battery
        self._charging = False
        self._driving = False
        self._paused = False
        self._order_id = ""
        self._order_update_id = 0
        self._last_node_id = ""
        self._last_node_seq = 0
        self._node_states: list[dict[str, Any]] = []
        self._edge_states: list[dict[str, Any]] = []
        self._action_states: dict[str, dict[str, Any]] = {}
        self._errors: list[dict[str, Any]] = []
        self._conn = MqttConnection(
            broker,
            client_id=client_id or f"vda-{manufacturer}-{serial_number}",
            on_message=self._on_message,
            subscriptions=[(f"{self.prefix}/order", 0), (f"{self.prefix}/instantActions", 0)],
            will=self._will,
            on_connect=self._on_connected,
        )

    # -- public API --

    @property
    def order_id(self) -> str:
        return self._order_id

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The active errors, as the state reports them."""
        return [dict(e) for e in self._errors]

    async def close(self) -> None:
        """Publish the retained OFFLINE connection message, then disconnect."""
        if await self._publish_farewell(
            f"{self.prefix}/connection",
            self._connection_message("OFFLINE"),
            retain=True,
            what=f"OFFLINE of {self.serial_number}",
        ):
            self.stats.published += 1
        await super().close()

    def update(
        self,
        t: float,
        *,
        position: tuple[float, float] | None = None,
        theta: float | None = None,
        velocity: tuple[float, float, float] | None = None,
        battery: float | None = None,
        charging: bool | None = None,
        driving: bool | None = None,
        paused: bool | None = None,
        node_reached: tuple[str, int] | None = None,
        action_status: Mapping[str, str] | None = None,
    ) -> bool:
        """Report the vehicle at time ``t``; returns whether a state message went out.

        Position (metres on ``map_id``), heading (rad) and velocity (vx, vy, omega) go to
        ``visualization``; node progress, action status, driving, pausing and charging
        changes trigger a ``state``; otherwise a state goes out once ``state_interval``
        seconds of ``t`` have passed since the last one.
        """
        self._t = t
        changed = False
        if battery is not None:
            self._battery = max(0.0, min(100.0, battery))
        for attr, value in (("_charging", charging), ("_driving", driving), ("_paused", paused)):
            if value is not None and getattr(self, attr) != value:
                setattr(self, attr, value)
                changed = True
        if node_reached is not None:
            node_id, seq = node_reached
            self._last_node_id, self._last_node_seq = node_id, seq
            self._node_states = [n for n in self._node_states if n["sequenceId"] > seq]
            self._edge_states = [e for e in self._edge_states if e["sequenceId"] > seq]
            changed = True
        for action_id, status in (action_status or {}).items():
            st = self._action_states.get(action_id)
            if st is None:
                raise ValueError(f"{self.serial_number}: no action {action_id!r} in the current order")
            if status not in _ACTION_STATUSES:
                raise ValueError(f"action status {status!r} is not one of {sorted(_ACTION_STATUSES)}")
            if st["actionStatus"] != status:
                st["actionStatus"] = status
                changed = True
        moved = position is not None or theta is not None or velocity is not None
        if position is not None:
            self._x, self._y = position
        if theta is not None:
            self._theta = theta
        if velocity is not None:
            self._velocity = velocity
        if moved:
            self._publish("visualization", self._visualization_message(), qos=0)
        due = self._last_state_t is None or t - self._last_state_t >= self._state_interval
        if changed or due:
            self._publish_state()
            return True
        return False

    # -- outgoing messages --

    def _now(self) -> float:
        return self._clock() if self._clock is not None else self._t

    def _header(self, topic: Topic) -> dict[str, Any]:
        header_id = self._headers.get(topic, 0)
        self._headers[topic] = header_id + 1
        return {
            "headerId": header_id,
            # state and visualization: the time of what they report (the last update)
            "timestamp": iso_timestamp(self._t if topic in ("state", "visualization") else self._now()),
            "version": VERSION,
            "manufacturer": self.manufacturer,
            "serialNumber": self.serial_number,
        }

    def _publish(self, topic: Topic, message: dict[str, Any], qos: int, retain: bool = False) -> None:
        if self._conn.publish(f"{self.prefix}/{topic}", json.dumps(message).encode(), qos, retain):
            self.stats.published += 1

    def _connection_message(self, state: str) -> bytes:
        return json.dumps({**self._header("connection"), "connectionState": state}).encode()

    def _will(self) -> Will:
        return Will(
            f"{self.prefix}/connection", self._connection_message("CONNECTIONBROKEN"), qos=1, retain=True
        )

    def _on_connected(self) -> None:
        self._publish("connection", json.loads(self._connection_message("ONLINE")), qos=1, retain=True)
        self._publish_state()

    def _position(self) -> dict[str, Any]:
        return {"x": self._x, "y": self._y, "theta": self._theta, "mapId": self.map_id,
                "positionInitialized": True}  # fmt: skip

    def _visualization_message(self) -> dict[str, Any]:
        msg = {**self._header("visualization"), "agvPosition": self._position()}
        if self._velocity is not None:
            vx, vy, omega = self._velocity
            msg["velocity"] = {"vx": vx, "vy": vy, "omega": omega}
        return msg

    def state_message(self) -> dict[str, Any]:
        """The state as it would be published now (without consuming a headerId)."""
        header = {"headerId": self._headers.get("state", 0), "timestamp": iso_timestamp(self._t),
                  "version": VERSION, "manufacturer": self.manufacturer,
                  "serialNumber": self.serial_number}  # fmt: skip
        return {**header, **self._state_body()}

    def _state_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "orderId": self._order_id,
            "orderUpdateId": self._order_update_id,
            "lastNodeId": self._last_node_id,
            "lastNodeSequenceId": self._last_node_seq,
            "nodeStates": [dict(n) for n in self._node_states],
            "edgeStates": [dict(e) for e in self._edge_states],
            "driving": self._driving,
            "paused": self._paused,
            "actionStates": [dict(a) for a in self._action_states.values()],
            "batteryState": {"batteryCharge": self._battery, "charging": self._charging},
            "operatingMode": "AUTOMATIC",
            "errors": [dict(e) for e in self._errors],
            "safetyState": {"eStop": "NONE", "fieldViolation": False},
            "agvPosition": self._position(),
        }
        if self._velocity is not None:
            vx, vy, omega = self._velocity
            body["velocity"] = {"vx": vx, "vy": vy, "omega": omega}
        return body

    def _publish_state(self) -> None:
        self._publish("state", {**self._header("state"), **self._state_body()}, qos=0)
        self._last_state_t = self._t
        self.stats.states += 1

    # -- incoming messages --

    def _on_message(self, msg: Message) -> None:
        topic = msg.topic.rsplit("/", 1)[-1]
        if topic == "order":
            self._handle_order(msg.payload)
        elif topic == "instantActions":
            self._handle_instant_actions(msg.payload)
        self._publish_state()

    def _refuse(self, error_type: str, topic: str, description: str,
                doc: object = None, **refs: str) -> None:  # fmt: skip
        references = [{"referenceKey": "topic", "referenceValue": topic}]
        if isinstance(doc, dict) and isinstance(doc.get("headerId"), int):
            references.append({"referenceKey": "headerId", "referenceValue": str(doc["headerId"])})
        references += [{"referenceKey": k, "referenceValue": v} for k, v in refs.items()]
        self._errors.append({"errorType": error_type, "errorLevel": "WARNING",
                             "errorDescription": description[:500], "errorReferences": references})  # fmt: skip
        del self._errors[:-_MAX_ERRORS]
        log.warning("%s refused %s: %s: %s", self.serial_number, topic, error_type, description)

    def _parse(self, topic: Topic, data: bytes) -> dict[str, Any] | None:
        """Decode and schema-check one message; None (and an error entry) if invalid."""
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, ValueError) as exc:
            self.stats.invalid_messages += 1
            self._refuse("validationError", topic, f"not JSON: {exc}")
            return None
        problems = schema_errors(topic, doc)
        if not problems and (doc["manufacturer"], doc["serialNumber"]) != (self.manufacturer, self.serial_number):
            problems = [f"addressed to {doc['manufacturer']}/{doc['serialNumber']}, "
                        f"this is {self.manufacturer}/{self.serial_number}"]  # fmt: skip
        if problems:
            self.stats.invalid_messages += 1
            self._refuse("validationError", topic, "; ".join(problems[:3]), doc)
            return None
        assert isinstance(doc, dict)
        return doc

    def _handle_order(self, data: bytes) -> None:
        doc = self._parse("order", data)
        if doc is None:
            self.stats.orders_rejected += 1
            return
        order = Order.from_json(doc)
        refs = {"orderId": order.order_id, "orderUpdateId": str(order.order_update_id)}
        problem = order.sequence_problem()
        if problem is not None:
            self.stats.orders_rejected += 1
            self._refuse("validationError", "order", problem, doc, **refs)
            return
        if order.order_id == self._order_id:
            if order.order_update_id < self._order_update_id:
                self.stats.orders_rejected += 1
                self._refuse("orderUpdateError", "order",
                             f"orderUpdateId {order.order_update_id} is older than the current "
                             f"{self._order_update_id}", doc, **refs)  # fmt: skip
                return
            if order.order_update_id == self._order_update_id:
                log.info("%s: order %s/%d received again, ignored", self.serial_number,
                         order.order_id, order.order_update_id)  # fmt: skip
                return
            base_end = self._base_end()
            first = order.nodes[0]
            if base_end is not None and (first.node_id, first.sequence_id) != base_end:
                self.stats.orders_rejected += 1
                self._refuse("orderUpdateError", "order",
                             f"the update starts at {first.node_id}/{first.sequence_id}, not at the "
                             f"end of the current base {base_end[0]}/{base_end[1]}", doc, **refs)  # fmt: skip
                return
            keep_below = first.sequence_id
        else:
            if self._node_states:
                self.stats.orders_rejected += 1
                self._refuse("orderError", "order",
                             f"still executing order {self._order_id!r}; cancel it first", doc, **refs)  # fmt: skip
                return
            keep_below = -1
            self._action_states = {}
        self._accept(order, doc, keep_below)

    def _base_end(self) -> tuple[str, int] | None:
        released = [n for n in self._node_states if n["released"]]
        if released:
            last = released[-1]
            return last["nodeId"], last["sequenceId"]
        if self._order_id:
            return self._last_node_id, self._last_node_seq
        return None

    def _accept(self, order: Order, doc: dict[str, Any], keep_below: int) -> None:
        self._order_id, self._order_update_id = order.order_id, order.order_update_id
        self._node_states = [n for n in self._node_states if n["sequenceId"] < keep_below]
        self._edge_states = [e for e in self._edge_states if e["sequenceId"] < keep_below]
        for n in doc["nodes"]:
            ns = {k: n[k] for k in ("nodeId", "sequenceId", "released")}
            if "nodePosition" in n:
                ns["nodePosition"] = n["nodePosition"]
            self._node_states.append(ns)
        for e in doc["edges"]:
            self._edge_states.append({k: e[k] for k in ("edgeId", "sequenceId", "released")})
        for actions in [n.actions for n in order.nodes] + [e.actions for e in order.edges]:
            for a in actions:
                self._action_states.setdefault(a.action_id, {
                    "actionId": a.action_id, "actionType": a.action_type, "actionStatus": "WAITING"})  # fmt: skip
        self._errors = [e for e in self._errors if e["errorLevel"] != "WARNING"]
        self.stats.orders_accepted += 1
        if self._on_order is not None:
            try:
                self._on_order(order)
            except Exception:
                log.exception("%s: order handler failed on %s", self.serial_number, order.order_id)

    def _handle_instant_actions(self, data: bytes) -> None:
        doc = self._parse("instantActions", data)
        if doc is None:
            return
        for a in doc["actions"]:
            action = Action.from_json(a)
            self.stats.instant_actions += 1
            handled = False
            if action.action_type == "cancelOrder" and not self._node_states and not self._edge_states:
                # no order, or it was cancelled already: nothing reaches the vehicle (6.6.3.2)
                self._refuse("noOrderToCancel", "instantActions", "there is no active order to cancel",
                             doc, actionId=action.action_id)  # fmt: skip
                self._action_states[action.action_id] = {
                    "actionId": action.action_id, "actionType": action.action_type,
                    "actionStatus": "FAILED"}  # fmt: skip
                continue
            if self._on_instant_action is not None:  # first: a refusal leaves the state alone
                try:
                    handled = self._on_instant_action(action)
                except CommandRefused as exc:  # the one mapping: an error in the state
                    self._refuse("actionRefused", "instantActions", str(exc), doc,
                                 actionId=action.action_id)  # fmt: skip
                    self._action_states[action.action_id] = {
                        "actionId": action.action_id, "actionType": action.action_type,
                        "actionStatus": "FAILED"}  # fmt: skip
                    continue
                except Exception:
                    log.exception("%s: instant action handler failed on %s", self.serial_number,
                                  action.action_type)  # fmt: skip
            ok = True
            if action.action_type in _BUILT_IN:
                self._apply_built_in(action)
            elif not handled:
                ok = False
                self._refuse("actionNotSupported", "instantActions",
                             f"instant action {action.action_type!r} is not supported", doc,
                             actionId=action.action_id)  # fmt: skip
            self._action_states[action.action_id] = {
                "actionId": action.action_id, "actionType": action.action_type,
                "actionStatus": "FINISHED" if ok else "FAILED"}  # fmt: skip

    def _apply_built_in(self, action: Action) -> None:
        if action.action_type == "startPause":
            self._paused = True
        elif action.action_type == "stopPause":
            self._paused = False
        elif action.action_type == "cancelOrder":
            # the vehicle stops where it is (the simulation has stopped it): every node and
            # edge state goes, unfinished actions fail, orderId/orderUpdateId are kept (6.6.3)
            self._node_states, self._edge_states = [], []
            self._driving = False
            for st in self._action_states.values():
                if st["actionStatus"] in ("WAITING", "INITIALIZING", "RUNNING"):
                    st["actionStatus"] = "FAILED"
