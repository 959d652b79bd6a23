"""The live factory: the simulation paced to wall time behind real protocol endpoints.

:class:`LiveFactory` (an ``async with``) builds one replication of a scenario, the pacer,
the OPC UA machine servers (each station's control attached), and with a broker a
Sparkplug B edge node (energy meters, line counters, AR headsets) and one VDA 5050 agent
per AMR plus the master control the simulation's dispatcher speaks through. After every
advance the new records are routed to the endpoints (:mod:`.routing`), through each
endpoint's link (:mod:`iiotbed.devices.network`). A TaskGroup owns every task; leaving
the block (end of the duration, an error or cancellation) closes every endpoint: NDEATH,
VDA 5050 OFFLINE, OPC UA servers stopped. The body's exception passes through.

With ``options.resume`` a restarted factory continues where the dead one may have
published to, never rewinding (:mod:`.resume`), and the Sparkplug edge node keeps its store
and forward on disk beside the resume file: values it held when the process stopped reach
the host, as historical, after the restarted node's births.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Self

from iiotbed._aio import ExcInfo
from iiotbed.devices.live.announce import announcement, run_topic
from iiotbed.devices.live.commands import Commands
from iiotbed.devices.live.derived import Derived
from iiotbed.devices.live.options import LiveOptions, LiveSummary
from iiotbed.devices.live.resume import (
    ResumePoint,
    edge_store_path,
    new_run_token,
    read_resume,
    write_resume,
)
from iiotbed.devices.live.routing import HEADSETS, LINE_METRICS, RoutePlan, SparkplugChange, route
from iiotbed.devices.live.trips import Trips, visualization_interval
from iiotbed.devices.network import Channel, DevicePresence, LiveLink, endpoint_links
from iiotbed.devices.pacing import Pacer
from iiotbed.devices.sim import Factory
from iiotbed.eventlog import record_to_json
from iiotbed.scenario import LiveEndpoint, Scenario
from iiotbed.telemetry import Record, Sample, Tag

if TYPE_CHECKING:  # the adapters import asyncua and paho: loaded only when the run starts
    from iiotbed.devices.opcua import MachineServers
    from iiotbed.devices.sparkplug import MetricDef, SparkplugEdgeNode
    from iiotbed.devices.vda5050 import AmrAgent
    from iiotbed.devices.vda5050_master import MasterControl

__all__ = ["LiveFactory", "run_live"]

log = logging.getLogger(__name__)

_RELIABLE: dict[str, bool] = {"opcua": True, "sparkplug": False, "vda5050": True}
#: wall s the Primary Host's offline waits for a redundant host's newer online (gateway
#: replicas under one host id) before the edge node ends its session; within its resend window
_HOST_GRACE = 1.0


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
        plant = scenario.plant
        self.group_id = opts.sparkplug_group or f"{plant.enterprise}-{plant.site}"
        self.edge_node_id = opts.edge_node or f"{plant.area}-{plant.line}"
        supply = scenario.supply
        fleet = supply.amr if supply is not None and supply.mode == "amr" else None
        self.manufacturer = opts.vda_manufacturer or (fleet.manufacturer if fleet else "")
        self._station_name = {path: name for _, name, path in scenario.station_paths()}
        # links
        self.links: dict[str, LiveLink] = {}
        for ep, name in endpoint_links(scenario).items():
            self.links[ep] = LiveLink(
                ep, name, scenario.network.links[name], seed=scenario.run.seed,
                replication=opts.replication, reliable=_RELIABLE[ep], abort_after=opts.abort_after,
            )  # fmt: skip
        self._opcua_ch: Channel[list[Sample]] = Channel(self.links.get("opcua"))
        self._spb_ch: Channel[list[SparkplugChange]] = Channel(self.links.get("sparkplug"))
        # Sparkplug devices out of the edge node's reach (a vision station's link down):
        # changes (epoch ms, device, present) due, applied in time order with the data
        self._presence = DevicePresence(
            scenario, replication=opts.replication, abort_after=opts.abort_after
        )
        self._moves: list[tuple[int, str, bool]] = []
        self._vda_ch: Channel[list[Record]] = Channel(self.links.get("vda5050"))
        # routing, derived values, trips, commands
        self._plan = RoutePlan.of(scenario, (a.path for a in self.factory.amrs.values()))
        self._derived = Derived(scenario)
        # endpoints, built in __aenter__
        self.servers: MachineServers | None = None
        self.edge: SparkplugEdgeNode | None = None
        self.master: MasterControl | None = None
        self.agents: dict[str, AmrAgent] = {}
        self._trips = Trips(
            self.agents, lambda: self.master, epoch_s=self._epoch_s,
            warehouse=supply.warehouse_position if supply is not None else (0.0, 0.0),
            home=fleet.battery.charger_position if fleet is not None else (0.0, 0.0),
            station_names=self._station_name,
            stage_positions={path: stage.position for stage, _, path in scenario.station_paths()},
            controls=self.factory.amrs, visualization_interval=visualization_interval(opts.speed),
        )  # fmt: skip
        self.commands = Commands(
            self.factory.stations, self._station_name, edge=lambda: self.edge,
            to_opcua=lambda s: self._opcua_ch.send(s.t, [s]), clock_ms=self._clock_ms,
            now=lambda: float(self.env.now),
        )  # fmt: skip
        self._stack: AsyncExitStack | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._events_fp: IO[str] | None = None
        self._finished = False
        # resume: the sim time the file says we may have published to, and what to restate
        self._mark = -float("inf") if opts.resume is not None else float("inf")
        self._mark_ahead = max(1.0, opts.speed if opts.speed is not None else 600.0)  # ~1 wall s
        self._restate_opcua: list[Sample] = []
        self._restate_spb: list[SparkplugChange] = []
        self._run_token = new_run_token()  # a resumed run takes its file's

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
        from iiotbed.devices.sim.line import headcount_roles
        from iiotbed.devices.sparkplug import MetricDef

        sc = self.scenario
        devices: dict[str, list[MetricDef]] = {}
        line = [MetricDef(t, "UInt64") for t in LINE_METRICS]
        line.append(MetricDef(Tag.PLANNED_STATE, "Int32"))
        roles = headcount_roles(self.factory._ctx)
        line += [MetricDef(Tag.HEADCOUNT_PREFIX + r, "Int32", unit="C62") for r in roles]
        devices["line"] = line
        for _, name, _path in sc.station_paths():
            devices[name] = [
                MetricDef(Tag.ENERGY, "Double", unit="KWH"),
                MetricDef(Tag.POWER, "Double", unit="KWT"),
                MetricDef(Tag.SPEED_SETPOINT, "Double", writable=True),
            ]
        heads = [MetricDef(Tag.BUSY, "Int32", unit="C62")]
        for i in range(sc.technicians.count):
            tech = f"tech-{i + 1:02d}"
            heads += [MetricDef(f"{tech}/Busy", "Boolean"), MetricDef(f"{tech}/Job", "String"),
                      MetricDef(f"{tech}/Station", "String")]  # fmt: skip
        devices[HEADSETS] = heads
        return devices

    async def __aenter__(self) -> Self:
        from iiotbed.devices.opcua import build_servers

        opts = self.options
        resumed = False
        if opts.resume is not None:
            resumed = await self._catch_up(opts.resume)
            await self._write_mark(self.now)  # ahead of the first thing published
        async with AsyncExitStack() as stack:
            if opts.events is not None:
                # opening and writing a file blocks: done in a worker thread; a resumed run
                # goes on with the log its first process wrote
                self._events_fp = await asyncio.to_thread(_open_events, opts.events, resumed)
                stack.push_async_callback(self._close_events)
            self.servers = build_servers(
                self.scenario, host=opts.host, port=opts.opcua_port,
                per_machine=opts.opcua_layout == "machine", security=opts.security,
                controls=self.commands.controls(),
            )  # fmt: skip
            for server in self.servers.servers:
                server.started_at = self.now  # a resumed run dates nothing before its start
            await stack.enter_async_context(self.servers)
            if self._restate_opcua:
                # at once, before a collector can have subscribed (that takes several round
                # trips): it never sees the servers' start-up values, dated t = 0
                self.summary.opcua_writes += await self.servers.apply_many(self._restate_opcua)
            if opts.broker is not None:
                await self._open_mqtt(stack, opts.broker)
            self._tg = tg = asyncio.TaskGroup()
            await tg.__aenter__()
            # left as on a normal exit (__aexit__ cancels the run task first): a TaskGroup
            # handed the body's exception re-raises it wrapped in an ExceptionGroup
            stack.push_async_callback(tg.__aexit__, None, None, None)
            self._run_task = tg.create_task(self._run(), name="iiotbed-live-pacer")
            self._stack = stack.pop_all()  # opened: __aexit__ closes it
        return self

    async def _open_mqtt(self, stack: AsyncExitStack, broker: str) -> None:
        from iiotbed.devices.sparkplug import SparkplugEdgeNode
        from iiotbed.devices.vda5050 import AmrAgent
        from iiotbed.devices.vda5050_master import MasterControl

        opts = self.options
        self.edge = SparkplugEdgeNode(
            broker, self.group_id, self.edge_node_id, devices=self._sparkplug_devices(),
            primary_host_id=opts.primary_host, on_command=self.commands.on_dcmd,
            clock=self._clock_ms, client_id=f"iiotbed-{self.group_id}-{self.edge_node_id}",
            host_grace=_HOST_GRACE,
            store_path=edge_store_path(opts.resume) if opts.resume is not None else None,
            store_scope=f"{self.scenario.name}|{self.scenario.run.seed}|{opts.replication}|"
                        f"{self._run_token}",
        )  # fmt: skip
        # the run, for the gateways (every replica the same run id: .announce)
        self.edge.announce(run_topic(self.group_id, self.edge_node_id),
                           announcement(self.scenario.name, opts.replication, self._run_token))  # fmt: skip
        await self._move_devices(self.now)  # a resumed run: who is away at its start
        for device, metric, value, ts in self._restate_spb:  # in the first NBIRTH
            self.edge.set(device, metric, value, ts)
        for path, name in self._station_name.items():
            self.edge.set(name, Tag.SPEED_SETPOINT, self.factory.stations[path].speed,
                          self._clock_ms())  # fmt: skip
        await stack.enter_async_context(self.edge)
        if not self.factory.amrs:
            return
        self.master = MasterControl(broker, self.manufacturer, clock=self._clock_s,
                                    client_id=f"iiotbed-master-{self.manufacturer}")  # fmt: skip
        await stack.enter_async_context(self.master)
        for name in self.factory.amrs:
            agent = AmrAgent(
                broker, self.manufacturer, name, on_order=self._trips.order_handler(name),
                on_instant_action=self.commands.action_handler(
                    self.factory.amr(name), order_id=self._trips.order_of(name)),
                position=self._trips.home, clock=self._clock_s,
                client_id=f"iiotbed-{self.manufacturer}-{name}",
            )  # fmt: skip
            await stack.enter_async_context(agent)
            self.agents[name] = agent

    async def __aexit__(self, *exc_info: *ExcInfo) -> bool | None:
        stack, self._stack = self._stack, None
        if stack is None:
            return None
        task = self._run_task
        if task is not None and not task.done():
            task.cancel()
        try:
            # the body's exception goes through the stack, the servers and clients see it
            return await stack.__aexit__(*exc_info)
        finally:
            self._fill_summary()
            if self._finished and self.options.resume is not None:
                # the run is complete: what the edge node still holds belongs to no next start
                await asyncio.to_thread(_remove_store, edge_store_path(self.options.resume))

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
        await self._forget_resume()
        if self.edge is not None:  # complete: a gateway started now waits for the next run
            self.edge.announce(run_topic(self.group_id, self.edge_node_id), b"")
        self._fill_summary()

    # ------------------------------------------------------------------ resume

    async def _catch_up(self, path: Path) -> bool:
        """Run unpaced to the resume file's time, publishing nothing; True if resumed."""
        sc, rep = self.scenario, self.options.replication
        point = await asyncio.to_thread(read_resume, path)  # file I/O blocks
        if point is None:
            return False
        point.check(sc.name, sc.run.seed, rep, path)
        self._run_token = point.run
        until = min(point.t, self.duration)
        # the pure simulation, nothing else touches it yet: CPU-bound, so off the loop
        await asyncio.to_thread(self.factory.run, until)
        batch = self._new[:]
        self._new.clear()
        out = route(batch, self._plan, self._derived)  # moves the derived values along
        # the state reached, each value once, dated at the resume time: nothing older than
        # what the dead process may have published goes out (VDA 5050 trips start afresh)
        last: dict[tuple[str, str], Sample] = {(r.asset, r.tag): r for r in out.opcua}
        self._restate_opcua = [dc_replace(r, t=until) for r in last.values()]
        ts = round((self._epoch_s + until) * 1000)
        spb = {(d, m): v for d, m, v, _ in out.sparkplug}
        self._restate_spb = [(d, m, v, ts) for (d, m), v in spb.items()]
        log.info("resumed from %s at sim time %.3f s (%d records replayed unpublished)",
                 path, until, len(batch))  # fmt: skip
        return True

    async def _write_mark(self, now: float) -> None:
        """Move the resume file ahead of ``now`` before anything at ``now`` is published."""
        path = self.options.resume
        if path is None or now < self._mark:
            return
        sc = self.scenario
        self._mark = now + self._mark_ahead
        point = ResumePoint(sc.name, sc.run.seed, self.options.replication, self._mark,
                            self._run_token)  # fmt: skip
        await asyncio.to_thread(write_resume, path, point)  # file I/O blocks

    async def _forget_resume(self) -> None:
        path = self.options.resume
        if path is not None:  # the run is complete: the next start is a new run from t = 0
            await asyncio.to_thread(path.unlink, missing_ok=True)

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
        stations, vda = self.commands.station_counts, self.commands.vda_counts
        accepted, refused = stations[0] + vda[0], stations[1] + vda[1]
        if self.edge is not None:
            accepted += self.edge.stats.commands_accepted
            refused += self.edge.stats.commands_refused + self.edge.stats.malformed
        for a in self.agents.values():
            refused += a.stats.invalid_messages + a.stats.orders_rejected
        s.commands_accepted, s.commands_refused = accepted, refused
        s.links = {f"{ep} ({lk.name})": lk.stats for ep, lk in self.links.items()}

    # ------------------------------------------------------------------ delivery

    async def _on_advance(self, now: float) -> None:
        if now >= self._mark:
            await self._write_mark(now)
        batch = self._new[:]
        self._new.clear()  # in place: the factory's sink appends to this list
        if batch:
            self._send(now, batch)
        else:
            self._send_vda(now, [])
        for ep in ("sparkplug", "vda5050"):
            link = self.links.get(ep)
            if link is not None:
                self._outages(ep, link, now)
        await self._deliver(now)

    def _send(self, now: float, batch: list[Record]) -> None:
        self.summary.records += len(batch)
        if self._events_fp is not None:
            # a write into the file object's buffer; the OS write happens when it fills
            self._events_fp.write("".join(record_to_json(r) + "\n" for r in batch))
        out = route(batch, self._plan, self._derived)
        if out.opcua:
            self._opcua_ch.send(now, out.opcua)
        if out.sparkplug and self.edge is not None:
            self._spb_ch.send(now, out.sparkplug)
        self._send_vda(now, out.vda)

    def _send_vda(self, now: float, records: list[Record]) -> None:
        if self.agents:  # with the AMRs' positions along the legs they drive
            records = self._trips.along_legs(now, records)
            if records:
                self._vda_ch.send(now, records)

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
            moves = self._moves
            self._due_moves(now)
            if moves:
                # a device leaves or returns in this stretch: each change goes in on the
                # right side of it, so in time order (a derived tag, e.g. Power, comes after
                # the counters of later instants in a batch)
                ordered = sorted((c for changes in batches for c in changes), key=_change_time)
                for device, metric, value, ts in ordered:
                    if moves and moves[0][0] <= ts:
                        await self._move_devices(now, ts)
                    self.edge.set(device, metric, value, ts)
            else:
                for changes in batches:
                    for device, metric, value, ts in changes:
                        self.edge.set(device, metric, value, ts)
            if batches:
                await self.edge.flush()
            await self._move_devices(now)
        for records in self._vda_ch.due(now):
            self._trips.apply(records)

    async def _move_devices(self, now: float, until_ms: int | None = None) -> None:
        """DDEATH/DBIRTH of the devices that left or came back up to ``until_ms`` (default:
        ``now``), each after the data before it."""
        edge = self.edge
        if edge is None:
            return
        self._due_moves(now)
        limit = self._ms_of(min(now, self.duration)) if until_ms is None else until_ms
        while self._moves and self._moves[0][0] <= limit:
            ts, device, present = self._moves.pop(0)
            if present:
                await edge.device_returned(device, ts)
            else:
                await edge.device_left(device, ts)
            log.info("Sparkplug device %s %s at %d ms (its link)", device,
                     "back" if present else "out of reach", ts)  # fmt: skip

    def _due_moves(self, now: float) -> None:
        due = self._presence.due(min(now, self.duration))
        self._moves += [(self._ms_of(t), d, present) for t, d, present in due]

    def _ms_of(self, t: float) -> int:
        return round((self._epoch_s + t) * 1000)


def _change_time(change: tuple[str, str, object, int]) -> int:
    return change[3]


def _remove_store(path: Path) -> None:
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        p.unlink(missing_ok=True)


def _open_events(path: Path, resumed: bool) -> IO[str]:
    """The event log for writing; a resumed run appends, after cutting a line the killed
    process left half-written (so the log still reads line by line)."""
    if not resumed or not path.exists():
        return path.open("w", encoding="utf-8")
    with path.open("rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
    return path.open("a", encoding="utf-8")


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
