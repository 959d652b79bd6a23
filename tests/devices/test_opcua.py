"""OPC UA machine servers, checked with a real asyncua client over a local socket."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, Node, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography import x509

import iiotbed.devices.opcua as opcua
from iiotbed._yaml import load_located
from iiotbed.devices.opcua import MachineServer, Security, build_servers, ensure_certificate
from iiotbed.errors import CommandRefused, ConnectorError
from iiotbed.scenario import Scenario, load_scenario, scenario_from_dict
from iiotbed.telemetry import ItemState, OperationMode, PackMLState, Quality, Sample, Tag

ROOT = Path(__file__).resolve().parents[2]
SINGLE = ROOT / "scenarios" / "single-machine.yaml"
LINE = ROOT / "scenarios" / "tcl-huizhou-5g.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), timeout=60))  # type: ignore[arg-type]


class FakeControl:
    """Records commands; refuses those in ``refuse`` like a station in the wrong state."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.speed = 1.0
        self.calls: list[Any] = []
        self.refuse: set[str] = set()

    def _do(self, name: str) -> None:
        if name in self.refuse:
            raise CommandRefused("not allowed in state Held", target=self.path, command=name)
        self.calls.append(name)

    def start(self) -> None:
        self._do("start")

    def stop(self) -> None:
        self._do("stop")

    def hold(self) -> None:
        self._do("hold")

    def unhold(self) -> None:
        self._do("unhold")

    def reset(self) -> None:
        self._do("reset")

    def set_speed(self, factor: float) -> None:
        if "set_speed" in self.refuse:
            raise CommandRefused("not allowed in state Held", target=self.path, command="set_speed")
        if not 0 < factor <= 2:
            raise CommandRefused(f"speed factor must be in (0, 2], got {factor}",
                                 target=self.path, command="set_speed", out_of_range=True)  # fmt: skip
        self.speed = factor
        self.calls.append(("set_speed", factor))


def machine_node(client: Client, server: MachineServer, station: str, *path: str) -> Node:
    return client.get_node(ua.NodeId("/".join((station, *path)), server.namespace_index))


@contextlib.asynccontextmanager
async def serving(scenario: Scenario, **kwargs: Any) -> AsyncIterator[tuple[MachineServer, Client]]:
    """A running server for the scenario on a free port and a client connected to it."""
    async with (
        MachineServer.from_scenario(scenario, port=free_port(), **kwargs) as server,
        Client(server.endpoint) as client,
    ):
        yield server, client


async def browse_machines(client: Client, server: MachineServer) -> dict[str, Node]:
    # the Machinery Machines folder (OPC 40001-1), in the Machinery namespace
    machinery = await client.get_namespace_index("http://opcfoundation.org/UA/Machinery/")
    folder = await client.nodes.objects.get_child(f"{machinery}:Machines")
    return {(await n.read_browse_name()).Name: n for n in await folder.get_children()}


def test_public_api_is_listed() -> None:
    for name in opcua.__all__:
        assert hasattr(opcua, name), name
    assert {"MachineServer", "build_servers", "Security", "StationControl"} <= set(opcua.__all__)


def test_fake_control_satisfies_protocol() -> None:
    assert isinstance(FakeControl("a/b"), opcua.StationControl)


def test_single_machine_identification() -> None:
    scenario = load_scenario(SINGLE)

    async def body() -> None:
        async with MachineServer.from_scenario(scenario, port=free_port()) as server:
            assert server.endpoint.startswith("opc.tcp://127.0.0.1:")
            assert server.endpoint.endswith("/iiotbed/")
            async with Client(server.endpoint) as client:
                ns = await client.get_namespace_index("urn:iiotbed:iiotbed:lab")
                assert ns == server.namespace_index
                machines = await browse_machines(client, server)
                assert sorted(machines) == ["bonder-01"]
                di = await client.get_namespace_index("http://opcfoundation.org/UA/DI/")
                ident = await machines["bonder-01"].get_child(f"{di}:Identification")
                manufacturer = await (await ident.get_child(f"{di}:Manufacturer")).read_value()
                model = await (await ident.get_child(f"{di}:Model")).read_value()
                uri = await (await ident.get_child(f"{di}:ProductInstanceUri")).read_value()
                serial = await (await ident.get_child(f"{di}:SerialNumber")).read_value()
                path = await (await ident.get_child(f"{ns}:AssetPath")).read_value()
                assert path == scenario.station_paths()[0][2]
                assert manufacturer.Text == "Example Bonding Co."
                assert model.Text == "ACF-200"
                assert uri == "88.999.1/bonder-01"
                assert serial and isinstance(serial, str)
                # Identification is an AddIn of the machine (OPC 40001-1), as are the
                # components and (for clients browsing the machine) the state machines
                refs = await machines["bonder-01"].get_references(
                    refs=ua.ObjectIds.HasAddIn, direction=ua.BrowseDirection.Forward
                )
                assert [r.BrowseName.Name for r in refs] == [
                    "Identification",
                    "MachineComponents",
                    "MachineryItemState",
                    "MachineryOperationMode",
                ]

    run(body)


def test_line_lists_every_station_with_units() -> None:
    scenario = load_scenario(LINE)
    expected = [name for _stage, name, _path in scenario.station_paths()]

    async def body() -> None:
        async with serving(scenario) as (server, client):
            machines = await browse_machines(client, server)
            assert sorted(machines) == sorted(expected)
            for stage, name, _path in scenario.station_paths():
                ns = server.namespace_index
                m = machines[name]
                di = await client.get_namespace_index("http://opcfoundation.org/UA/DI/")
                ident = await m.get_child(f"{di}:Identification")
                manu = await (await ident.get_child(f"{di}:Manufacturer")).read_value()
                assert manu.Text == (stage.manufacturer or scenario.plant.manufacturer)
                ct = await m.get_child([f"{ns}:Monitoring", f"{ns}:CycleTime"])
                eu = await (await ct.get_child("0:EngineeringUnits")).read_value()
                rng = await (await ct.get_child("0:EURange")).read_value()
                assert eu.UnitId == (ord("S") << 16) | (ord("E") << 8) | ord("C")
                assert eu.NamespaceUri == "http://www.opcfoundation.org/UA/units/un/cefact"
                assert rng.Low == 0 and rng.High > max(
                    p.ideal_cycle_time[stage.name] for p in scenario.products
                )
                if stage.degradation is not None:
                    vib = await m.get_child(
                        [f"{ns}:Monitoring", f"{ns}:{stage.degradation.signal}"]
                    )
                    assert (await vib.read_type_definition()) == ua.NodeId(
                        ua.ObjectIds.AnalogUnitRangeType
                    )

    run(body)


def test_samples_show_with_sim_source_timestamps() -> None:
    scenario = load_scenario(SINGLE)
    ((_stage, station, path),) = scenario.station_paths()
    epoch = scenario.plant.epoch

    async def body() -> None:
        async with MachineServer.from_scenario(scenario, port=free_port()) as server:
            samples = [
                Sample(12.5, path, Tag.ITEM_STATE, int(ItemState.Executing)),
                Sample(12.5, path, Tag.OPERATION_MODE, int(OperationMode.Processing)),
                Sample(13.0, path, Tag.PACKML_STATE, int(PackMLState.Execute)),
                Sample(40.25, path, Tag.PROCESSED, 17),
                Sample(41.0, path, Tag.DEFECTIVE, 2),
                Sample(42.0, path, Tag.ENERGY, 3.75, unit="KWH"),
                Sample(43.0, path, "Vibration", 2.5, unit="MMS"),
                Sample(44.0, path, "NoSuchTag", 1),
                Sample(44.0, "other/asset", Tag.PROCESSED, 99),
                # invalid values are skipped, not shown and not fatal
                Sample(45.0, path, Tag.PROCESSED, "lots"),
                Sample(45.0, path, Tag.DEFECTIVE, -1),
                Sample(45.0, path, Tag.FAILURES, 1 << 64),
                Sample(45.0, path, Tag.ITEM_STATE, 99),
                Sample(46.0, path, "CycleTime", None, quality=Quality.Bad),
                Sample(47.0, path, "Power", 4.5, quality=Quality.Uncertain),
            ]
            assert await server.apply_many(samples) == 9
            async with Client(server.endpoint) as client:

                async def read(*p: str) -> ua.DataValue:
                    return await machine_node(client, server, station, *p).read_data_value(
                        raise_on_bad_status=False
                    )

                state = await read("MachineryItemState", "CurrentState")
                assert state.Value.Value.Text == "Executing"
                assert state.SourceTimestamp == epoch + dt.timedelta(seconds=12.5)
                number = await read("MachineryItemState", "CurrentState", "Number")
                assert number.Value.Value == 3
                mode = await read("MachineryOperationMode", "CurrentState")
                assert mode.Value.Value.Text == "Processing"
                packml = await read("State", "CurrentState", "Number")
                assert packml.Value.Value == int(PackMLState.Execute)
                assert packml.SourceTimestamp == epoch + dt.timedelta(seconds=13)
                processed = await read("OperationCounters", Tag.PROCESSED)
                assert processed.Value.Value == 17
                assert processed.Value.VariantType == ua.VariantType.UInt64
                assert processed.SourceTimestamp == epoch + dt.timedelta(seconds=40.25)
                assert (await read("OperationCounters", Tag.DEFECTIVE)).Value.Value == 2
                energy = await read("OperationCounters", Tag.ENERGY)
                assert energy.Value.Value == pytest.approx(3.75)
                vib = await read("Monitoring", "Vibration")
                assert vib.Value.Value == pytest.approx(2.5)
                assert vib.SourceTimestamp == epoch + dt.timedelta(seconds=43)
                assert (await read("OperationCounters", Tag.PROCESSED)).Value.Value == 17
                assert (await read("MachineryItemState", "CurrentState", "Number")).Value.Value == 3
                cycle = await read("Monitoring", "CycleTime")
                assert cycle.StatusCode.is_bad() and cycle.Value.Value is None
                assert cycle.SourceTimestamp == epoch + dt.timedelta(seconds=46)
                power = await read("Monitoring", "Power")
                assert power.StatusCode.is_uncertain() and power.Value.Value == 4.5

    run(body)


def test_subscription_receives_changes() -> None:
    scenario = load_scenario(SINGLE)
    ((_stage, station, path),) = scenario.station_paths()
    epoch = scenario.plant.epoch

    class Handler:
        def __init__(self) -> None:
            self.got: list[tuple[Any, dt.datetime]] = []
            self.event = asyncio.Event()

        def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
            self.got.append((val, data.monitored_item.Value.SourceTimestamp))
            if val == 3:
                self.event.set()

    async def body() -> None:
        async with serving(scenario) as (server, client):
            handler = Handler()
            sub = await client.create_subscription(50, handler)
            node = machine_node(client, server, station, "OperationCounters", Tag.PROCESSED)
            await sub.subscribe_data_change(node, queuesize=10)
            await asyncio.sleep(0.2)
            for i in (1, 2, 3):
                await server.apply(Sample(100.0 + i, path, Tag.PROCESSED, i))
            await asyncio.wait_for(handler.event.wait(), 5)
            values = [v for v, _ in handler.got]
            assert values[-3:] == [1, 2, 3]
            assert handler.got[-1][1] == epoch + dt.timedelta(seconds=103)

    run(body)


def test_methods_reach_the_control_object() -> None:
    scenario = _three_stations()
    (_s, station, path), (_s2, other, _p2) = scenario.station_paths()[:2]

    async def body() -> None:
        control = FakeControl(path)
        async with serving(scenario, controls={path: control}) as (server, client):
            machine = machine_node(client, server, station)
            ns = server.namespace_index
            for name in ("Stop", "Start", "Hold", "Unhold", "Reset"):
                out = await machine.call_method(f"{ns}:{name}")
                assert out == f"{name} accepted"
            assert control.calls == ["stop", "start", "hold", "unhold", "reset"]
            control.refuse.add("start")
            with pytest.raises(ua.UaStatusCodeError) as err:
                await machine.call_method(f"{ns}:Start")
            assert err.value.code == ua.StatusCodes.BadInvalidState
            assert control.calls[-1] == "reset"
            # a station without a control object refuses, and the server keeps serving
            with pytest.raises(ua.UaStatusCodeError) as err:
                await machine_node(client, server, other).call_method(f"{ns}:Stop")
            assert err.value.code == ua.StatusCodes.BadNotConnected
            assert (await machine.read_browse_name()).Name == station
            assert control.calls == ["stop", "start", "hold", "unhold", "reset"]

    run(body)


def test_speed_setpoint_writes() -> None:
    scenario = load_scenario(SINGLE)
    ((_stage, station, path),) = scenario.station_paths()

    async def body() -> None:
        control = FakeControl(path)
        control.speed = 0.8
        async with serving(scenario, controls={path: control}) as (server, client):
            node = machine_node(client, server, station, "SpeedSetpoint")
            assert await node.read_value() == pytest.approx(0.8)
            await node.write_value(ua.Variant(1.5, ua.VariantType.Double))
            assert control.calls == [("set_speed", 1.5)]
            assert await node.read_value() == pytest.approx(1.5)
            for bad in (0.0, -1.0, 2.5, float("nan")):
                with pytest.raises(ua.UaStatusCodeError) as err:
                    await node.write_value(ua.Variant(bad, ua.VariantType.Double))
                assert err.value.code == ua.StatusCodes.BadOutOfRange
            with pytest.raises(ua.UaStatusCodeError) as err:
                await node.write_value(ua.Variant("fast", ua.VariantType.String))
            assert err.value.code == ua.StatusCodes.BadTypeMismatch
            assert control.calls == [("set_speed", 1.5)]
            assert await node.read_value() == pytest.approx(1.5)
            # a value in range that the station refuses in its present state
            control.refuse.add("set_speed")
            with pytest.raises(ua.UaStatusCodeError) as err:
                await node.write_value(ua.Variant(0.5, ua.VariantType.Double))
            assert err.value.code == ua.StatusCodes.BadInvalidState
            assert await node.read_value() == pytest.approx(1.5)
            control.refuse.clear()
            rng = await (await node.get_child("0:EURange")).read_value()
            assert (rng.Low, rng.High) == (0.0, 2.0)

    run(body)


def test_breakdown_raises_and_clears_alarm() -> None:
    scenario = load_scenario(SINGLE)
    ((_stage, station, path),) = scenario.station_paths()
    epoch = scenario.plant.epoch

    class Handler:
        def __init__(self) -> None:
            self.events: list[Any] = []
            self.count = asyncio.Event()

        def event_notification(self, event: Any) -> None:
            self.events.append(event)
            if len(self.events) >= 2:
                self.count.set()

    async def body() -> None:
        async with serving(scenario) as (server, client):
            machine = machine_node(client, server, station)
            on_machine, on_server = Handler(), Handler()
            alarm_type = client.get_node(ua.ObjectIds.AlarmConditionType)
            sub1 = await client.create_subscription(50, on_machine)
            await sub1.subscribe_events(machine, alarm_type)
            sub2 = await client.create_subscription(50, on_server)
            await sub2.subscribe_events(client.nodes.server, alarm_type)
            await asyncio.sleep(0.2)
            await server.apply_many(
                [
                    Sample(3600.0, path, Tag.FAULT, 0),  # no change: no event
                    Sample(7200.0, path, Tag.FAULT, 1),
                    Sample(7300.0, path, Tag.FAULT, 1),  # still down: no event
                    Sample(7800.0, path, Tag.FAULT, 0),
                ]
            )
            for h in (on_machine, on_server):
                await asyncio.wait_for(h.count.wait(), 5)
                await asyncio.sleep(0.2)
                assert len(h.events) == 2
                raised, cleared = h.events
                assert raised.Severity > cleared.Severity
                assert getattr(raised, "ActiveState/Id") is True
                assert getattr(cleared, "ActiveState/Id") is False
                assert raised.Time == epoch + dt.timedelta(seconds=7200)
                assert cleared.Time == epoch + dt.timedelta(seconds=7800)
                assert raised.SourceName == station
                assert "breakdown" in raised.Message.Text
            fault = machine_node(client, server, station, "Monitoring", Tag.FAULT)
            assert await fault.read_value() is False

    run(body)


def test_secure_profile(tmp_path: Path) -> None:
    scenario = load_scenario(SINGLE)
    ((_stage, station, _path),) = scenario.station_paths()
    security = Security("secure", users={"operator": "s3cret"}, cert_dir=tmp_path / "pki")
    client_cert, client_key = tmp_path / "client.der", tmp_path / "client.pem"
    client_uri = "urn:iiotbed:test:client"

    async def secure_client(server: MachineServer, user: str | None, pw: str | None) -> Client:
        client = Client(server.endpoint)
        client.application_uri = client_uri
        if user is not None:
            client.set_user(user)
        if pw is not None:
            client.set_password(pw)
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            str(client_cert),
            str(client_key),
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
        return client

    async def body() -> None:
        await ensure_certificate(client_cert, client_key, client_uri, client=True)
        async with MachineServer.from_scenario(
            scenario, port=free_port(), security=security
        ) as server:
            cert = x509.load_der_x509_certificate((tmp_path / "pki" / "line-1.der").read_bytes())
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert "127.0.0.1" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
            assert server.application_uri in san.get_values_for_type(x509.UniformResourceIdentifier)

            endpoints = await Client(server.endpoint).connect_and_get_server_endpoints()
            assert {(e.SecurityPolicyUri, e.SecurityMode) for e in endpoints} == {
                (SecurityPolicyBasic256Sha256.URI, ua.MessageSecurityMode.SignAndEncrypt)
            }

            client = await secure_client(server, "operator", "s3cret")
            async with client:
                machine = machine_node(client, server, station)
                assert (await machine.read_browse_name()).Name == station

            for user, pw in ((None, None), ("operator", "wrong"), ("intruder", "s3cret")):
                client = await secure_client(server, user, pw)
                with pytest.raises(ua.UaStatusCodeError):
                    await client.connect()
                await client.disconnect()

            plain = Client(server.endpoint)
            with pytest.raises(ua.UaError):
                await plain.connect()
            await plain.disconnect()

    run(body)


def test_secure_profile_with_trusted_clients(tmp_path: Path) -> None:
    scenario = load_scenario(SINGLE)
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    security = Security(
        "secure", users={"u": "p"}, cert_dir=tmp_path / "pki", trusted_clients=trusted
    )

    async def connect(server: MachineServer, name: str) -> bool:
        client = Client(server.endpoint)
        client.application_uri = f"urn:iiotbed:test:{name}"
        client.set_user("u")
        client.set_password("p")
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            str(tmp_path / f"{name}.der"),
            str(tmp_path / f"{name}.pem"),
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
        try:
            await client.connect()
        except ua.UaStatusCodeError as exc:
            assert exc.code == ua.StatusCodes.BadCertificateUntrusted
            return False
        finally:
            await client.disconnect()
        return True

    async def body() -> None:
        for name in ("known", "stranger"):
            await ensure_certificate(
                tmp_path / f"{name}.der",
                tmp_path / f"{name}.pem",
                f"urn:iiotbed:test:{name}",
                client=True,
            )
        (trusted / "known.der").write_bytes((tmp_path / "known.der").read_bytes())
        async with MachineServer.from_scenario(
            scenario, port=free_port(), security=security
        ) as srv:
            assert await connect(srv, "known")
            assert not await connect(srv, "stranger")

    run(body)


def test_certificate_is_reused(tmp_path: Path) -> None:
    cert, key = tmp_path / "s.der", tmp_path / "s.pem"

    async def body() -> None:
        await ensure_certificate(cert, key, "urn:iiotbed:a:b:opcua:line-1", ["10.1.2.3", "edge"])
        first = cert.read_bytes()
        await ensure_certificate(cert, key, "urn:iiotbed:a:b:opcua:line-1", ["10.1.2.3", "edge"])
        assert cert.read_bytes() == first
        parsed = x509.load_der_x509_certificate(first)
        san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "edge" in san.get_values_for_type(x509.DNSName)
        assert "10.1.2.3" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
        # a certificate for another application is replaced
        await ensure_certificate(cert, key, "urn:iiotbed:a:b:opcua:line-2")
        assert cert.read_bytes() != first

    run(body)


def _three_stations() -> Scenario:
    data = load_located(SINGLE).data
    data["line"]["stages"][0]["stations"] = 3
    return scenario_from_dict(data)


def test_per_machine_layout() -> None:
    scenario = _three_stations()
    base = free_port()
    group = build_servers(scenario, port=base, per_machine=True)
    assert group.endpoints == [f"opc.tcp://127.0.0.1:{base + i}/iiotbed/" for i in range(3)]
    (_s, station, path) = scenario.station_paths()[2]

    async def body() -> None:
        async with group:
            assert await group.apply_many([Sample(5.0, path, Tag.PROCESSED, 4)]) == 1
            for server, (_stage, name, _p) in zip(
                group.servers, scenario.station_paths(), strict=True
            ):
                async with Client(server.endpoint) as client:
                    assert sorted(await browse_machines(client, server)) == [name]
            async with Client(group.servers[2].endpoint) as client:
                node = machine_node(
                    client, group.servers[2], station, "OperationCounters", Tag.PROCESSED
                )
                assert await node.read_value() == 4
                control = FakeControl(path)
                group.attach(control)  # after start: commands reach it from now on
                machine = machine_node(client, group.servers[2], station)
                await machine.call_method(f"{group.servers[2].namespace_index}:Hold")
                assert control.calls == ["hold"]
            with pytest.raises(ValueError, match="no server hosts"):
                group.attach(FakeControl("elsewhere/x"))

    run(body)


def test_line_layout_is_one_server() -> None:
    scenario = _three_stations()
    group = build_servers(scenario, port=free_port())
    assert len(group.endpoints) == 1
    assert group.servers[0].paths == [p for _s, _n, p in scenario.station_paths()]


def test_port_in_use_is_a_connector_error() -> None:
    scenario = load_scenario(SINGLE)

    async def body() -> None:
        with socket.socket() as blocker:
            blocker.bind(("127.0.0.1", 0))
            blocker.listen()
            port = blocker.getsockname()[1]
            with pytest.raises(ConnectorError) as err:
                async with MachineServer.from_scenario(scenario, port=port):
                    pass
            assert str(port) in str(err.value)
            assert err.value.endpoint is not None and str(port) in err.value.endpoint

    run(body)


def test_apply_outside_context_is_an_error() -> None:
    scenario = load_scenario(SINGLE)
    server = MachineServer.from_scenario(scenario, port=free_port())
    with pytest.raises(ConnectorError, match="async with"):
        asyncio.run(server.apply(Sample(0.0, server.paths[0], Tag.PROCESSED, 1)))


def test_unknown_station_is_rejected() -> None:
    scenario = load_scenario(SINGLE)
    with pytest.raises(ValueError, match="bonder-09"):
        MachineServer.from_scenario(scenario, stations=["bonder-09"])


def test_secure_needs_users() -> None:
    with pytest.raises(ValueError, match="user"):
        Security("secure")
