"""PackML Status on the live factory's OPC UA server, read by a real asyncua client by the
OPC 30050 browse names: MachSpeed follows the speed setpoint, CurMachSpeed the last unit's
rate (0 outside Execute), EquipmentStarved the empty buffer a stopped upstream leaves."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua

from iiotbed.devices.live import LiveFactory, LiveOptions
from iiotbed.devices.opcua import namespace_uri
from iiotbed.scenario import Scenario, load_scenario

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]
PACKML_URI = "http://opcfoundation.org/UA/PackML/"
SUSPENDED, EXECUTE = 5, 6
STATUS_TYPE, ANALOG_ITEM = 4, ua.ObjectIds.AnalogItemType  # PackMLStatusObjectType: ns=PackML;i=4


def _five_g() -> Scenario:
    """The 5G line with its epoch at the day shift's start, so production begins at t = 0."""
    sc = load_scenario(ROOT / "scenarios/tcl-huizhou-5g.yaml")
    epoch = dt.datetime.fromisoformat("2026-01-05T08:00:00+08:00")
    sc = sc.model_copy(update={"plant": sc.plant.model_copy(update={"epoch": epoch})})
    return sc.with_run(duration=6000)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _until(check: Callable[[], Awaitable[bool]], what: str, limit_s: float = 30.0) -> None:
    try:
        async with asyncio.timeout(limit_s):  # the normal case takes a few wall seconds
            while not await check():  # noqa: ASYNC110  # polling a server over a socket
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"waited {limit_s:g} s for {what}") from None


def test_packml_status_speeds_and_starved_follow_the_station() -> None:
    asyncio.run(_packml_status())


async def _packml_status() -> None:
    sc = _five_g()
    port = _free_port()
    stage = next(s for s, name, _ in sc.station_paths() if name == "bonder-01")
    rate = 60.0 / max(p.ideal_cycle_time[stage.name] for p in sc.products)  # units/min
    async with (
        LiveFactory(sc, LiveOptions(speed=600, opcua_port=port)),
        Client(f"opc.tcp://127.0.0.1:{port}/iiotbed/") as client,
    ):
        ns = await client.get_namespace_index(namespace_uri(sc))
        pk = await client.get_namespace_index(PACKML_URI)
        mi = await client.get_namespace_index("http://opcfoundation.org/UA/Machinery/")
        machines = await client.nodes.objects.get_child([f"{mi}:Machines"])

        async def status(station: str) -> Any:
            return await machines.get_child([f"{ns}:{station}", f"{ns}:PackML", f"{pk}:Status"])

        bonder = await status("bonder-01")
        assert await bonder.read_type_definition() == ua.NodeId(STATUS_TYPE, pk)
        tags = {}
        for name in ("MachSpeed", "CurMachSpeed", "EquipmentStarved", "EquipmentBlocked"):
            tags[name] = await bonder.get_child(f"{pk}:{name}")
        for name in ("MachSpeed", "CurMachSpeed"):
            assert await tags[name].read_type_definition() == ua.NodeId(ANALOG_ITEM)
            assert await tags[name].read_data_type() == ua.NodeId(ua.ObjectIds.Float)
        assert await tags["EquipmentStarved"].read_data_type() == ua.NodeId(ua.ObjectIds.Boolean)
        assert await tags["MachSpeed"].read_value() == pytest.approx(rate, rel=1e-6)

        def node(station: str, *path: str) -> Any:
            return client.get_node(ua.NodeId("/".join((station, *path)), ns))

        state = node("bonder-01", "State", "CurrentState", "Number")
        cycle = node("bonder-01", "Monitoring", "CycleTime")

        async def running_at_unit_rate() -> bool:
            cur = await tags["CurMachSpeed"].read_data_value()
            ct = await cycle.read_data_value()
            return (
                await state.read_value() == EXECUTE
                and cur.Value.Value > 0
                and ct.SourceTimestamp == cur.SourceTimestamp  # the same unit
                and cur.Value.Value == pytest.approx(60.0 / ct.Value.Value, rel=1e-5)
            )

        await _until(running_at_unit_rate, "bonder-01 to finish a unit in Execute")
        assert await tags["EquipmentStarved"].read_value() is False

        # the setpoint moves MachSpeed (an OPC UA write, as an operator would)
        await node("bonder-01", "SpeedSetpoint").write_value(ua.Variant(1.5, ua.VariantType.Double))

        async def mach_speed_followed() -> bool:
            return bool(await tags["MachSpeed"].read_value() == pytest.approx(1.5 * rate, rel=1e-6))

        await _until(mach_speed_followed, "MachSpeed to follow SpeedSetpoint 1.5")

        # a stopped upstream: the bonders' buffer runs empty, they starve
        await node("cleaner-01").call_method(ua.QualifiedName("Stop", ns))
        others = [await status(b) for b in ("bonder-01", "bonder-02")]
        starved = [await s.get_child(f"{pk}:EquipmentStarved") for s in others]

        async def both_starved() -> bool:
            return all([await s.read_value() for s in starved])

        await _until(both_starved, "both bonders to show EquipmentStarved")
        assert await state.read_value() == SUSPENDED
        assert await tags["CurMachSpeed"].read_value() == 0.0
        assert await tags["EquipmentBlocked"].read_value() is False
        # upstream of the stop nothing starves: the cleaner itself is Stopped, not Suspended
        cleaner = await (await status("cleaner-01")).get_child(f"{pk}:EquipmentStarved")
        assert await cleaner.read_value() is False

        await node("cleaner-01").call_method(ua.QualifiedName("Start", ns))

        async def fed_again() -> bool:
            return not any([await s.read_value() for s in starved])

        await _until(fed_again, "the bonders to be fed again")
