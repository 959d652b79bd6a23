"""VDA 5050 trip bookkeeping: the simulation's AMR trips as orders, node by node.

Each ``AmrTripStart`` becomes an order warehouse -> station sent by master control; the
AMR's agent reports the nodes reached as the simulation reaches them. Master control
sends an AMR its next order only once the agent has finished the previous one (as a
fleet manager does): at high speed a trip can end before its order has crossed the
broker, and the agent refuses a new order while executing. Progress made before the
order arrived is reported once the agent accepted it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from iiotbed.telemetry import EventName, Record, Sample, Tag

if TYPE_CHECKING:  # paho: loaded only when a run starts
    from iiotbed.devices.vda5050 import AmrAgent
    from iiotbed.devices.vda5050_master import MasterControl
    from iiotbed.protocols.vda5050.messages import Order

__all__ = ["Trip", "Trips"]

Point = tuple[float, float]
NodeRef = tuple[str, int]  # node id, sequence id


class Trip:
    """One delivery: its order id, the station's node, the nodes reached so far."""

    __slots__ = ("order_id", "pending", "reached", "station")

    def __init__(self, order_id: str, station: str) -> None:
        self.order_id = order_id
        self.station = station
        self.reached: list[NodeRef] = []
        self.pending: list[tuple[float, NodeRef]] = []  # progress before the order arrived


class Trips:
    """Turns AMR records into agent updates and master-control orders."""

    def __init__(
        self,
        agents: Mapping[str, AmrAgent],
        master: Callable[[], MasterControl | None],
        *,
        epoch_s: float,
        warehouse: Point,
        home: Point,
        station_names: Mapping[str, str],
        stage_positions: Mapping[str, Point],
    ) -> None:
        self._agents = agents
        self._master = master
        self._epoch = epoch_s
        self._warehouse = warehouse
        self._home = home
        self._station_name = station_names
        self._stage_pos = stage_positions
        self._current: dict[str, Trip] = {}  # the trip the simulation runs now, per AMR
        self._open: dict[str, dict[str, Trip]] = {}  # sent or queued, not yet finished
        self._to_send: dict[str, deque[tuple[Trip, list[Any], list[Any]]]] = {}
        self._in_flight: dict[str, str] = {}  # AMR -> order id sent and not finished
        self._pos: dict[str, list[float]] = {}
        self.home = home  # where the AMRs start (the charger)

    def apply(self, records: list[Record]) -> None:
        """Hand the AMRs' records (delivered over their link) to their agents."""
        from iiotbed.protocols.vda5050.messages import edge, node

        touched: dict[str, float] = {}
        for r in records:
            name = r.asset.rsplit("/", 1)[-1]
            agent = self._agents.get(name)
            if agent is None:
                continue
            t = self._epoch + r.t
            if isinstance(r, Sample):
                if r.tag == Tag.BATTERY:
                    agent.update(t, battery=float(r.value or 0.0))
                elif r.tag in (Tag.POSITION_X, Tag.POSITION_Y):
                    p = self._pos.setdefault(name, list(self._home))
                    p[0 if r.tag == Tag.POSITION_X else 1] = float(r.value or 0.0)
                    touched[name] = t
                continue
            if r.name == EventName.AMR_TRIP_START:
                station = str(r.fields["station"])
                sname = self._station_name.get(station, station.rsplit("/", 1)[-1])
                trip = Trip(f"trip-{r.fields['trip']}", sname)
                self._current[name] = trip
                self._open.setdefault(name, {})[trip.order_id] = trip
                wx, wy = self._warehouse
                sx, sy = self._stage_pos.get(station, self._warehouse)
                self._to_send.setdefault(name, deque()).append((
                    trip,
                    [node("warehouse", 0, x=wx, y=wy), node(sname, 2, x=sx, y=sy)],
                    [edge(f"warehouse-{sname}", 1, "warehouse", sname)],
                ))  # fmt: skip
                self._send_next(name)
                agent.update(t, driving=True)
            elif r.name == EventName.AMR_TRIP_END:
                self._flush_position(name, touched)
                current = self._current.get(name)
                if current is not None:
                    if ("warehouse", 0) not in current.reached:
                        self._progress(name, current, t, ("warehouse", 0))
                    self._progress(name, current, t, (current.station, 2))
                agent.update(t, driving=False)
            elif r.name == EventName.CHARGE_START:
                self._flush_position(name, touched)
                agent.update(t, charging=True, driving=False)
            elif r.name == EventName.CHARGE_END:
                agent.update(t, charging=False)
        for name in list(touched):
            self._flush_position(name, touched)

    def order_handler(self, name: str) -> Callable[[Order], None]:
        """The agent's ``on_order``: report progress made before the order arrived."""

        def on_order(order: Order) -> None:
            trip = self._open.get(name, {}).get(order.order_id)
            if trip is None or not trip.pending:
                return
            pending, trip.pending = trip.pending, []
            # the agent calls us inside its own order handling: report on the next loop turn
            loop = asyncio.get_running_loop()
            for t, reached in pending:
                loop.call_soon(self._report, name, trip, t, reached)

        return on_order

    def _flush_position(self, name: str, touched: dict[str, float]) -> None:
        t = touched.pop(name, None)
        if t is None:
            return
        x, y = self._pos[name]
        self._agents[name].update(t, position=(x, y))
        trip = self._current.get(name)
        if trip is not None and (x, y) == tuple(self._warehouse) and not trip.reached:
            self._progress(name, trip, t, ("warehouse", 0))

    def _send_next(self, name: str) -> None:
        queue = self._to_send.get(name)
        if name in self._in_flight or not queue:
            return
        trip, nodes, edges = queue.popleft()
        self._in_flight[name] = trip.order_id
        master = self._master()
        assert master is not None, "AMR trips need master control"
        master.send_order(name, trip.order_id, 0, nodes, edges)

    def _progress(self, name: str, trip: Trip, t: float, reached: NodeRef) -> None:
        trip.reached.append(reached)
        if self._agents[name].order_id == trip.order_id:
            self._report(name, trip, t, reached)
        else:  # the order is still on its way over the broker: report once accepted
            trip.pending.append((t, reached))

    def _report(self, name: str, trip: Trip, t: float, reached: NodeRef) -> None:
        self._agents[name].update(t, node_reached=reached)
        if reached == (trip.station, 2):  # last node: the order is done, the next may go
            self._open.get(name, {}).pop(trip.order_id, None)
            if self._in_flight.get(name) == trip.order_id:
                del self._in_flight[name]
            self._send_next(name)
