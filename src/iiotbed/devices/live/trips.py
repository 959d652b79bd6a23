"""VDA 5050 trip bookkeeping: the simulation's AMR trips as orders, node by node.

Each ``AmrTripStart`` becomes an order warehouse -> station sent by master control; the
AMR's agent reports the nodes reached as the simulation reaches them. Master control
sends an AMR its next order only once the agent has finished the previous one (as a
fleet manager does): at high speed a trip can end before its order has crossed the
broker, and the agent refuses a new order while executing. Progress made before the
order arrived is reported once the agent accepted it.

While an AMR drives, :meth:`Trips.along_legs` adds its position on the leg every
``visualization_interval`` seconds of sim time (interpolated from the simulated leg's start
and arrival times and its end points), so ``visualization`` shows it moving, not only at
leg ends. A trip the simulation called off (``cancelOrder``: ``AmrTripCancelled``) is
forgotten; the station's kits come with a later trip, and its order.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from iiotbed.telemetry import EventName, Record, Sample, Tag

if TYPE_CHECKING:  # paho: loaded only when a run starts
    from iiotbed.devices.sim import AmrControl
    from iiotbed.devices.vda5050 import AmrAgent
    from iiotbed.devices.vda5050_master import MasterControl
    from iiotbed.protocols.vda5050.messages import Order

__all__ = ["Trip", "Trips", "visualization_interval"]

Point = tuple[float, float]
NodeRef = tuple[str, int]  # node id, sequence id
Leg = tuple[Point, Point, float, float]


def visualization_interval(speed: float | None) -> float:
    """Sim seconds between two positions on a leg: 1 s, or 10 per wall second per AMR at
    most when paced faster than 10x; 10 s unpaced. Fixed per run: the same run publishes
    the same positions whatever the machine's load."""
    if speed is None:
        return 10.0
    return max(1.0, speed / 10.0)


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
        controls: Mapping[str, AmrControl] | None = None,
        visualization_interval: float = 1.0,
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
        self._shown: dict[str, Point] = {}  # the position last published, per AMR
        self._controls = controls or {}
        self._interval = visualization_interval
        self._legs: dict[str, Leg | None] = {}  # the leg seen at the last advance
        self._viz_t: dict[str, float] = {}  # the last interpolated time published
        self.home = home  # where the AMRs start (the charger)

    def along_legs(self, now: float, records: list[Record]) -> list[Record]:
        """``records`` (an advance's AMR records) with the positions of every AMR on its
        leg at each multiple of the visualization interval up to ``now``, in time order.

        Only times strictly inside a leg: its ends are the model's own position samples. A
        leg left early (the trip called off) gets no points after the last advance.
        """
        extra: list[Record] = []
        dt = self._interval
        for name, ctl in self._controls.items():
            cur, prev = ctl.leg, self._legs.get(name)
            self._legs[name] = cur
            legs = [cur] if cur is not None else []
            if prev is not None and prev != cur and ctl.position == prev[1]:
                legs.insert(0, prev)  # it arrived since the last advance: finish that leg
            last = self._viz_t.get(name, -math.inf)
            path = ctl.path
            for (x0, y0), (x1, y1), t0, t1 in legs:
                k = math.floor(max(t0, last) / dt) + 1
                while (t := k * dt) < t1 and t <= now:
                    f = (t - t0) / (t1 - t0)
                    extra.append(Sample(t, path, Tag.POSITION_X, round(x0 + (x1 - x0) * f, 3), "MTR"))
                    extra.append(Sample(t, path, Tag.POSITION_Y, round(y0 + (y1 - y0) * f, 3), "MTR"))
                    last = t
                    k += 1
            self._viz_t[name] = last
        if not extra:
            return records
        return sorted(records + extra, key=lambda r: r.t)  # stable: same-time order is kept

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
                    if touched.get(name, t) != t:  # a new time: publish the previous one
                        self._flush_position(name, touched)
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
            elif r.name == EventName.AMR_TRIP_CANCELLED:
                self._flush_position(name, touched)
                self._forget(name, f"trip-{r.fields['trip']}")
                agent.update(t, driving=False)
            elif r.name == EventName.CHARGE_START:
                self._flush_position(name, touched)
                agent.update(t, charging=True, driving=False)
            elif r.name == EventName.CHARGE_END:
                agent.update(t, charging=False)
        for name in list(touched):
            self._flush_position(name, touched)

    def order_of(self, name: str) -> Callable[[], str]:
        """The current order id of AMR ``name``'s agent ("" before its first order)."""

        def order_id() -> str:
            agent = self._agents.get(name)
            return agent.order_id if agent is not None else ""

        return order_id

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
        sx, sy = self._shown.get(name, self._home)
        self._shown[name] = (x, y)
        if (x, y) != (sx, sy):  # heading: the direction it moved in
            self._agents[name].update(t, position=(x, y), theta=math.atan2(y - sy, x - sx))
        else:
            self._agents[name].update(t, position=(x, y))
        trip = self._current.get(name)
        if trip is not None and (x, y) == tuple(self._warehouse) and not trip.reached:
            self._progress(name, trip, t, ("warehouse", 0))

    def _forget(self, name: str, order_id: str) -> None:
        """A trip called off in the simulation: drop it; the next order may go."""
        trip = self._current.get(name)
        if trip is not None and trip.order_id == order_id:
            del self._current[name]
        self._open.get(name, {}).pop(order_id, None)
        queue = self._to_send.get(name)
        if queue:
            self._to_send[name] = deque(q for q in queue if q[0].order_id != order_id)
        if self._in_flight.get(name) == order_id:
            del self._in_flight[name]
        self._send_next(name)

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
