"""Machines as OPC UA servers: ``MachineServer`` (one endpoint) and ``MachineServers`` (a line).

Usage::

    async with MachineServer.from_scenario(scenario, port=4840) as server:
        await server.apply_many(records)   # telemetry Samples -> node values

Source timestamps carry sim time (``plant.epoch + t``). Commands arrive as OPC UA
method calls and ``SpeedSetpoint`` writes and go to the attached :class:`StationControl`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

from asyncua import Server, ua
from asyncua.server.address_space import NodeData
from asyncua.server.event_generator import EventGenerator
from asyncua.server.user_managers import PermissiveUserManager

from iiotbed._aio import AsyncClosing
from iiotbed.devices.opcua._nodes import (
    FaultBinding,
    MachineNodes,
    StateBinding,
    ValueBinding,
    build_machine,
)
from iiotbed.devices.opcua._nodesets import load_companions
from iiotbed.devices.opcua._queues import QueueGuard
from iiotbed.devices.opcua._security import (
    RoleRuleset,
    Security,
    UserPasswordManager,
    client_validator,
    ensure_certificate,
)
from iiotbed.devices.opcua.spec import MachineSpec, StationControl, machine_specs, namespace_uri
from iiotbed.errors import CommandRefused, ConnectorError
from iiotbed.scenario import Scenario
from iiotbed.telemetry import Quality, Record, Sample, Tag

__all__ = ["MachineServer", "MachineServers", "build_servers"]

_log = logging.getLogger(__name__)

_GOOD = ua.StatusCode(ua.StatusCodes.Good)
_UNCERTAIN = ua.StatusCode(ua.StatusCodes.Uncertain)
_BAD = ua.StatusCode(ua.StatusCodes.Bad)
_NOT_ACTIVE = ua.StatusCode(ua.StatusCodes.BadStateNotActive)  # an inactive sub-state machine
_NULL = ua.Variant(None, ua.VariantType.Null)
_TRUE = ua.Variant(True, ua.VariantType.Boolean)
_FALSE = ua.Variant(False, ua.VariantType.Boolean)
_ALARM_ON, _ALARM_OFF = 800, 200  # OPC UA severities (1-1000) of breakdown / cleared
_INT_TYPES = (ua.VariantType.UInt64, ua.VariantType.UInt32)


class _SharedValue(ua.DataValue):  # type: ignore[misc]
    """A DataValue that is never changed after it is written.

    asyncua deep-copies every written value once per monitored item to guard against
    callers mutating it later; that copy is the largest cost of publishing (20-45 us per
    change). We build a new value for every write, so sharing it is safe.
    """

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, Any]) -> _SharedValue:
        return self


class MachineServer(AsyncClosing):
    """One asyncua server hosting a set of machines under ``Objects/Machines``.

    ``controls`` maps asset path to the station's control object (attach more later with
    :meth:`attach`). The server opens in ``async with`` and closes on exit.
    """

    def __init__(
        self,
        machines: Sequence[MachineSpec],
        *,
        epoch: dt.datetime,
        namespace: str,
        name: str = "line",
        host: str = "127.0.0.1",
        port: int = 4840,
        security: Security | None = None,
        controls: Mapping[str, StationControl] | None = None,
    ) -> None:
        if epoch.tzinfo is None:
            raise ValueError(f"epoch must be timezone-aware, got {epoch.isoformat()}")
        if not machines:
            raise ValueError(f"server {name!r} needs at least one machine")
        self.machines = tuple(machines)
        self.epoch = epoch.astimezone(dt.UTC)
        self.namespace = namespace
        self.name = name
        self.host = host
        self.port = port
        self.security = security or Security()
        self.endpoint = f"opc.tcp://{host}:{port}/iiotbed/"
        self.application_uri = f"{namespace}:opcua:{name}"
        self._controls: dict[str, StationControl] = dict(controls or {})
        self._server: Server | None = None
        self._guard: QueueGuard | None = None
        self.started_at = 0.0  # sim s the initial values are dated (a resumed run: its time)
        self._ns = 0
        self._by_path: dict[str, MachineNodes] = {}
        self._speed_nodes: dict[ua.NodeId, str] = {}
        self._alarms: dict[str, tuple[EventGenerator, EventGenerator]] = {}
        self._lost = 0  # changes dropped by full queues while the server ran before

    @classmethod
    def from_scenario(
        cls,
        scenario: Scenario,
        *,
        stations: Iterable[str] | None = None,
        name: str | None = None,
        host: str = "127.0.0.1",
        port: int = 4840,
        security: Security | None = None,
        controls: Mapping[str, StationControl] | None = None,
    ) -> MachineServer:
        """A server for the scenario's stations (all, or those named in ``stations``)."""
        specs = machine_specs(scenario)
        if stations is not None:
            wanted = set(stations)
            unknown = wanted - {s.name for s in specs}
            if unknown:
                known = ", ".join(s.name for s in specs)
                raise ValueError(
                    f"unknown station(s) {', '.join(sorted(unknown))}; the line has {known}"
                )
            specs = [s for s in specs if s.name in wanted]
        return cls(
            specs,
            epoch=scenario.plant.epoch,
            namespace=namespace_uri(scenario),
            name=name or scenario.plant.line,
            host=host,
            port=port,
            security=security,
            controls=controls,
        )

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        sec = self.security
        users = UserPasswordManager(sec.users) if sec.profile == "secure" else None
        server = Server(user_manager=users or PermissiveUserManager())
        rules: RoleRuleset | None = None
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"iiotbed {self.name}")
        server.product_uri = "urn:iiotbed"
        server.manufacturer_name = "iiotbed"
        await server.set_application_uri(self.application_uri)
        if sec.profile == "secure":
            cert = sec.cert_dir / f"{self.name}.der"
            key = sec.cert_dir / f"{self.name}.pem"
            await ensure_certificate(cert, key, self.application_uri, [self.host])
            await server.load_certificate(cert)
            await server.load_private_key(key)
            rules = RoleRuleset({u: sec.role_of(u) for u in sec.users})
            server.set_security_policy(
                [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt], permission_ruleset=rules
            )
            server.set_identity_tokens([ua.UserNameIdentityToken])
            if sec.trusted_clients is not None:
                server.set_certificate_validator(await client_validator(sec.trusted_clients))
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
            server.set_identity_tokens([ua.AnonymousIdentityToken])
        # ours first: its index stays 2, so NodeIds like ns=2;s=bonder-01/... do not move
        self._ns = await server.register_namespace(self.namespace)
        companions = await load_companions(server)
        for spec in self.machines:
            control = self._controls.get(spec.path)
            speed = control.speed if control is not None else 1.0
            nodes = await build_machine(
                server, self._ns, companions, spec, speed, self._method_factory(spec.path)
            )
            await _stamp_at(server, nodes, self.epoch + dt.timedelta(seconds=self.started_at))
            self._by_path[spec.path] = nodes
            if rules is not None:  # only engineers command a machine
                rules.commands.update(nodes.methods)
                rules.setpoints.add(nodes.speed)
            self._speed_nodes[nodes.speed] = spec.path
            server.set_attribute_value_setter(nodes.speed, self._speed_setter)
            self._alarms[spec.path] = await self._alarm_generators(server, nodes)
        try:
            await server.start()
        except OSError as exc:
            raise ConnectorError(
                f"cannot listen on {self.endpoint}: {exc.strerror or exc}; "
                f"choose another port or stop the process using it",
                endpoint=self.endpoint,
            ) from exc
        self._server, self._guard = server, QueueGuard(server)
        _log.info("OPC UA server %s up with %d machine(s)", self.endpoint, len(self.machines))

    async def close(self) -> None:
        server, self._server = self._server, None
        if self._guard is not None:
            self._lost, self._guard = self.lost, None
        if server is not None:
            await server.stop()

    # ------------------------------------------------------------------ wiring

    @property
    def namespace_index(self) -> int:
        """Index of :attr:`namespace` in this server's namespace array."""
        return self._ns

    @property
    def paths(self) -> list[str]:
        """Asset paths of the machines this server hosts."""
        return [m.path for m in self.machines]

    @property
    def subscriptions(self) -> int:
        """Subscriptions clients hold on this server now (0 while it is closed)."""
        if self._server is None:
            return 0
        return len(self._server.iserver.subscription_service.subscriptions)

    @property
    def lost(self) -> int:
        """Changes a client never got: dropped from its full queue after it took none of
        its notifications for a while (:mod:`~iiotbed.devices.opcua._queues`); else 0."""
        return self._lost + (self._guard.lost if self._guard is not None else 0)

    def attach(self, control: StationControl) -> None:
        """Route this station's method calls and setpoint writes to ``control``."""
        if control.path not in {m.path for m in self.machines}:
            raise ValueError(f"server {self.name!r} hosts no station at {control.path!r}")
        self._controls[control.path] = control

    # ------------------------------------------------------------------ telemetry in

    async def apply(self, record: Record) -> None:
        """Show one record; unknown assets and tags are ignored."""
        await self.apply_many((record,))

    async def apply_many(self, records: Iterable[Record]) -> int:
        """Show records in order; returns how many changed a node."""
        guard = self._guard
        if guard is None:
            raise ConnectorError(
                f"server {self.endpoint} is not running; use it inside 'async with'",
                endpoint=self.endpoint,
            )
        guard.refresh()  # a client (re)subscribed since the last batch
        write = guard.write  # waits for a publish rather than let a full queue drop a change
        epoch = self.epoch
        now = dt.datetime.now(dt.UTC)
        applied = 0
        for rec in records:
            if not isinstance(rec, Sample):
                continue
            nodes = self._by_path.get(rec.asset)
            if nodes is None:
                continue
            binding = nodes.bindings.get(rec.tag)
            if binding is None:
                continue
            ts = epoch + dt.timedelta(seconds=rec.t)
            try:
                if isinstance(binding, ValueBinding):
                    # fast path: no type checks and keeps our SourceTimestamp (limits.md)
                    dv = _datavalue(rec, binding.vtype, ts, now)
                    await write(binding.nodeid, dv)
                    for nid, vtype, value_of in binding.also:  # e.g. PackML speeds
                        await write(nid, _derived(dv, vtype, value_of, ts, now))
                elif isinstance(binding, StateBinding):
                    await self._write_state(binding, rec, ts, now)
                else:
                    await self._write_fault(nodes, binding, rec, ts, now)
            except (TypeError, ValueError, KeyError, OverflowError):
                _log.warning(
                    "ignoring %s/%s = %r: not a valid value", rec.asset, rec.tag, rec.value
                )
                continue
            applied += 1
        return applied

    async def _write_state(
        self, b: StateBinding, rec: Sample, ts: dt.datetime, now: dt.datetime
    ) -> None:
        assert self._guard is not None
        write = self._guard.write
        if rec.quality == Quality.Bad or rec.value is None:
            for nid in (b.text, b.id, b.number):
                await write(nid, _SharedValue(_NULL, _BAD, ts, now))
            for writes in b.extra.values():  # every state writes the same nodes
                for nid, _ in writes:
                    await write(nid, _SharedValue(_NULL, _BAD, ts, now))
                break
            return
        text, sid, number = b.variants[int(rec.value)]  # KeyError outside the enumeration
        status = _UNCERTAIN if rec.quality == Quality.Uncertain else _GOOD
        await write(b.text, _SharedValue(text, status, ts, now))
        await write(b.id, _SharedValue(sid, status, ts, now))
        await write(b.number, _SharedValue(number, status, ts, now))
        for nid, value in b.extra.get(int(rec.value), ()):
            if value is None:
                await write(nid, _SharedValue(_NULL, _NOT_ACTIVE, ts, now))
            else:
                await write(nid, _SharedValue(value, status, ts, now))

    async def _write_fault(
        self, nodes: MachineNodes, b: FaultBinding, rec: Sample, ts: dt.datetime, now: dt.datetime
    ) -> None:
        assert self._guard is not None
        if rec.quality == Quality.Bad or rec.value is None:
            await self._guard.write(b.nodeid, _SharedValue(_NULL, _BAD, ts, now))
            return
        active = bool(rec.value)
        await self._guard.write(b.nodeid, _SharedValue(_TRUE if active else _FALSE, _GOOD, ts, now))
        if active != b.active:
            b.active = active
            await self._trigger_alarm(nodes, active, ts)

    # ------------------------------------------------------------------ alarms

    async def _alarm_generators(
        self, server: Server, nodes: MachineNodes
    ) -> tuple[EventGenerator, EventGenerator]:
        # asyncua delivers an event only to monitored items on its emitting node: emit each
        # alarm from the machine and from the Server object (where UaExpert listens).
        gens = []
        for emitter in (nodes.nodeid, ua.NodeId(ua.ObjectIds.Server)):
            gen = await server.get_event_generator(ua.ObjectIds.AlarmConditionType, emitter)
            ev = gen.event
            ev.SourceNode = nodes.nodeid
            ev.SourceName = nodes.spec.name
            ev.ConditionName = "Breakdown"
            ev.ConditionClassId = ua.NodeId(ua.ObjectIds.BaseConditionClassType)
            setattr(ev, "NodeId", _fault_id(nodes))  # noqa: B010
            gens.append(gen)
        return gens[0], gens[1]

    async def _trigger_alarm(self, nodes: MachineNodes, active: bool, ts: dt.datetime) -> None:
        name = nodes.spec.name
        text = f"{name}: breakdown" if active else f"{name}: breakdown cleared"
        for gen in self._alarms[nodes.spec.path]:
            ev = gen.event
            ev.Severity = _ALARM_ON if active else _ALARM_OFF
            ev.Retain = active
            ev.ActiveState = ua.LocalizedText("Active" if active else "Inactive")
            setattr(ev, "ActiveState/Id", active)
            ev.EnabledState = ua.LocalizedText("Enabled")
            setattr(ev, "EnabledState/Id", True)
            await gen.trigger(time_attr=ts, message=text)

    # ------------------------------------------------------------------ commands in

    def _method_factory(self, path: str) -> Callable[[str], Callable[..., Any]]:
        def factory(command: str) -> Callable[..., Any]:
            async def call(parent: ua.NodeId, *args: ua.Variant) -> Any:
                return self._command(path, command)

            return call

        return factory

    def _command(self, path: str, command: str) -> Any:
        control = self._controls.get(path)
        if control is None:
            return _refuse(ua.StatusCodes.BadNotConnected, f"no simulator attached to {path}")
        try:
            getattr(control, command.lower())()
        except CommandRefused as exc:
            _log.info("%s refused by %s: %s", command, path, exc)
            return _refuse(_status_of(exc), f"{command} refused: {exc}")
        return [ua.Variant(f"{command} accepted", ua.VariantType.String)]

    def _speed_setter(self, node: NodeData, attr: ua.AttributeIds, value: ua.DataValue) -> None:
        # asyncua calls this for Write requests after the type check; raising a status code
        # error refuses the write (the client sees it as the service result).
        path = self._speed_nodes[node.nodeid]
        factor = value.Value.Value if value.Value is not None else None
        if not isinstance(factor, float) or not 0.0 < factor <= 2.0:
            raise ua.UaStatusCodeError(ua.StatusCodes.BadOutOfRange)
        control = self._controls.get(path)
        if control is not None:
            try:
                control.set_speed(factor)
            except CommandRefused as exc:
                _log.info("%s refused by %s: %s", Tag.SPEED_SETPOINT, path, exc)
                raise ua.UaStatusCodeError(_status_of(exc)) from exc
        node.attributes[attr].value = value


def _status_of(refused: CommandRefused) -> int:
    """The one mapping of a refusal to OPC UA: a value out of range, or a state that forbids it."""
    code: int = (ua.StatusCodes.BadOutOfRange if refused.out_of_range
                 else ua.StatusCodes.BadInvalidState)  # fmt: skip
    return code


def _fault_id(nodes: MachineNodes) -> ua.NodeId:
    binding = nodes.bindings[Tag.FAULT]
    assert isinstance(binding, FaultBinding)
    return binding.nodeid


def _refuse(code: int, message: str) -> ua.CallMethodResult:
    result = ua.CallMethodResult()
    result.StatusCode = ua.StatusCode(code)
    result.OutputArguments = [ua.Variant(message, ua.VariantType.String)]
    return result


async def _stamp_at(server: Server, nodes: MachineNodes, when: dt.datetime) -> None:
    """Date a new machine's initial values ``when`` (the epoch, sim time 0): asyncua stamps
    a new node with the wall clock, which the gateway would take for sim time (issue 11)."""
    for b in nodes.bindings.values():
        ids: tuple[ua.NodeId, ...] = (b.nodeid,) if not isinstance(b, StateBinding) else (
            b.text, b.id, b.number, *(n for n, _ in next(iter(b.extra.values()), ())))  # fmt: skip
        if isinstance(b, ValueBinding):
            ids += tuple(n for n, _, _ in b.also)
        for nid in ids:
            dv = server.read_attribute_value(nid)
            await server.write_attribute_value(
                nid, ua.DataValue(dv.Value, dv.StatusCode, when, dt.datetime.now(dt.UTC))
            )


def _datavalue(
    rec: Sample, vtype: ua.VariantType, ts: dt.datetime, now: dt.datetime
) -> ua.DataValue:
    if rec.quality == Quality.Bad or rec.value is None:
        return _SharedValue(_NULL, _BAD, ts, now)
    raw = rec.value
    if isinstance(raw, str):
        raise TypeError(f"a number is expected, got {raw!r}")
    if vtype == ua.VariantType.Boolean:
        return _SharedValue(_TRUE if raw else _FALSE, _status(rec), ts, now)
    value: int | float = int(raw) if vtype in _INT_TYPES else float(raw)
    if isinstance(value, int) and not 0 <= value < 1 << 64:
        # out-of-range integers would only fail later, inside asyncua's publish loop
        raise ValueError(f"a UInt64 counter must be in [0, 2**64), got {value}")
    return _SharedValue(ua.Variant(value, vtype), _status(rec), ts, now)


def _status(rec: Sample) -> ua.StatusCode:
    return _UNCERTAIN if rec.quality == Quality.Uncertain else _GOOD


def _derived(
    dv: ua.DataValue,
    vtype: ua.VariantType,
    value_of: Callable[[float], float],
    ts: dt.datetime,
    now: dt.datetime,
) -> ua.DataValue:
    """A value computed from a written one, with its status and times (null when bad)."""
    if dv.Value.Value is None:
        return _SharedValue(_NULL, dv.StatusCode, ts, now)
    return _SharedValue(ua.Variant(value_of(float(dv.Value.Value)), vtype), dv.StatusCode, ts, now)


class MachineServers(AsyncClosing):
    """Several :class:`MachineServer` opened and closed together, records routed by asset."""

    def __init__(self, servers: Sequence[MachineServer]) -> None:
        self.servers = tuple(servers)
        self._route = {p: s for s in self.servers for p in s.paths}
        self._stack: AsyncExitStack | None = None

    @property
    def endpoints(self) -> list[str]:
        return [s.endpoint for s in self.servers]

    @property
    def subscribed(self) -> bool:
        """Whether every server has at least one subscription (a collector listens)."""
        return all(s.subscriptions > 0 for s in self.servers)

    @property
    def lost(self) -> int:
        """Changes a stalled client's full queues dropped, on all servers."""
        return sum(s.lost for s in self.servers)

    def attach(self, control: StationControl) -> None:
        """Route a station's commands to ``control`` on whichever server hosts it."""
        server = self._route.get(control.path)
        if server is None:
            raise ValueError(f"no server hosts a station at {control.path!r}")
        server.attach(control)

    async def open(self) -> None:
        async with AsyncExitStack() as stack:
            for server in self.servers:
                await stack.enter_async_context(server)
            self._stack = stack.pop_all()

    async def close(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def apply_many(self, records: Iterable[Record]) -> int:
        """Route records to the server hosting their asset; returns nodes changed."""
        if len(self.servers) == 1:
            return await self.servers[0].apply_many(records)
        batches: dict[MachineServer, list[Record]] = {}
        for rec in records:
            server = self._route.get(rec.asset)
            if server is not None:
                batches.setdefault(server, []).append(rec)
        applied = 0
        for server, batch in batches.items():
            applied += await server.apply_many(batch)
        return applied


def build_servers(
    scenario: Scenario,
    *,
    host: str = "127.0.0.1",
    port: int = 4840,
    per_machine: bool = False,
    security: Security | None = None,
    controls: Mapping[str, StationControl] | None = None,
) -> MachineServers:
    """Servers for a scenario: one for the line, or one per machine on consecutive ports."""
    specs = machine_specs(scenario)
    common: dict[str, Any] = {
        "epoch": scenario.plant.epoch,
        "namespace": namespace_uri(scenario),
        "host": host,
        "security": security,
        "controls": controls,
    }
    if not per_machine:
        return MachineServers([MachineServer(specs, name=scenario.plant.line, port=port, **common)])
    return MachineServers(
        [MachineServer([s], name=s.name, port=port + i, **common) for i, s in enumerate(specs)]
    )
