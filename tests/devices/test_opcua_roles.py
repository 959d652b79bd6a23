"""Secure profile roles: real asyncua clients over a socket against one secure server.

One server (module fixture in its own thread-free event loop per test) keeps this file
fast: each test opens its own sessions.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from iiotbed.devices.opcua import MachineServer, Security, ensure_certificate
from iiotbed.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
SINGLE = ROOT / "scenarios" / "single-machine.yaml"
USERS = {"operator": "op-pass", "engineer": "eng-pass", "shift-lead": "lead-pass"}
CLIENT_URI = "urn:iiotbed:test:client"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Control:
    """Records commands (a station that accepts everything)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.speed = 1.0
        self.calls: list[Any] = []

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")

    def hold(self) -> None:
        self.calls.append("hold")

    def unhold(self) -> None:
        self.calls.append("unhold")

    def reset(self) -> None:
        self.calls.append("reset")

    def set_speed(self, factor: float) -> None:
        self.speed = factor
        self.calls.append(("set_speed", factor))


Body = Callable[[MachineServer, Control, Callable[..., Awaitable[Client]]], Awaitable[None]]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    asyncio.run(
        ensure_certificate(root / "client.der", root / "client.pem", CLIENT_URI, client=True)
    )
    return root


def run_secure(pki: Path, body: Body, **security: Any) -> None:
    scenario = load_scenario(SINGLE)
    ((_stage, _station, path),) = scenario.station_paths()
    sec = Security("secure", users=USERS, cert_dir=pki / "server", **security)
    control = Control(path)
    server = MachineServer.from_scenario(
        scenario, port=free_port(), security=sec, controls={path: control}
    )

    async def connect(user: str | None, password: str | None, *, secure: bool = True) -> Client:
        client = Client(server.endpoint, timeout=5)
        client.application_uri = CLIENT_URI
        if user is not None:
            client.set_user(user)
        if password is not None:
            client.set_password(password)
        if secure:
            await client.set_security(
                SecurityPolicyBasic256Sha256,
                str(pki / "client.der"),
                str(pki / "client.pem"),
                mode=ua.MessageSecurityMode.SignAndEncrypt,
            )
        await client.connect()
        return client

    async def main() -> None:
        async with server:
            await body(server, control, connect)

    asyncio.run(asyncio.wait_for(main(), timeout=60))


def _machine(client: Client, server: MachineServer, *path: str) -> Any:
    station = server.machines[0].name
    return client.get_node(ua.NodeId("/".join((station, *path)), server.namespace_index))


async def _refused(connect: Callable[..., Awaitable[Client]], *args: Any, **kw: Any) -> int:
    with pytest.raises(ua.UaError) as err:
        client = await connect(*args, **kw)
        await client.disconnect()
    return int(getattr(err.value, "code", 0))


def test_sessions_refused_without_credentials_or_encryption(pki: Path) -> None:
    async def body(server: MachineServer, control: Control, connect: Any) -> None:
        # anonymous over an encrypted channel: the server offers user name tokens only
        assert await _refused(connect, None, None) == ua.StatusCodes.BadIdentityTokenRejected
        # SecurityPolicy None: no such endpoint, the channel itself is refused
        await _refused(connect, "operator", "op-pass", secure=False)
        # wrong password and unknown user
        assert await _refused(connect, "operator", "eng-pass") == ua.StatusCodes.BadUserAccessDenied
        assert await _refused(connect, "nobody", "op-pass") == ua.StatusCodes.BadUserAccessDenied
        # the server still serves a correct session afterwards
        client = await connect("operator", "op-pass")
        try:
            name = (await _machine(client, server).read_browse_name()).Name
            assert name == server.machines[0].name
        finally:
            await client.disconnect()

    run_secure(pki, body)


def test_operator_reads_and_subscribes_but_cannot_command(pki: Path) -> None:
    async def body(server: MachineServer, control: Control, connect: Any) -> None:
        client = await connect("operator", "op-pass")
        try:
            ns = server.namespace_index
            machine = _machine(client, server)
            speed = _machine(client, server, "SpeedSetpoint")
            assert await speed.read_value() == pytest.approx(1.0)
            got = asyncio.Event()

            class Handler:
                def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
                    got.set()

            sub = await client.create_subscription(50, Handler())
            await sub.subscribe_data_change(speed)
            await asyncio.wait_for(got.wait(), 5)
            for name in ("Start", "Stop", "Reset", "Hold", "Unhold"):
                with pytest.raises(ua.UaStatusCodeError) as err:
                    await machine.call_method(f"{ns}:{name}")
                assert err.value.code == ua.StatusCodes.BadUserAccessDenied, name
            with pytest.raises(ua.UaStatusCodeError) as err:
                await speed.write_value(ua.Variant(1.5, ua.VariantType.Double))
            assert err.value.code == ua.StatusCodes.BadUserAccessDenied
            assert control.calls == []
            assert await speed.read_value() == pytest.approx(1.0)
            # standard methods pass the role check (a client's alarm view calls this one);
            # asyncua binds no ConditionRefresh by default, so the address space answers
            condition_type = client.get_node(ua.ObjectIds.ConditionType)
            refresh = client.get_node(ua.ObjectIds.ConditionType_ConditionRefresh)
            sub_id = ua.Variant(sub.subscription_id, ua.VariantType.UInt32)
            with pytest.raises(ua.UaStatusCodeError) as err:
                await condition_type.call_method(refresh, sub_id)
            assert err.value.code == ua.StatusCodes.BadNothingToDo
        finally:
            await client.disconnect()

    run_secure(pki, body)


def test_engineer_calls_methods_and_writes_setpoint(pki: Path) -> None:
    async def body(server: MachineServer, control: Control, connect: Any) -> None:
        client = await connect("engineer", "eng-pass")
        try:
            ns = server.namespace_index
            machine = _machine(client, server)
            for name in ("Stop", "Start"):
                assert await machine.call_method(f"{ns}:{name}") == f"{name} accepted"
            speed = _machine(client, server, "SpeedSetpoint")
            await speed.write_value(ua.Variant(1.5, ua.VariantType.Double))
            assert await speed.read_value() == pytest.approx(1.5)
            assert control.calls == ["stop", "start", ("set_speed", 1.5)]
            # a node outside the setpoints stays read-only, for engineers too
            counter = _machine(client, server, "OperationCounters", "ProcessedCount")
            with pytest.raises(ua.UaStatusCodeError) as err:
                await counter.write_value(ua.Variant(5, ua.VariantType.UInt64))
            assert err.value.code == ua.StatusCodes.BadUserAccessDenied
            # a write mixing a setpoint and another node is refused as a whole
            params = ua.WriteParameters()
            for node, value in ((speed, 0.5), (counter, 7)):
                wv = ua.WriteValue()
                wv.NodeId = node.nodeid
                wv.AttributeId = ua.AttributeIds.Value
                vtype = ua.VariantType.Double if value == 0.5 else ua.VariantType.UInt64
                wv.Value = ua.DataValue(ua.Variant(value, vtype))
                params.NodesToWrite.append(wv)
            with pytest.raises(ua.UaStatusCodeError) as err:
                await client.uaclient.write(params)
            assert err.value.code == ua.StatusCodes.BadUserAccessDenied
            assert control.speed == 1.5
        finally:
            await client.disconnect()

    run_secure(pki, body)


def test_roles_come_from_the_mapping(pki: Path) -> None:
    async def body(server: MachineServer, control: Control, connect: Any) -> None:
        lead = await connect("shift-lead", "lead-pass")
        engineer = await connect("engineer", "eng-pass")
        try:
            ns = server.namespace_index
            assert await _machine(lead, server).call_method(f"{ns}:Hold") == "Hold accepted"
            # named 'engineer' but mapped to operator: the mapping wins
            with pytest.raises(ua.UaStatusCodeError) as err:
                await _machine(engineer, server).call_method(f"{ns}:Unhold")
            assert err.value.code == ua.StatusCodes.BadUserAccessDenied
            assert control.calls == ["hold"]
        finally:
            await lead.disconnect()
            await engineer.disconnect()

    run_secure(pki, body, roles={"shift-lead": "engineer", "engineer": "operator"})


def test_role_defaults_and_mistakes() -> None:
    sec = Security("secure", users=USERS, roles={"shift-lead": "engineer"})
    assert [sec.role_of(u) for u in USERS] == ["operator", "engineer", "engineer"]
    assert Security("secure", users={"bob": "x"}).role_of("bob") == "operator"
    with pytest.raises(ValueError, match="'carol', who is not in users"):
        Security("secure", users={"bob": "x"}, roles={"carol": "engineer"})
    with pytest.raises(ValueError, match="role must be one of operator, engineer, got 'admin'"):
        Security("secure", users={"bob": "x"}, roles={"bob": "admin"})  # type: ignore[dict-item]


class _Sink:
    def samples(self, collector: str, samples: Any) -> None:
        pass

    def events(self, collector: str, events: Any) -> None:
        pass


def test_gateway_collector_reads_as_operator_with_its_certificate(pki: Path) -> None:
    from iiotbed.gateway.collectors.opcua import OpcUaCollector
    from iiotbed.telemetry import Sample, Tag

    got: list[Sample] = []

    class Sink:
        def samples(self, collector: str, samples: Any) -> None:
            got.extend(samples)

        def events(self, collector: str, events: Any) -> None:
            pass

    async def body(server: MachineServer, control: Control, connect: Any) -> None:
        path = server.paths[0]
        await server.apply(Sample(30.0, path, Tag.PROCESSED, 4))
        common: dict[str, Any] = {"epoch": server.epoch, "backoff_initial": 0.05}
        plain = OpcUaCollector([server.endpoint], Sink(), user="operator", password="op-pass",
                               **common)  # fmt: skip
        secure = OpcUaCollector(
            [server.endpoint], Sink(), user="operator", password="op-pass",
            certificate=pki / "client.der", private_key=pki / "client.pem", **common,
        )  # fmt: skip
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(c.run()) for c in (plain, secure)]
            async with asyncio.timeout(20):
                while True:  # poll: the collector offers no event to wait on
                    if secure.connected and any(s.tag == Tag.PROCESSED for s in got):
                        break
                    await asyncio.sleep(0.02)
            assert not plain.connected and plain.stats.connects == 0  # no None-policy session
            for t in tasks:
                t.cancel()
        counts = [s for s in got if s.tag == Tag.PROCESSED]
        assert counts[0].value == 4 and counts[0].t == 30.0 and counts[0].asset == path

    run_secure(pki, body)


def test_collector_certificate_mistakes(tmp_path: Path, pki: Path) -> None:
    import datetime as dt

    from iiotbed.gateway.collectors.opcua import OpcUaCollector

    epoch = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(ValueError, match="together"):
        OpcUaCollector(["opc.tcp://x:1"], _Sink(), epoch=epoch, certificate=pki / "client.der")
    bad = tmp_path / "bad.der"
    bad.write_bytes(b"not a certificate")
    with pytest.raises(ValueError, match=r"bad\.der: not a usable OPC UA client certificate"):
        OpcUaCollector(["opc.tcp://x:1"], _Sink(), epoch=epoch, certificate=bad,
                       private_key=pki / "client.pem")  # fmt: skip
    # a key asyncua could not load is refused at the start with its name, not at connect
    # time inside the collector's task group (which took the gateway down)
    key = tmp_path / "broken.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match=r"broken\.pem: not a usable OPC UA client private key"):
        OpcUaCollector(["opc.tcp://x:1"], _Sink(), epoch=epoch, certificate=pki / "client.der",
                       private_key=key)  # fmt: skip


def test_users_from_secrets(tmp_path: Path) -> None:
    import json

    from iiotbed.devices.opcua._security import users_from_secrets

    with pytest.raises(ValueError, match=r"credentials\.json.*run `iiotbed certs"):
        users_from_secrets(tmp_path)
    file = tmp_path / "credentials.json"
    base = {"version": 1, "mqtt": {"users": {}}, "api": {"token": "t"}}
    file.write_text(json.dumps(base))
    with pytest.raises(ValueError, match=r"no OPC UA users.*iiotbed certs --dir .* --force"):
        users_from_secrets(tmp_path)
    users = {"operator": {"password": "a", "role": "operator"},
             "engineer": {"password": "b", "role": "engineer"}}  # fmt: skip
    file.write_text(json.dumps({**base, "opcua": {"users": users}}))
    sec = Security.from_secrets(tmp_path, cert_dir=tmp_path / "pki")
    assert sec.profile == "secure" and dict(sec.users) == {"operator": "a", "engineer": "b"}
    assert [sec.role_of(u) for u in sec.users] == ["operator", "engineer"]
    for bad, message in (
        ({"x": {"password": ""}}, "OPC UA user 'x' needs a non-empty 'password' string"),
        ({"x": {"password": "p", "role": "root"}}, "role must be one of operator, engineer"),
        ({"x": "p"}, "OPC UA user 'x' needs"),
    ):
        file.write_text(json.dumps({**base, "opcua": {"users": bad}}))
        with pytest.raises(ValueError, match=message):
            users_from_secrets(tmp_path)


def test_gateway_settings_take_the_client_certificate(tmp_path: Path, pki: Path) -> None:
    from iiotbed.errors import ScenarioError
    from iiotbed.gateway.settings import load_settings

    def write(opcua: str) -> Path:
        path = tmp_path / "gw.yaml"
        path.write_text(
            "epoch: 2025-01-06T00:00:00Z\nline: tcl/huizhou/module-assembly/line-1\n"
            "output: {broker: mqtt://127.0.0.1:1883}\n"
            f"opcua:\n  endpoints: [opc.tcp://127.0.0.1:4840/iiotbed/]\n{opcua}"
        )
        return path

    ok = load_settings(write(f"  user: operator\n  certificate: {pki / 'client.der'}\n"
                             f"  private_key: {pki / 'client.pem'}\n"))  # fmt: skip
    assert ok.opcua is not None and ok.opcua.certificate == pki / "client.der"
    for opcua, message in (
        (f"  certificate: {pki / 'client.der'}\n", "certificate and private_key together"),
        (f"  certificate: {tmp_path / 'nope.der'}\n  private_key: {pki / 'client.pem'}\n",
         "nope.der: no such file"),
    ):  # fmt: skip
        with pytest.raises(ScenarioError) as err:
            load_settings(write(opcua))
        assert message in str(err.value) and "gw.yaml" in str(err.value)
