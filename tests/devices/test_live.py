"""The live factory end to end: a real asyncua client, Mosquitto on 127.0.0.1, the CLI."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from asyncua import Client, ua
from paho.mqtt.enums import CallbackAPIVersion

from iiotbed.devices.live import LiveFactory, LiveOptions
from iiotbed.devices.opcua import namespace_uri
from iiotbed.devices.sim import Factory, simulate
from iiotbed.eventlog import load_records, write_event_log
from iiotbed.protocols.sparkplug.codec import command_payload, decode_payload, metric_value
from iiotbed.protocols.vda5050.messages import instant_action, iso_timestamp
from iiotbed.scenario import Scenario, load_scenario, scenario_from_dict
from iiotbed.telemetry import Event, Sample

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
SUSPENDED, STOPPED = 5, 2
IIOTBED = str(Path(sys.executable).with_name("iiotbed"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _five_g(duration: float) -> Scenario:
    """The 5G line with its epoch at the day shift's start, so production begins at t = 0."""
    sc = load_scenario(ROOT / "scenarios/tcl-huizhou-5g.yaml")
    epoch = dt.datetime.fromisoformat("2026-01-05T08:00:00+08:00")
    sc = sc.model_copy(update={"plant": sc.plant.model_copy(update={"epoch": epoch})})
    return sc.with_run(duration=duration)


class Sniffer:
    """A paho client recording every message under some topic filters."""

    def __init__(self, *filters: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"sniff-{uuid.uuid4().hex[:8]}"
        )
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", 1883)
        for f in filters:
            self._client.subscribe(f, 1)
        self._client.loop_start()
        time.sleep(0.2)  # let the SUBACKs come back before the run starts

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def topics(self, part: str) -> list[tuple[str, bytes]]:
        with self._lock:
            return [(t, p) for t, p in self.messages if part in t]

    def publish(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


async def _until(cond: Callable[[], Awaitable[bool]] | Callable[[], bool], what: str) -> None:
    end = time.monotonic() + 15.0
    while time.monotonic() < end:
        r = cond()
        if asyncio.iscoroutine(r):
            r = await r
        if r:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# --------------------------------------------------------------------------- the simulator hook


def test_amr_pause_holds_it_and_resume_lets_it_go() -> None:
    def trips(f: Factory, kind: str, amr: str) -> list[Event]:
        return [
            r
            for r in f.records
            if isinstance(r, Event) and r.name == kind and r.asset.endswith(amr)
        ]

    sc = _five_g(4000)
    free, held = Factory(sc), Factory(sc)
    held.amr("amr-01").pause()
    free.run(2500)
    held.run(2500)
    assert trips(free, "AmrTripEnd", "amr-01"), "amr-01 delivers when not paused"
    assert trips(held, "AmrTripStart", "amr-01") and not trips(held, "AmrTripEnd", "amr-01")
    assert trips(held, "AmrPaused", "amr-01")
    assert held.amr("amr-01").position == sc.supply.amr.battery.charger_position  # type: ignore[union-attr]
    held.amr("amr-01").resume()
    held.run(4000)
    assert trips(held, "AmrResumed", "amr-01") and trips(held, "AmrTripEnd", "amr-01")
    again = Factory(sc)
    again.amr("amr-01").pause()
    again.run(2500)
    again.amr("amr-01").resume()
    again.run(4000)
    assert again.records == held.records  # deterministic
    with pytest.raises(Exception, match="no AMR 'amr-99'"):
        free.amr("amr-99")


# --------------------------------------------------------------------------- OPC UA


def test_opcua_machines_counters_stop_starves_downstream_and_totals(tmp_path: Path) -> None:
    asyncio.run(_opcua_end_to_end(tmp_path))


async def _opcua_end_to_end(tmp_path: Path) -> None:
    sc = _five_g(3000)
    port = _free_port()
    events = tmp_path / "live.jsonl"
    opts = LiveOptions(speed=1000, opcua_port=port, events=events)
    async with LiveFactory(sc, opts) as live:
        assert live.endpoints == [f"OPC UA  opc.tcp://127.0.0.1:{port}/iiotbed/"]
        async with Client(f"opc.tcp://127.0.0.1:{port}/iiotbed/") as client:
            ns = await client.get_namespace_index(namespace_uri(sc))
            objects = client.nodes.objects
            mi = await client.get_namespace_index("http://opcfoundation.org/UA/Machinery/")
            machines = await objects.get_child([f"{mi}:Machines"])  # the Machinery folder
            names = {(await n.read_browse_name()).Name for n in await machines.get_children()}
            assert names == {name for _, name, _ in sc.station_paths()}

            def node(station: str, *path: str) -> Any:
                return client.get_node(ua.NodeId("/".join((station, *path)), ns))

            processed = node("cleaner-01", "OperationCounters", "ProcessedCount")
            first = await processed.read_value()
            await _until(lambda: _grew(processed, first), what="cleaner counter to move")
            # a refused write: speed 5 is outside (0, 2]
            with pytest.raises(ua.UaStatusCodeError):
                await node("bonder-01", "SpeedSetpoint").write_value(
                    ua.Variant(5.0, ua.VariantType.Double)
                )
            # Stop the first station: the bonders downstream starve
            cleaner = node("cleaner-01")
            await cleaner.call_method(ua.QualifiedName("Stop", ns))
            cleaner_state = node("cleaner-01", "State", "CurrentState", "Number")

            async def stopped() -> bool:
                return bool(await cleaner_state.read_value() == STOPPED)

            await _until(stopped, what="cleaner-01 to show Stopped")
            bonders = [
                node(b, "State", "CurrentState", "Number") for b in ("bonder-01", "bonder-02")
            ]

            async def starved() -> bool:
                return all([await b.read_value() == SUSPENDED for b in bonders])

            await _until(starved, what="bonders to starve")
            counts = [await node(b, "OperationCounters", "ProcessedCount").read_value()
                      for b in ("bonder-01", "bonder-02")]  # fmt: skip
            t0 = live.now
            await _until(lambda: live.now > t0 + 300, what="300 s of sim time")
            assert await starved()
            assert [await node(b, "OperationCounters", "ProcessedCount").read_value()
                    for b in ("bonder-01", "bonder-02")] == counts  # fmt: skip
            await cleaner.call_method(ua.QualifiedName("Start", ns))
            summary = await live.wait()
            assert summary.sim_time == 3000
            assert summary.commands_accepted == 2 and summary.commands_refused == 0
            # at the end the servers show the event log's totals (the log is complete once
            # the block has closed)
            values = {}
            for _, name, _path in sc.station_paths():
                for tag in ("ProcessedCount", "DefectiveCount", "ConsumedCount"):
                    values[(name, tag)] = await node(name, "OperationCounters", tag).read_value()
    records = load_records(events)
    assert records[-1].t <= 3000
    last: dict[tuple[str, str], Any] = {}
    for r in records:
        if isinstance(r, Sample):
            last[(r.asset.rsplit("/", 1)[-1], r.tag)] = r.value
    assert sum(values[(n, "ProcessedCount")] for _, n, _ in sc.station_paths()) > 100
    for key, value in values.items():
        assert value == last.get(key, 0), key
    assert live.summary.records == len(records)


async def _grew(node: Any, first: int) -> bool:
    value: int = await node.read_value()
    return value > first


# --------------------------------------------------------------------------- MQTT endpoints


def test_sparkplug_and_vda5050_live_with_pause_and_refusals() -> None:
    asyncio.run(_mqtt_end_to_end())


async def _mqtt_end_to_end() -> None:
    sc = _five_g(2400)
    tag = uuid.uuid4().hex[:8]
    group, mfr = f"g{tag}", f"m{tag}"
    sniff = Sniffer(f"spBv1.0/{group}/#", f"uagv/v2/{mfr}/#")
    opts = LiveOptions(speed=600, opcua_port=_free_port(), broker="mqtt://127.0.0.1:1883",
                       sparkplug_group=group, vda_manufacturer=mfr)  # fmt: skip
    edge = f"{sc.plant.area}-{sc.plant.line}"
    base = f"uagv/v2/{mfr}"
    try:
        async with LiveFactory(sc, opts) as live:
            assert any(f"spBv1.0/{group}/+/{edge}/#" in e for e in live.endpoints)

            def actions(serial: str, kind: str, n: int) -> bytes:
                return json.dumps({
                    "headerId": n, "timestamp": iso_timestamp(time.time()), "version": "2.1.0",
                    "manufacturer": mfr, "serialNumber": serial,
                    "actions": [instant_action(kind, f"{kind}-{n}")]}).encode()  # fmt: skip

            await asyncio.to_thread(sniff.publish, f"{base}/amr-01/instantActions",
                                    actions("amr-01", "startPause", 1))  # fmt: skip
            await _until(lambda: live.factory.amr("amr-01").paused, what="amr-01 paused")
            # refusals: a malformed order and instant action, a garbage and an out-of-range DCMD
            await asyncio.to_thread(sniff.publish, f"{base}/amr-02/order", b"{not json")
            await asyncio.to_thread(
                sniff.publish, f"{base}/amr-02/instantActions", b'{"actions": 3}'
            )
            dcmd = f"spBv1.0/{group}/DCMD/{edge}/bonder-01"
            await asyncio.to_thread(sniff.publish, dcmd, b"\xff\x00garbage")
            ms = int(time.time() * 1000)
            await asyncio.to_thread(
                sniff.publish, dcmd, command_payload([("SpeedSetpoint", "Double", 5.0)], ms)
            )
            await asyncio.to_thread(
                sniff.publish, dcmd, command_payload([("SpeedSetpoint", "Double", 1.5)], ms)
            )
            await _until(lambda: live.factory.station("bonder-01").speed == 1.5, what="DCMD speed")
            # amr-01 gets the first trip (idle longest) and is held where it stands
            await _until(lambda: sniff.topics(f"{base}/amr-01/order"), what="an order for amr-01")
            order = json.loads(sniff.topics(f"{base}/amr-01/order")[0][1])
            assert [n["nodeId"] for n in order["nodes"]] == [
                "warehouse",
                order["nodes"][1]["nodeId"],
            ]
            await _until(lambda: sniff.topics(f"{base}/amr-02/order") and any(
                json.loads(p).get("lastNodeSequenceId") == 2
                for _, p in sniff.topics(f"{base}/amr-02/state")), what="amr-02 to deliver")  # fmt: skip
            home = tuple(sc.supply.amr.battery.charger_position)  # type: ignore[union-attr]
            assert live.factory.amr("amr-01").position == home
            state = json.loads(sniff.topics(f"{base}/amr-01/state")[-1][1])
            assert state["paused"] is True and state["orderId"] == order["orderId"]
            assert state["nodeStates"], "the held AMR has not reached its nodes"
            assert (state["agvPosition"]["x"], state["agvPosition"]["y"]) == home
            await asyncio.to_thread(sniff.publish, f"{base}/amr-01/instantActions",
                                    actions("amr-01", "stopPause", 2))  # fmt: skip

            def delivered() -> bool:
                for _, p in sniff.topics(f"{base}/amr-01/state"):
                    s = json.loads(p)
                    if (
                        s["orderId"] == order["orderId"]
                        and s["lastNodeSequenceId"] == 2
                        and not s["paused"]
                    ):
                        return True
                return False

            await _until(delivered, what="amr-01 to resume and deliver")
            assert live.factory.amr("amr-01").position != home
            # refused input shows as a warning in the state (cleared by the next accepted order)
            errors = [
                e for _, p in sniff.topics(f"{base}/amr-02/state") for e in json.loads(p)["errors"]
            ]
            assert {e["errorDescription"][:8] for e in errors} >= {"not JSON"}
            assert any("headerId" in e["errorDescription"] for e in errors)
            t_before = live.now
            summary = await live.wait()
            assert summary.sim_time == 2400 > t_before
            assert summary.orders_sent >= 2 and summary.vda_published > 0
            assert summary.commands_accepted >= 3  # startPause, stopPause, DCMD 1.5
            assert summary.commands_refused >= 4  # bad order, bad instantActions, 2 bad DCMDs
        await asyncio.sleep(0.3)
        nbirth = sniff.topics(f"spBv1.0/{group}/NBIRTH/{edge}")
        assert nbirth
        assert {m.name for m in decode_payload(nbirth[0][1]).metrics} >= {
            "bdSeq",
            "Node Control/Rebirth",
        }
        dbirth = dict(sniff.topics(f"spBv1.0/{group}/DBIRTH/{edge}/"))
        assert f"spBv1.0/{group}/DBIRTH/{edge}/line" in dbirth
        meter = decode_payload(dbirth[f"spBv1.0/{group}/DBIRTH/{edge}/bonder-01"])
        aliases = {m.alias: m.name for m in meter.metrics}
        energy = []
        for _, p in sniff.topics(f"spBv1.0/{group}/DDATA/{edge}/bonder-01"):
            for m in decode_payload(p).metrics:
                if aliases.get(m.alias) == "EnergyTotal":
                    energy.append((m.timestamp, metric_value(m, "Double")))
        assert len(energy) > 3
        epoch_ms = sc.plant.epoch.timestamp() * 1000
        assert all(epoch_ms <= ts <= epoch_ms + 2400_000 for ts, _ in energy)  # sim-time stamps
        assert [v for _, v in energy] == sorted(v for _, v in energy)  # a meter never runs back
        assert sniff.topics(f"spBv1.0/{group}/NDEATH/{edge}")
        offline = [
            json.loads(p)["connectionState"]
            for _, p in sniff.topics(f"{base}/amr-03/connection")
            if p
        ]
        assert offline[-1] == "OFFLINE"
    finally:
        sniff.close()
        cleaner = paho.Client(CallbackAPIVersion.VERSION2)  # clear the retained connection messages
        cleaner.connect("127.0.0.1", 1883)
        cleaner.loop_start()
        for i in range(6):
            cleaner.publish(
                f"uagv/v2/{mfr}/amr-{i + 1:02d}/connection", b"", qos=1, retain=True
            ).wait_for_publish(5)
        cleaner.disconnect()
        cleaner.loop_stop()


def test_cancellation_shuts_down_cleanly() -> None:
    asyncio.run(_cancellation())


async def _cancellation() -> None:
    sc = _five_g(86400)
    group = f"c{uuid.uuid4().hex[:8]}"
    sniff = Sniffer(f"spBv1.0/{group}/#")
    port = _free_port()
    opts = LiveOptions(speed=60, opcua_port=port, broker="mqtt://127.0.0.1:1883", sparkplug_group=group,
                       vda_manufacturer=group)  # fmt: skip
    started = asyncio.Event()

    async def main() -> None:
        async with LiveFactory(sc, opts) as live:
            started.set()
            await live.wait()

    try:
        task = asyncio.create_task(main())
        await asyncio.wait_for(started.wait(), 15)
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # the OPC UA server let go of its port
        await asyncio.sleep(0.3)
        assert sniff.topics("/NDEATH/")
    finally:
        sniff.close()


# --------------------------------------------------------------------------- CLI


def test_cli_devices_prints_endpoints_and_exits_0(tmp_path: Path) -> None:
    port = _free_port()
    events = tmp_path / "ev.jsonl"
    proc = subprocess.run(
        [IIOTBED, "devices", str(ROOT / "scenarios/single-machine.yaml"),
         "--speed", "200000", "--duration", "12h", "--opcua-port", str(port), "--events", str(events)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"opc.tcp://127.0.0.1:{port}/iiotbed/" in proc.stdout
    assert "only OPC UA runs" in proc.stdout
    assert "sim time reached: 43200 s" in proc.stdout
    assert any(isinstance(r, Event) and r.name == "UnitProduced" for r in load_records(events))
    # without commands the live run's event log is the batch run's, byte for byte
    batch = tmp_path / "batch.jsonl"
    sc = load_scenario(ROOT / "scenarios/single-machine.yaml")
    write_event_log(simulate(sc, duration=43200), batch)
    assert events.read_bytes() == batch.read_bytes()
    bad = subprocess.run(
        [IIOTBED, "devices", str(ROOT / "scenarios/single-machine.yaml"),
         "--broker", "http://x"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "mqtt://host:port" in bad.stderr


def test_long_link_outage_aborts_the_mqtt_connection_so_the_will_fires() -> None:
    asyncio.run(_outage())


async def _outage() -> None:
    data = _five_g(1500).model_dump(mode="json")
    data["network"]["links"]["flaky"] = {
        "kind": "wifi",
        "latency": {"dist": "fixed", "value": 0.02},
        "outages": {"interval": {"dist": "exponential", "mean": 200}, "duration": 30},
    }
    data["network"]["endpoints"] = {"sparkplug": "flaky"}
    sc = scenario_from_dict(data)
    group = f"o{uuid.uuid4().hex[:8]}"
    sniff = Sniffer(f"spBv1.0/{group}/#")
    opts = LiveOptions(speed=300, opcua_port=_free_port(), broker="mqtt://127.0.0.1:1883",
                       sparkplug_group=group, vda_manufacturer=group)  # fmt: skip
    try:
        async with LiveFactory(sc, opts) as live:
            summary = await live.wait()
            link = live.links["sparkplug"]
            assert link.stats.outages >= 2 and link.stats.aborts == link.stats.outages
            assert live.edge.connection.stats.connection_losses >= 1
            births = [decode_payload(p) for _, p in sniff.topics("/NBIRTH/")]
        await asyncio.sleep(0.3)
        deaths = [decode_payload(p) for _, p in sniff.topics("/NDEATH/")]
        bd = [metric_value(m, "Int64") for b in births for m in b.metrics if m.name == "bdSeq"]
        dead = [metric_value(m, "Int64") for d in deaths for m in d.metrics if m.name == "bdSeq"]
        assert len(bd) >= 2 and bd == sorted(bd)  # a rebirth after every reconnect
        assert set(bd[:-1]) <= set(dead)  # each aborted session's Will (NDEATH) fired
        assert summary.links["sparkplug (flaky)"].held > 0
    finally:
        sniff.close()


def test_fast_forward_skips_to_the_first_shift_then_paces() -> None:
    # single-machine's epoch is midnight and its shift starts at 08:00 (t = 28,800 s): at 60x
    # a paced start would idle for 8 minutes; fast-forward runs unpaced to the shift, then
    # paces the remaining 120 sim s (2 wall s at 60x).
    sc = load_scenario(ROOT / "scenarios/single-machine.yaml").with_run(duration=28800 + 120)

    async def main() -> tuple[float, float, float]:
        opts = LiveOptions(speed=60, opcua_port=_free_port())
        async with LiveFactory(sc, opts) as live:
            t0 = time.perf_counter()
            try:
                # paced from the epoch the run would take 482 s: fail here, not by timeout
                await asyncio.wait_for(live.wait(), 20)
            except TimeoutError:
                pytest.fail(f"not fast-forwarded: sim time {live.now:.0f} s after 20 s of wall time")
            return time.perf_counter() - t0, live.now, live.pacer.max_lag_s

    wall, now, lag = asyncio.run(main())
    assert now == 28800 + 120
    assert 1.9 <= wall <= 10.0
    assert lag < 1.0


def test_every_amr_trip_becomes_one_accepted_order_at_full_speed(tmp_path: Path) -> None:
    # At 20,000x a trip can end before its order has crossed the broker; master control must
    # then hold the next order until the agent finished the previous one, not have it refused.
    sc = _five_g(6 * 3600)
    group = f"o{uuid.uuid4().hex[:8]}"

    async def main() -> tuple[int, int, int]:
        events = tmp_path / "ev.jsonl"
        opts = LiveOptions(speed=20000, opcua_port=_free_port(),
                           broker="mqtt://127.0.0.1:1883", sparkplug_group=group,
                           vda_manufacturer=group, events=events)  # fmt: skip
        async with LiveFactory(sc, opts) as live:
            await live.wait()
            trips = sum(
                1 for r in load_records(events) if isinstance(r, Event) and r.name == "AmrTripStart"
            )
            await _until(
                lambda: sum(a.stats.orders_accepted for a in live.agents.values()) >= trips,
                "every order accepted",
            )
            accepted = sum(a.stats.orders_accepted for a in live.agents.values())
            rejected = sum(a.stats.orders_rejected for a in live.agents.values())
            return trips, accepted, rejected

    trips, accepted, rejected = asyncio.run(main())
    assert trips >= 5
    assert (accepted, rejected) == (trips, 0)


def test_opcua_cycle_time_is_the_executing_time_of_the_last_unit() -> None:
    # single-machine: ideal 30 s x cycle_time_factor gamma(mean 1.05, cv 0.05) -> ~31.5 s;
    # no breaks in the first hour of the shift, so each cycle is one executing stretch
    # unless a breakdown cuts it (then executing time still sums to one cycle's work).
    sc = load_scenario(ROOT / "scenarios/single-machine.yaml").with_run(duration=28800 + 3600)

    async def main() -> list[float]:
        port = _free_port()
        async with LiveFactory(sc, LiveOptions(speed=None, opcua_port=port)) as live:
            await live.wait()
            async with Client(f"opc.tcp://127.0.0.1:{port}/iiotbed/") as client:
                ns = await client.get_namespace_index(namespace_uri(sc))
                node = client.get_node(ua.NodeId("bonder-01/Monitoring/CycleTime", ns))
                return [float(await node.read_value())]

    (cycle,) = asyncio.run(main())
    assert 31.5 * 0.75 <= cycle <= 31.5 * 1.25  # 5 sd of the factor either side


def test_speed_setpoint_is_one_value_on_opcua_and_sparkplug() -> None:
    # a DCMD shows on the OPC UA SpeedSetpoint node; an OPC UA write shows in the Sparkplug DDATA
    sc = _five_g(7200)
    group = f"s{uuid.uuid4().hex[:8]}"
    sniff = Sniffer(f"spBv1.0/{group}/#")
    edge = f"{sc.plant.area}-{sc.plant.line}"
    port = _free_port()
    opts = LiveOptions(speed=300, opcua_port=port, broker="mqtt://127.0.0.1:1883",
                       sparkplug_group=group, vda_manufacturer=group)  # fmt: skip

    def ddata_speeds(device: str) -> list[float]:
        # data messages carry the alias the device's DBIRTH gave the metric
        aliases = {
            m.alias
            for _t, p in sniff.topics(f"/DBIRTH/{edge}/{device}")
            for m in decode_payload(p).metrics
            if m.name == "SpeedSetpoint"
        }
        return [
            float(metric_value(m, "Double"))  # type: ignore[arg-type]
            for _t, p in sniff.topics(f"/DDATA/{edge}/{device}")
            for m in decode_payload(p).metrics
            if m.name == "SpeedSetpoint" or (not m.name and m.alias in aliases)
        ]

    async def main() -> None:
        async with (
            LiveFactory(sc, opts) as live,
            Client(f"opc.tcp://127.0.0.1:{port}/iiotbed/") as client,
        ):
            ns = await client.get_namespace_index(namespace_uri(sc))
            bonder = client.get_node(ua.NodeId("bonder-01/SpeedSetpoint", ns))
            packer = client.get_node(ua.NodeId("packer-01/SpeedSetpoint", ns))
            ms = int(time.time() * 1000)
            await asyncio.to_thread(
                sniff.publish, f"spBv1.0/{group}/DCMD/{edge}/bonder-01",
                command_payload([("SpeedSetpoint", "Double", 1.5)], ms),
            )  # fmt: skip

            async def shown() -> bool:
                return bool(await bonder.read_value() == 1.5)

            await _until(shown, what="the DCMD speed on the OPC UA node")
            await packer.write_value(ua.Variant(0.8, ua.VariantType.Double))
            await _until(lambda: live.factory.station("packer-01").speed == 0.8, what="OPC UA speed")
            await _until(lambda: 0.8 in ddata_speeds("packer-01"), what="the OPC UA speed in DDATA")

    try:
        asyncio.run(main())
    finally:
        sniff.close()
