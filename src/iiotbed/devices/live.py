"""The live factory: the simulation paced to wall time behind real protocol endpoints.

:class:`LiveFactory` (an ``async with``) builds one replication of a scenario, the pacer,
the OPC UA machine servers (each station's control attached), and with a broker a
Sparkplug B edge node (energy meters, line counters, AR headsets) and one VDA 5050 agent
per AMR plus the master control the simulation's dispatcher speaks through. After every
advance the new records are routed to the endpoints, through each endpoint's link
(:mod:`iiotbed.devices.network`). A TaskGroup owns every task; leaving the block (end of
the duration, an error or cancellation) closes every endpoint: NDEATH, VDA 5050 OFFLINE,
OPC UA servers stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal, Self

from iiotbed.devices.network import Channel, LinkStats, LiveLink, endpoint_links
from iiotbed.devices.pacing import Pacer
from iiotbed.devices.sim import STATES, Factory
from iiotbed.devices.sim.states import Power
from iiotbed.devices.sim.station import StationControl
from iiotbed.eventlog import record_to_json
from iiotbed.scenario import LiveEndpoint, Scenario
from iiotbed.telemetry import ItemState, PlannedState, Record, Sample, Tag

if TYPE_CHECKING:  # the adapters import asyncua and paho: loaded only when the run starts
    from iiotbed.devices.opcua import MachineServers, Security
    from iiotbed.devices.sparkplug import MetricDef, SparkplugEdgeNode
    from iiotbed.devices.vda5050 import AmrAgent
    from iiotbed.devices.vda5050_master import MasterControl
    from iiotbed.protocols.vda5050.messages import Action, Order

__all__ = ["LiveFactory", "LiveOptions", "LiveSummary", "run_live"]

log = logging.getLogger(__name__)

_LINE_METRICS = (Tag.GOOD, Tag.SCRAP, Tag.LINE_OUTPUT)
_STATE_TAGS = (Tag.ITEM_STATE, Tag.OPERATION_MODE, Tag.PACKML_STATE)
_CYCLE_TIME_TAG = "CycleTime"  # s, derived here: the simulator emits no per-cycle tag
_POWER_TAG = "Power"  # kW, derived from the station's state (the OPC UA servers' process value
_SPEED_METRIC = "SpeedSetpoint"
_HEADSETS = "ar-headsets"
_TECH_END = ("RepairEnd", "PredictiveMaintenanceEnd")


@dataclass
class LiveOptions:
    """How to run live. ``speed=None`` runs as fast as possible; ``broker=None`` = OPC UA only."""

    speed: float | None = 60.0
    duration: float | None = None  # sim seconds (default: the scenario's)
    replication: int = 0
    host: str = "127.0.0.1"
    opcua_port: int = 4840
    opcua_layout: Literal["line", "machine"] = "line"
    security: Security | None = None
    broker: str | None = None
    sparkplug_group: str | None = None  # default <enterprise>-<site>
    edge_node: str | None = None  # default <area>-<line>
    primary_host: str | None = None
    vda_manufacturer: str | None = None  # default the fleet's manufacturer
    events: Path | None = None
    abort_after: float = 5.0  # an MQTT link outage longer than this (sim s) drops the connection
    # run unpaced up to the first production window (a scenario's epoch is often midnight,
    # hours before the first shift); pacing starts there
    fast_forward: bool = True


@dataclass
class LiveSummary:
    """What a live run did."""

    sim_time: float = 0.0
    records: int = 0
    max_lag_s: float = 0.0
    opcua_writes: int = 0
    sparkplug_published: int = 0
    vda_published: int = 0
    orders_sent: int = 0
    commands_accepted: int = 0
    commands_refused: int = 0
    links: dict[str, LinkStats] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [
            f"sim time reached: {self.sim_time:.0f} s ({self.sim_time / 3600:.2f} h)",
            f"records: {self.records}",
            f"max lag: {self.max_lag_s:.3f} s",
            f"messages: {self.opcua_writes} OPC UA writes, {self.sparkplug_published} Sparkplug, "
            f"{self.vda_published} VDA 5050 (orders sent: {self.orders_sent})",
            f"commands: {self.commands_accepted} accepted, {self.commands_refused} refused",
        ]
        for name, s in self.links.items():
            out.append(
                f"link {name}: {s.sent} sent, {s.delayed} delayed (mean {s.mean_delay * 1000:.1f} ms), "
                f"{s.dropped} dropped, {s.resent} resent, {s.outages} outages, {s.aborts} aborts"
            )
        return out


class _CountingControl:
    """A station control that counts what it accepted and refused (for the summary)."""

    def __init__(
        self,
        control: StationControl,
        counts: list[int],
        on_speed: Callable[[str, float], None] | None = None,
    ) -> None:
        self._c = control
        self._counts = counts  # [accepted, refused]
        self.path = control.path
        self._on_speed = on_speed

    @property
    def speed(self) -> float:
        return self._c.speed

    def _do(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except (ValueError, RuntimeError):
            self._counts[1] += 1
            raise
        self._counts[0] += 1

    def start(self) -> None:
        self._do(self._c.start)

    def stop(self) -> None:
        self._do(self._c.stop)

    def hold(self) -> None:
        self._do(self._c.hold)

    def unhold(self) -> None:
        self._do(self._c.unhold)

    def reset(self) -> None:
        self._do(self._c.reset)

    def set_speed(self, factor: float) -> None:
        self._do(lambda: self._c.set_speed(factor))
        if self._on_speed is not None:
            self._on_speed(self.path, factor)


def _power_index() -> dict[tuple[int, int, int], Power | None]:
    """(item, mode, packml) -> power class; None where only the calendar tells (break/off)."""
    out: dict[tuple[int, int, int], Power | None] = {}
    for st in STATES:
        key = (int(st.item), int(st.mode), int(st.packml))
        out[key] = st.power if key not in out or out[key] == st.power else None
    return out


class _Trip:
    __slots__ = ("order_id", "pending", "reached", "station")

    def __init__(self, order_id: str, station: str) -> None:
        self.order_id = order_id
        self.station = station
        self.reached: list[tuple[str, int]] = []
        self.pending: list[tuple[float, tuple[str, int]]] = []  # progress before the order arrived


class LiveFactory:
    """One replication of ``scenario`` served live; see the module docstring."""

    def __init__(self, scenario: Scenario, options: LiveOptions | None = None) -> None:
        self.scenario = scenario
        self.options = opts = options or LiveOptions()
        self.duration = opts.duration if opts.duration is not None else scenario.run.duration
        self._new: list[Record] = []
        self.factory = Factory(scenario, opts.replication, sink=self._new.append)
        self.env = self.factory.env
        self.pacer = Pacer(self.env, speed=opts.speed, on_advance=self._on_advance)
        self.summary = LiveSummary()
        self._epoch_s = scenario.plant.epoch.timestamp()
        self._counts = [0, 0]  # station commands accepted, refused
        self._vda_counts = [0, 0]
        plant = scenario.plant
        self.group_id = opts.sparkplug_group or f"{plant.enterprise}-{plant.site}"
        self.edge_node_id = opts.edge_node or f"{plant.area}-{plant.line}"
        supply = scenario.supply
        fleet = supply.amr if supply is not None and supply.mode == "amr" else None
        self.manufacturer = opts.vda_manufacturer or (fleet.manufacturer if fleet else "")
        self._warehouse = supply.warehouse_position if supply is not None else (0.0, 0.0)
        self._home = fleet.battery.charger_position if fleet is not None else (0.0, 0.0)
        self._stage_pos = {path: stage.position for stage, _, path in scenario.station_paths()}
        self._station_name = {path: name for _, name, path in scenario.station_paths()}
        self._stage_power = {
            path: (s.power.executing, s.power.idle, s.power.down, s.power.off)
            for s, _, path in scenario.station_paths()
        }
        # links
        self.links: dict[str, LiveLink] = {}
        reliable = {"opcua": True, "sparkplug": False, "vda5050": True}
        for ep, name in endpoint_links(scenario).items():
            self.links[ep] = LiveLink(
                ep, name, scenario.network.links[name], seed=scenario.run.seed,
                replication=opts.replication, reliable=reliable[ep], abort_after=opts.abort_after,
            )  # fmt: skip
        self._opcua_ch: Channel[list[Sample]] = Channel(self.links.get("opcua"))
        self._spb_ch: Channel[list[tuple[str, str, object, int]]] = Channel(
            self.links.get("sparkplug")
        )
        self._vda_ch: Channel[list[Record]] = Channel(self.links.get("vda5050"))
        # derived state
        self._power_of = _power_index()
        self._st_state: dict[str, list[int]] = {p: [0, 0, 0] for p in self._station_name}
        self._power: dict[str, float] = {}
        # CycleTime (OPC UA process value): executing time spent on the last completed unit
        self._exec_since: dict[str, float | None] = dict.fromkeys(self._station_name)
        self._exec_acc: dict[str, float] = dict.fromkeys(self._station_name, 0.0)
        self._planned = int(PlannedState.OffShift)
        self._trips: dict[str, _Trip] = {}  # the trip the simulation runs now, per AMR
        # Master control sends an AMR its next order only once the agent has finished the
        # previous one (as a fleet manager does): at high speed a trip can end before its
        # order has crossed the broker, and the agent refuses a new order while executing.
        self._open: dict[str, dict[str, _Trip]] = {}  # sent or queued, not yet finished
        self._to_send: dict[str, deque[tuple[_Trip, list[Any], list[Any]]]] = {}
        self._in_flight: dict[str, str] = {}  # AMR -> order id sent and not finished
        self._amr_pos: dict[str, list[float]] = {}
        # endpoints, built in __aenter__
        self.servers: MachineServers | None = None
        self.edge: SparkplugEdgeNode | None = None
        self.master: MasterControl | None = None
        self.agents: dict[str, AmrAgent] = {}
        self._stack: AsyncExitStack | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._events_fp: IO[str] | None = None
        self._finished = False

    # ------------------------------------------------------------------ endpoints

    @property
    def now(self) -> float:
        return float(self.env.now)

    @property
    def endpoints(self) -> list[str]:
        """Human-readable endpoints (OPC UA URLs, MQTT topic roots)."""
        out = [f"OPC UA  {url}" for url in (self.servers.endpoints if self.servers else [])]
        if self.edge is not None:
            out.append(
                f"Sparkplug B  {self.options.broker}  spBv1.0/{self.group_id}/+/{self.edge_node_id}/#"
            )
        if self.agents:
            out.append(f"VDA 5050  {self.options.broker}  uagv/v2/{self.manufacturer}/<amr>/"
                       f"{{order,instantActions,state,connection,visualization}}"
                       f"  AMRs: {', '.join(self.agents)}")  # fmt: skip
        return out

    def _clock_s(self) -> float:
        return self._epoch_s + float(self.env.now)

    def _clock_ms(self) -> int:
        return round(self._clock_s() * 1000)

    def _sparkplug_devices(self) -> dict[str, list[MetricDef]]:
        from iiotbed.devices.sparkplug import MetricDef

        sc = self.scenario
        devices: dict[str, list[MetricDef]] = {}
        line = [MetricDef(t, "UInt64") for t in _LINE_METRICS]
        line.append(MetricDef(Tag.PLANNED_STATE, "Int32"))
        line += [MetricDef(Tag.HEADCOUNT_PREFIX + r, "Int32", unit="C62") for r in self._roles()]
        devices["line"] = line
        for _, name, _path in sc.station_paths():
            devices[name] = [
                MetricDef(Tag.ENERGY, "Double", unit="KWH"),
                MetricDef(_POWER_TAG, "Double", unit="KWT"),
                MetricDef(_SPEED_METRIC, "Double", writable=True),
            ]
        heads = [MetricDef(Tag.BUSY, "Int32", unit="C62")]
        for i in range(sc.technicians.count):
            tech = f"tech-{i + 1:02d}"
            heads += [MetricDef(f"{tech}/Busy", "Boolean"), MetricDef(f"{tech}/Job", "String"),
                      MetricDef(f"{tech}/Station", "String")]  # fmt: skip
        devices[_HEADSETS] = heads
        return devices

    def _roles(self) -> list[str]:
        from iiotbed.devices.sim.line import headcount_roles

        return list(headcount_roles(self.factory._ctx))

    async def __aenter__(self) -> Self:
        from iiotbed.devices.opcua import build_servers

        opts = self.options
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            if opts.events is not None:
                # opening and writing a file blocks: done in a worker thread
                self._events_fp = await asyncio.to_thread(opts.events.open, "w", encoding="utf-8")
                stack.push_async_callback(self._close_events)
            controls = {
                p: _CountingControl(c, self._counts, self._speed_from_opcua)
                for p, c in self.factory.stations.items()
            }
            self.servers = build_servers(
                self.scenario, host=opts.host, port=opts.opcua_port,
                per_machine=opts.opcua_layout == "machine", security=opts.security,
                controls=controls,
            )  # fmt: skip
            await stack.enter_async_context(self.servers)
            if opts.broker is not None:
                await self._open_mqtt(stack, opts.broker)
            self._tg = await stack.enter_async_context(asyncio.TaskGroup())
            self._run_task = self._tg.create_task(self._run(), name="iiotbed-live-pacer")
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def _open_mqtt(self, stack: AsyncExitStack, broker: str) -> None:
        from iiotbed.devices.sparkplug import SparkplugEdgeNode
        from iiotbed.devices.vda5050 import AmrAgent
        from iiotbed.devices.vda5050_master import MasterControl

        opts = self.options
        self.edge = SparkplugEdgeNode(
            broker, self.group_id, self.edge_node_id, devices=self._sparkplug_devices(),
            primary_host_id=opts.primary_host, on_command=self._on_dcmd, clock=self._clock_ms,
            client_id=f"iiotbed-{self.group_id}-{self.edge_node_id}",
        )  # fmt: skip
        for path, name in self._station_name.items():
            self.edge.set(name, _SPEED_METRIC, self.factory.stations[path].speed, self._clock_ms())
        await stack.enter_async_context(self.edge)
        if not self.factory.amrs:
            return
        self.master = MasterControl(broker, self.manufacturer, clock=self._clock_s,
                                    client_id=f"iiotbed-master-{self.manufacturer}")  # fmt: skip
        await stack.enter_async_context(self.master)
        for name in self.factory.amrs:
            agent = AmrAgent(
                broker, self.manufacturer, name, on_order=self._order_handler(name),
                on_instant_action=self._action_handler(name), position=self._home,
                clock=self._clock_s, client_id=f"iiotbed-{self.manufacturer}-{name}",
            )  # fmt: skip
            await stack.enter_async_context(agent)
            self.agents[name] = agent

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is None:
            return
        task = self._run_task
        if task is not None and not task.done():
            task.cancel()
        try:
            await stack.__aexit__(None, None, None)
        finally:
            self._fill_summary()

    async def wait(self) -> LiveSummary:
        """Wait until the run reaches its duration; the summary (endpoints stay up)."""
        assert self._run_task is not None, "use inside 'async with'"
        await asyncio.shield(self._run_task)
        return self.summary

    async def _run(self) -> None:
        speed = self.pacer.speed
        if self.options.fast_forward and speed is not None:
            from iiotbed.devices.sim.calendar import ProductionCalendar

            try:
                first = ProductionCalendar(self.scenario).next_production(self.env.now)
            except ValueError:
                first = 0.0
            if first > self.env.now:
                self.pacer.speed = None
                await self.pacer.run(min(first, self.duration))
                self.pacer.set_speed(speed)  # re-anchors wall time at the shift start
        await self.pacer.run(self.duration)
        self.factory.run(self.env.now)  # emits the energy integrated up to the end
        await self._on_advance(self.env.now)
        await self._deliver(float("inf"))
        self._finished = True
        self._fill_summary()

    async def _close_events(self) -> None:
        fp, self._events_fp = self._events_fp, None
        if fp is not None:
            await asyncio.to_thread(fp.close)

    def _fill_summary(self) -> None:
        s = self.summary
        s.sim_time = float(self.env.now)
        s.max_lag_s = self.pacer.max_lag_s
        if self.edge is not None:
            s.sparkplug_published = self.edge.stats.published
        s.vda_published = sum(a.stats.published for a in self.agents.values())
        if self.master is not None:
            s.orders_sent = self.master.stats.orders_sent
        accepted, refused = (
            self._counts[0] + self._vda_counts[0],
            self._counts[1] + self._vda_counts[1],
        )
        if self.edge is not None:
            accepted += self.edge.stats.commands_accepted
            refused += self.edge.stats.commands_refused + self.edge.stats.malformed
        for a in self.agents.values():
            refused += a.stats.invalid_messages + a.stats.orders_rejected
        s.commands_accepted, s.commands_refused = accepted, refused
        s.links = {f"{ep} ({lk.name})": lk.stats for ep, lk in self.links.items()}

    # ------------------------------------------------------------------ routing

    async def _on_advance(self, now: float) -> None:
        batch = self._new[:]
        self._new.clear()  # in place: the factory's sink appends to this list
        if batch:
            self._route(now, batch)
        for ep in ("sparkplug", "vda5050"):
            link = self.links.get(ep)
            if link is not None:
                self._outages(ep, link, now)
        await self._deliver(now)

    def _route(self, now: float, batch: list[Record]) -> None:
        self.summary.records += len(batch)
        if self._events_fp is not None:
            # a write into the file object's buffer; the OS write happens when it fills
            self._events_fp.write("".join(record_to_json(r) + "\n" for r in batch))
        station_name = self._station_name
        line = self.scenario.line_path
        opcua: list[Sample] = []
        spb: list[tuple[str, str, object, int]] = []
        vda: list[Record] = []
        changed: dict[str, float] = {}
        amrs = {a.path for a in self.factory.amrs.values()}
        epoch_ms = self._epoch_s * 1000
        tech_path = f"{line}/technicians"
        for r in batch:
            ts = round(epoch_ms + r.t * 1000)
            if isinstance(r, Sample):
                a, tag = r.asset, r.tag
                if a in station_name:
                    opcua.append(r)
                    if tag == Tag.ENERGY:
                        spb.append((station_name[a], Tag.ENERGY, float(r.value or 0.0), ts))
                    elif tag == Tag.PROCESSED:
                        opcua.append(Sample(r.t, a, _CYCLE_TIME_TAG, self._cycle_done(a, r.t), "SEC"))
                    elif tag in _STATE_TAGS:
                        self._st_state[a][_STATE_TAGS.index(tag)] = int(r.value or 0)
                        changed[a] = r.t
                        if tag == Tag.ITEM_STATE:
                            self._executing(a, r.t, int(r.value or 0) == ItemState.Executing)
                elif a == line:
                    if tag in _LINE_METRICS:
                        spb.append(("line", tag, int(r.value or 0), ts))
                    elif tag == Tag.PLANNED_STATE:
                        self._planned = int(r.value or 0)
                        spb.append(("line", tag, self._planned, ts))
                        changed.update(dict.fromkeys(station_name, r.t))
                    elif tag.startswith(Tag.HEADCOUNT_PREFIX):
                        spb.append(("line", tag, int(r.value or 0), ts))
                elif a == tech_path and tag == Tag.BUSY:
                    spb.append((_HEADSETS, Tag.BUSY, int(r.value or 0), ts))
                elif a in amrs:
                    vda.append(r)
            else:
                if r.asset in amrs:
                    vda.append(r)
                elif r.name == "TechnicianDispatched":
                    tech, st = str(r.fields["technician"]), str(r.fields["station"])
                    spb += [(_HEADSETS, f"{tech}/Busy", True, ts),
                            (_HEADSETS, f"{tech}/Job", str(r.fields.get("job", "")), ts),
                            (_HEADSETS, f"{tech}/Station", station_name.get(st, st), ts)]  # fmt: skip
                elif r.name in _TECH_END and "technician" in r.fields:
                    tech = str(r.fields["technician"])
                    spb += [(_HEADSETS, f"{tech}/Busy", False, ts), (_HEADSETS, f"{tech}/Job", "", ts),
                            (_HEADSETS, f"{tech}/Station", "", ts)]  # fmt: skip
        for path, t in changed.items():
            kw = self._derived_power(path)
            if kw is not None and self._power.get(path) != kw:
                self._power[path] = kw
                opcua.append(Sample(t, path, _POWER_TAG, kw, "KWT"))
                spb.append((station_name[path], _POWER_TAG, kw, round(epoch_ms + t * 1000)))
        if opcua:
            self._opcua_ch.send(now, opcua)
        if spb and self.edge is not None:
            self._spb_ch.send(now, spb)
        if vda and self.agents:
            self._vda_ch.send(now, vda)

    def _executing(self, path: str, t: float, executing: bool) -> None:
        since = self._exec_since[path]
        if executing and since is None:
            self._exec_since[path] = t
        elif not executing and since is not None:
            self._exec_acc[path] += t - since
            self._exec_since[path] = None

    def _cycle_done(self, path: str, t: float) -> float:
        """Executing seconds since the previous unit finished (pauses at breaks excluded)."""
        since = self._exec_since[path]
        cycle = self._exec_acc[path] + (t - since if since is not None else 0.0)
        self._exec_acc[path] = 0.0
        if since is not None:
            self._exec_since[path] = t
        return round(cycle, 6)

    def _derived_power(self, path: str) -> float | None:
        item, mode, packml = self._st_state[path]
        klass = self._power_of.get((item, mode, packml), Power.IDLE)
        if klass is None:  # break or off shift: only the calendar tells them apart
            klass = Power.OFF if self._planned == PlannedState.OffShift else Power.IDLE
        return float(self._stage_power[path][klass])

    def _outages(self, ep: LiveEndpoint, link: LiveLink, now: float) -> None:
        for start, end in link.outages_begun(now):
            if end - start <= link.abort_after or end <= now:
                continue
            link.stats.aborts += 1
            log.info("link %s of %s down for %.1f s: aborting the MQTT connection", link.name, ep,
                     end - start)  # fmt: skip
            if ep == "sparkplug" and self.edge is not None:
                self.edge.connection.abort()
            elif ep == "vda5050":
                for agent in self.agents.values():
                    agent.connection.abort()

    async def _deliver(self, now: float) -> None:
        if self.servers is not None:
            for samples in self._opcua_ch.due(now):
                self.summary.opcua_writes += await self.servers.apply_many(samples)
        if self.edge is not None:
            batches = self._spb_ch.due(now)
            for changes in batches:
                for device, metric, value, ts in changes:
                    self.edge.set(device, metric, value, ts)
            if batches:
                await self.edge.flush()
        for records in self._vda_ch.due(now):
            self._to_agents(records)

    # ------------------------------------------------------------------ VDA 5050

    def _to_agents(self, records: list[Record]) -> None:
        from iiotbed.protocols.vda5050.messages import edge, node

        epoch = self._epoch_s
        touched: dict[str, float] = {}
        for r in records:
            name = r.asset.rsplit("/", 1)[-1]
            agent = self.agents.get(name)
            if agent is None:
                continue
            t = epoch + r.t
            if isinstance(r, Sample):
                if r.tag == Tag.BATTERY:
                    agent.update(t, battery=float(r.value or 0.0))
                elif r.tag in (Tag.POSITION_X, Tag.POSITION_Y):
                    p = self._amr_pos.setdefault(name, list(self._home))
                    p[0 if r.tag == Tag.POSITION_X else 1] = float(r.value or 0.0)
                    touched[name] = t
                continue
            if r.name == "AmrTripStart":
                station = str(r.fields["station"])
                sname = self._station_name.get(station, station.rsplit("/", 1)[-1])
                trip = _Trip(f"trip-{r.fields['trip']}", sname)
                self._trips[name] = trip
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
            elif r.name == "AmrTripEnd":
                self._flush_position(name, touched)
                current = self._trips.get(name)
                if current is not None:
                    if ("warehouse", 0) not in current.reached:
                        self._progress(name, current, t, ("warehouse", 0))
                    self._progress(name, current, t, (current.station, 2))
                agent.update(t, driving=False)
            elif r.name == "ChargeStart":
                self._flush_position(name, touched)
                agent.update(t, charging=True, driving=False)
            elif r.name == "ChargeEnd":
                agent.update(t, charging=False)
        for name in list(touched):
            self._flush_position(name, touched)

    def _flush_position(self, name: str, touched: dict[str, float]) -> None:
        t = touched.pop(name, None)
        if t is None:
            return
        x, y = self._amr_pos[name]
        self.agents[name].update(t, position=(x, y))
        trip = self._trips.get(name)
        if trip is not None and (x, y) == tuple(self._warehouse) and not trip.reached:
            self._progress(name, trip, t, ("warehouse", 0))

    def _send_next(self, name: str) -> None:
        queue = self._to_send.get(name)
        if name in self._in_flight or not queue:
            return
        trip, nodes, edges = queue.popleft()
        self._in_flight[name] = trip.order_id
        assert self.master is not None
        self.master.send_order(name, trip.order_id, 0, nodes, edges)

    def _progress(self, name: str, trip: _Trip, t: float, reached: tuple[str, int]) -> None:
        trip.reached.append(reached)
        agent = self.agents[name]
        if agent.order_id == trip.order_id:
            self._report(name, trip, t, reached)
        else:  # the order is still on its way over the broker: report once accepted
            trip.pending.append((t, reached))

    def _report(self, name: str, trip: _Trip, t: float, reached: tuple[str, int]) -> None:
        self.agents[name].update(t, node_reached=reached)
        if reached == (trip.station, 2):  # last node: the order is done, the next may go
            self._open.get(name, {}).pop(trip.order_id, None)
            if self._in_flight.get(name) == trip.order_id:
                del self._in_flight[name]
            self._send_next(name)

    def _order_handler(self, name: str) -> Callable[[Order], None]:
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

    def _action_handler(self, name: str) -> Callable[[Action], bool]:
        amr = self.factory.amr(name)

        def on_action(action: Action) -> bool:
            kind = action.action_type
            if kind == "startPause":
                amr.pause()
            elif kind == "stopPause":
                amr.resume()
            elif kind == "cancelOrder":
                # the simulated delivery cannot be called off: the agent drops the order's
                # remaining nodes (VDA 5050 bookkeeping), the trip itself completes
                pass
            else:
                self._vda_counts[1] += 1
                return False
            self._vda_counts[0] += 1
            return True

        return on_action

    # ------------------------------------------------------------------ Sparkplug commands

    def _on_dcmd(self, device: str | None, metric: str, value: object) -> bool:
        if device is None or metric != _SPEED_METRIC:
            return False
        path = next((p for p, n in self._station_name.items() if n == device), None)
        if path is None or not isinstance(value, float):
            return False
        try:
            self.factory.stations[path].set_speed(value)
        except ValueError as exc:
            log.info("speed setpoint %r for %s refused: %s", value, device, exc)
            return False
        assert self.edge is not None
        self.edge.set(device, _SPEED_METRIC, value, self._clock_ms())
        # show it on the machine's OPC UA SpeedSetpoint too
        self._opcua_ch.send(self.env.now, [Sample(self.env.now, path, _SPEED_METRIC, value)])
        return True

    def _speed_from_opcua(self, path: str, factor: float) -> None:
        """An OPC UA write of SpeedSetpoint: mirror it on the Sparkplug meter's metric
        (a value that came from a DCMD is reported once: the edge skips unchanged values)."""
        if self.edge is not None:
            self.edge.set(self._station_name[path], _SPEED_METRIC, factor, self._clock_ms())


async def run_live(scenario: Scenario, options: LiveOptions,
                   on_ready: Callable[[LiveFactory], None] | None = None) -> LiveSummary:  # fmt: skip
    """Run to the end of the duration (or until cancelled); the summary."""
    live = LiveFactory(scenario, options)
    try:
        async with live:
            if on_ready is not None:
                on_ready(live)
            await live.wait()
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            live._fill_summary()
        raise
    return live.summary
