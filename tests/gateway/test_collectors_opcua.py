"""OPC UA collector against real MachineServers fed from the simulator, over sockets."""

from __future__ import annotations

import asyncio
import contextlib
import math

import pytest
from gwkit import ListSink, five_g, free_port, last_values, until

from iiotbed.devices.opcua import MachineServer
from iiotbed.devices.sim import Factory
from iiotbed.gateway.collectors import OpcUaCollector
from iiotbed.telemetry import Event, Quality, Sample

pytestmark = pytest.mark.timeout(90)

COUNTERS = ("ProcessedCount", "DefectiveCount", "ConsumedCount", "FailureCount", "EnergyTotal")


async def _feed(server: MachineServer, records: list[object]) -> None:
    for k in range(0, len(records), 2000):
        await server.apply_many(records[k : k + 2000])  # type: ignore[arg-type]
        await asyncio.sleep(0.005)


def test_server_restart_mid_run_reconnects_resubscribes_and_misses_no_counter() -> None:
    asyncio.run(_restart())


async def _restart() -> None:
    sc = five_g(1800)
    factory = Factory(sc)
    factory.run(1800)
    records = list(factory.records)
    half = len(records) // 2
    stations = {path for _, _, path in sc.station_paths()}
    expected = {k: v for k, v in last_values(records).items() if k[0] in stations and k[1] in COUNTERS}
    assert sum(v for (_, tag), v in expected.items() if tag == "ProcessedCount") > 50
    port = free_port()
    url = f"opc.tcp://127.0.0.1:{port}/iiotbed/"
    sink = ListSink()
    col = OpcUaCollector([url], sink, epoch=sc.plant.epoch, publishing_interval=0.05,
                         backoff_initial=0.1, backoff_max=0.5)  # fmt: skip
    task = asyncio.create_task(col.run())
    try:
        async with MachineServer.from_scenario(sc, port=port) as server:
            await until(lambda: col.connected, what="first session")
            await _feed(server, records[:half])
            await asyncio.sleep(0.3)
        await until(lambda: not col.connected, what="the collector to notice the server left")
        await until(lambda: col.stats.stale_marks > 0, what="the lost session's Bad marks")
        seen_before = len(sink.all)
        assert seen_before > 100
        # at the moment of loss every value of the session is marked Bad, at the newest
        # source time it had delivered: the gap is marked, the last values do not stay
        delivered = [x for x in sink.all if x.quality is not Quality.Bad]
        mark_t = max(x.t for x in delivered)
        marks = [x for x in sink.all if x.quality is Quality.Bad]
        assert len(marks) == col.stats.stale_marks
        assert {(x.asset, x.tag) for x in marks} >= {(x.asset, x.tag) for x in delivered}
        assert all(x.value is None and x.t == mark_t for x in marks)
        # the machine comes back: it shows its state again, then runs on
        async with MachineServer.from_scenario(sc, port=port) as server:
            await until(lambda: col.connected, 30, what="the collector to reconnect")
            await _feed(server, records)

            def complete() -> bool:
                got = sink.last()
                return all(k in got and got[k].value == v for k, v in expected.items())

            await until(complete, 30, what="every counter's final value")
            got = sink.last()  # before the server stops: then they are marked Bad again
        await until(lambda: sink.last()[next(iter(expected))].quality is Quality.Bad,
                    what="the second loss marked")  # fmt: skip
        # the restarted server replays from t = 0: nothing of the new session is dated
        # inside the marked gap (a value held since before the mark is known from the mark)
        assert all(x.t >= mark_t for x in sink.all[seen_before:])
        last_t = {(r.asset, r.tag): r.t for r in records if isinstance(r, Sample)}
        for key in expected:
            s = got[key]
            assert s.quality is Quality.Good
            if s.value != 0:  # a never-written node keeps the server's start-up timestamp
                # source time survives (or is the mark, for a value older than the gap)
                assert math.isclose(s.t, max(last_t[key], mark_t), abs_tol=1e-5), key
            assert s.unit == ("KWH" if key[1] == "EnergyTotal" else "C62")
        assert col.stats.connects == 2 and col.stats.connection_losses >= 1
        assert col.stats.malformed == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_status_becomes_quality_and_alarms_become_events() -> None:
    asyncio.run(_alarms())


async def _alarms() -> None:
    sc = five_g(600)
    _, name, path = sc.station_paths()[0]
    port = free_port()
    sink = ListSink()
    col = OpcUaCollector([f"opc.tcp://127.0.0.1:{port}/iiotbed/"], sink, epoch=sc.plant.epoch,
                         publishing_interval=0.05, sampling_interval=0.01)  # fmt: skip
    async with MachineServer.from_scenario(sc, port=port, stations=[name]) as server:
        task = asyncio.create_task(col.run())
        try:
            await until(lambda: col.connected, what="session")
            await server.apply_many([
                Sample(10.0, path, "CycleTime", 12.5, "SEC"),
                Sample(11.0, path, "Fault", 1),
                Sample(12.0, path, "CycleTime", None, "SEC", Quality.Bad),
                Sample(13.0, path, "MachineryItemState", 1, quality=Quality.Uncertain),
            ])  # fmt: skip
            await asyncio.sleep(0.2)
            await server.apply_many([Sample(20.0, path, "Fault", 0)])

            def seen() -> bool:
                return len([e for e in sink.evs if e.name == "Alarm"]) >= 2

            await until(seen, what="two alarm events")
            await until(lambda: (path, "MachineryItemState") in sink.last() and
                        sink.last()[(path, "MachineryItemState")].t == 13.0, what="state")  # fmt: skip
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    cycle = [s for s in sink.all if s.tag == "CycleTime" and s.t in (10.0, 12.0)]
    assert [(s.t, s.value, s.quality, s.unit) for s in cycle] == [
        (10.0, 12.5, Quality.Good, "SEC"), (12.0, None, Quality.Bad, "SEC"),
    ]  # fmt: skip
    state = sink.last()[(path, "MachineryItemState")]
    assert (state.value, state.quality) == (1, Quality.Uncertain)
    fault = [s for s in sink.all if s.tag == "Fault" and s.t == 11.0]
    assert fault and fault[0].value == 1  # a Boolean travels as 0/1
    alarms = [e for e in sink.evs if e.name == "Alarm"]
    assert all(isinstance(e, Event) and e.asset == path for e in alarms)
    assert [(e.t, e.fields["active"]) for e in alarms[-2:]] == [(11.0, True), (20.0, False)]
    assert alarms[-2].fields["severity"] > alarms[-1].fields["severity"]
    assert alarms[-2].fields["condition"] == "Breakdown"
