"""Sparkplug B host against the project's edge node, over Mosquitto (127.0.0.1:1883 and a
second broker the test kills and restarts)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator

import orjson
import paho.mqtt.client as paho
import pytest
from gwkit import ListSink, Mosquitto, Relay, clear_retained, free_port, until
from paho.mqtt.enums import CallbackAPIVersion

from iiotbed.devices.sparkplug import MetricDef, SparkplugEdgeNode
from iiotbed.gateway.collectors import SparkplugHost
from iiotbed.mqtt import stop_client
from iiotbed.protocols.sparkplug import _sparkplug_b_pb2 as pb
from iiotbed.protocols.uns import sample_id
from iiotbed.telemetry import Quality

pytestmark = [pytest.mark.network, pytest.mark.timeout(60)]

EPOCH = 1_767_571_200.0  # 2026-01-05T00:00:00Z
MS = int(EPOCH * 1000)
LINE = "tcl/huizhou/module-assembly/line-1"


def _node(port: int, group: str, host: str | None = None) -> SparkplugEdgeNode:
    return SparkplugEdgeNode(
        f"mqtt://127.0.0.1:{port}", group, "edge-1",
        node_metrics=[MetricDef("Uptime", "Int64", unit="SEC")],
        devices={"line": [MetricDef("GoodCount", "UInt64"), MetricDef("Running", "Boolean")],
                 "bonder-01": [MetricDef("EnergyTotal", "Double", unit="kWh")]},
        primary_host_id=host, client_id=f"edge-{group}",
    )  # fmt: skip


@contextlib.asynccontextmanager
async def _host(port: int, group: str, sink: ListSink) -> AsyncIterator[SparkplugHost]:
    host = SparkplugHost(
        f"mqtt://127.0.0.1:{port}", sink, epoch=EPOCH, host_id=f"h-{group}", groups=[group],
        assets={"line": LINE, "bonder-01": f"{LINE}/bonding/bonder-01", "edge-1": LINE},
        rebirth_interval=0.2, backoff_initial=0.1, backoff_max=0.5,
    )  # fmt: skip
    task = asyncio.create_task(host.run())
    try:
        await until(lambda: host.connected, what="host online")
        yield host
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(clear_retained, [host.state_topic], port)


def test_births_data_units_and_state() -> None:
    asyncio.run(_births())


async def _births() -> None:
    group = f"g{time.time_ns() % 10**9}"
    sink = ListSink()
    got_state: list[bytes] = []
    watcher = paho.Client(CallbackAPIVersion.VERSION2)
    watcher.on_message = lambda c, u, m: got_state.append(bytes(m.payload))
    watcher.connect("127.0.0.1", 1883)
    watcher.loop_start()
    watcher.subscribe(f"spBv1.0/STATE/h-{group}", 1)
    try:
        async with _host(1883, group, sink) as host, _node(1883, group, f"h-{group}") as node:
            await until(lambda: node.born, what="births after the host's STATE online")
            for i in range(1, 21):
                node.set("line", "GoodCount", i, MS + i * 1000)
                node.set("bonder-01", "EnergyTotal", 0.5 * i, MS + i * 1000)
                node.set("line", "Running", i % 2 == 0, MS + i * 1000)
                await node.flush()
            await until(lambda: sink.last().get((LINE, "GoodCount")) is not None
                        and sink.last()[(LINE, "GoodCount")].value == 20, what="last count")  # fmt: skip
            assert host.stats.births == 3 and host.stats.seq_gaps == 0
            assert host.stats.malformed == 0 and host.stats.rebirths_requested == 0
            live = sink.last()
        await until(lambda: any(orjson.loads(p)["online"] is False for p in got_state if p), what="offline")
    finally:
        watcher.disconnect()
        stop_client(watcher)
    assert orjson.loads(got_state[0])["online"] is True
    counts = [s for s in sink.all if s.tag == "GoodCount"]
    # the birth had no value yet; the node's NDEATH on close marks it stale
    assert [s.value for s in counts] == [None, *range(1, 21), None]
    assert counts[0].quality is Quality.Bad and counts[-1].quality is Quality.Bad
    assert counts[-2].t == 20.0 and counts[-2].unit is None and counts[-2].seq is not None
    assert counts[-1].t >= 20.0
    energy = live[(f"{LINE}/bonding/bonder-01", "EnergyTotal")]
    assert (energy.value, energy.unit) == (10.0, "KWH")  # 'kWh' became the UNECE code
    assert live[(LINE, "Running")].value == 1
    assert live[(LINE, "Uptime")].unit == "SEC"


def test_seq_gap_and_data_before_birth_request_a_rebirth() -> None:
    asyncio.run(_gap())


async def _gap() -> None:
    group = f"s{time.time_ns() % 10**9}"
    sink = ListSink()
    async with _node(1883, group) as node:
        node.set("line", "GoodCount", 1, MS + 1000)
        await node.flush()  # born before any host listens
        async with _host(1883, group, sink) as host:
            node.set("line", "GoodCount", 2, MS + 2000)
            await node.flush()  # data before (the host's sight of) a birth -> rebirth
            await until(lambda: host.stats.births >= 3, what="rebirth after data before birth")
            assert host.stats.unborn_data >= 1 and host.stats.rebirths_requested >= 1
            births = node.stats.births
            await asyncio.sleep(0.3)  # past the rebirth interval
            node._seq = (node._seq + 7) % 256  # lose seven messages
            node.set("line", "GoodCount", 3, MS + 3000)
            await node.flush()
            await until(lambda: node.stats.births > births, what="rebirth after a seq gap")
            assert host.stats.seq_gaps == 1
            node.set("line", "GoodCount", 4, MS + 4000)
            await node.flush()
            await until(lambda: sink.last()[(LINE, "GoodCount")].value == 4, what="data after rebirth")
            assert host.stats.seq_gaps == 1 and host.stats.malformed == 0


def test_ndeath_marks_every_metric_stale_and_an_old_bdseq_does_not() -> None:
    asyncio.run(_death())


async def _death() -> None:
    group = f"d{time.time_ns() % 10**9}"
    sink = ListSink()
    async with _host(1883, group, sink) as host, _node(1883, group) as node:
        await until(lambda: host.stats.births == 3, what="births")
        node.set("line", "GoodCount", 5, MS + 5000)
        await node.flush()
        await until(lambda: sink.last()[(LINE, "GoodCount")].value == 5, what="data")
        # an NDEATH of an older session (bdSeq differs) changes nothing
        old = pb.Payload(timestamp=MS + 6000)
        old.metrics.add(name="bdSeq", datatype=pb.Int64, long_value=(node.bd_seq + 100) % 256)
        spy = paho.Client(CallbackAPIVersion.VERSION2)
        spy.connect("127.0.0.1", 1883)
        spy.loop_start()
        spy.publish(node.topic("NDEATH"), old.SerializeToString(), qos=1).wait_for_publish(5)
        spy.disconnect()
        stop_client(spy)
        await asyncio.sleep(0.3)
        assert host.stats.deaths == 0
        n = len(sink.all)
        node.connection.abort()  # the broker publishes the Will: NDEATH with this bdSeq
        await until(lambda: host.stats.deaths == 1, what="NDEATH")
        stale = sink.all[n:n + 4]
        assert {(s.asset, s.tag) for s in stale} == {
            (LINE, "Uptime"), (LINE, "GoodCount"), (LINE, "Running"),
            (f"{LINE}/bonding/bonder-01", "EnergyTotal"),
        }  # fmt: skip
        assert all(s.quality is Quality.Bad and s.value is None for s in stale)
        assert all(s.t >= 5.0 for s in stale)
        # the node reconnects with a new bdSeq and is born again
        await until(lambda: host.stats.births >= 6, what="rebirth after reconnect")
        assert sink.last()[(LINE, "GoodCount")].value == 5


def test_broker_restart_mid_run_loses_no_final_value(mosquitto: Mosquitto) -> None:
    asyncio.run(_broker_restart(mosquitto))


async def _broker_restart(broker: Mosquitto) -> None:
    group = f"r{time.time_ns() % 10**9}"
    sink = ListSink()
    node = _node(broker.port, group)
    node._conn._backoff_initial = 0.1  # reconnect quickly in the test
    async with _host(broker.port, group, sink) as host, node:
        await until(lambda: host.stats.births == 3, what="births")
        for i in range(1, 51):
            node.set("line", "GoodCount", i, MS + i * 1000)
            await node.flush()
            if i == 20:
                await asyncio.to_thread(broker.stop)
            if i == 30:
                await asyncio.to_thread(broker.start)
            await asyncio.sleep(0.02)
        await until(lambda: host.connected and node.born, 20, what="both back")
        node.set("line", "GoodCount", 51, MS + 51_000)
        await node.flush()
        await until(lambda: sink.last()[(LINE, "GoodCount")].value == 51, 20, what="final count")
        assert host.stats.connects >= 2 and host.stats.connection_losses >= 1
        # values set while the broker was away came with the birth after the restart (QoS 0
        # messages in flight when it died are gone: only the latest value is owed)
        assert {s.value for s in sink.all if s.tag == "GoodCount"} >= {1, 50, 51}


def test_losing_the_broker_marks_every_metric_stale_until_the_rebirth() -> None:
    asyncio.run(_host_loses_broker())


async def _host_loses_broker() -> None:
    # Sparkplug 3.0: a host that loses the broker must take every metric as stale. The node
    # stays up (only the host's network path is cut, by a relay): the values it restates in
    # the rebirth after the reconnect are known again from the stale mark, not before it.
    group = f"l{time.time_ns() % 10**9}"
    sink = ListSink()
    relay = Relay(free_port(), 1883)
    await relay.up()
    try:
        async with _host(relay.port, group, sink) as host, _node(1883, group) as node:
            await until(lambda: host.stats.births == 3, what="births")
            node.set("line", "GoodCount", 5, MS + 5000)
            node.set("line", "Running", True, MS + 7000)
            await node.flush()
            await until(lambda: sink.last()[(LINE, "Running")].value == 1.0, what="data")
            n = len(sink.all)
            newest = max(s.t for s in sink.all)  # the node's birth (its own clock) or 7 s
            await relay.down()
            await until(lambda: host.stats.connection_losses == 1, what="the host to notice")
            stale = sink.all[n:]
            # every metric of the node and its devices, Bad, just after the newest sim time seen
            mark = math.nextafter(newest, math.inf)
            assert {(s.asset, s.tag) for s in stale} == {
                (LINE, "Uptime"), (LINE, "GoodCount"), (LINE, "Running"),
                (f"{LINE}/bonding/bonder-01", "EnergyTotal"),
            }  # fmt: skip
            assert all(s.quality is Quality.Bad and s.value is None for s in stale)
            assert {s.t for s in stale} == {mark}
            assert host.stats.stale_marks == 4
            # back: the node's next data is from an unborn node -> rebirth request -> birth
            await relay.up()
            await until(lambda: host.connected, what="the host back")
            m = len(sink.all)
            node.set("line", "GoodCount", 6, MS + 9000)
            await node.flush()
            await until(lambda: sink.last()[(LINE, "GoodCount")].value == 6, 20, what="rebirth")
            after = sink.all[m:]
            assert host.stats.rebirths_requested >= 1
            assert all(s.t >= newest for s in after)  # nothing dated inside the marked gap
            running = [s for s in after if s.tag == "Running"]
            # restated (held since 7 s, before the mark): known again from the mark, as a new
            # sample (an exact repeat of the one sent before would be dropped by its id)
            assert running and running[0].t == mark and running[0].value == 1.0
            first = next(s for s in sink.all if s.tag == "Running" and s.value == 1.0)
            assert sample_id("r", LINE, "Running", first.t, 1.0, Quality.Good) != sample_id(
                "r", LINE, "Running", running[0].t, 1.0, Quality.Good
            )
    finally:
        await relay.down()


def test_store_and_forward_fills_a_broker_outage_with_history(mosquitto: Mosquitto) -> None:
    asyncio.run(_store_and_forward(mosquitto))


async def _store_and_forward(broker: Mosquitto) -> None:
    # The broker goes away; the node (Primary Host configured) keeps its changes and sends
    # them as historical DDATA after the rebirth. The host passes them on with their own
    # times: the gap after its stale mark holds every value, Running's off-and-on included,
    # which the birth alone (the latest value) would have lost.
    group = f"f{time.time_ns() % 10**9}"
    sink = ListSink()
    sim = [MS + 500]
    node = SparkplugEdgeNode(
        f"mqtt://127.0.0.1:{broker.port}", group, "edge-1",
        devices={"line": [MetricDef("GoodCount", "UInt64"), MetricDef("Running", "Boolean")]},
        primary_host_id=f"h-{group}", client_id=f"edge-{group}", clock=lambda: sim[0],
    )  # fmt: skip
    async with _host(broker.port, group, sink) as host, node:
        await until(lambda: node.born and host.stats.births == 2, what="births")
        sim[0] = MS + 1000
        node.set("line", "GoodCount", 1, sim[0])
        node.set("line", "Running", True, sim[0])
        await node.flush()
        await until(lambda: (s := sink.last().get((LINE, "GoodCount"))) is not None and s.value == 1,
                    what="the first count")  # fmt: skip
        await asyncio.to_thread(broker.stop)
        await until(lambda: not node.born and host.stats.connection_losses == 1, what="both lost")
        mark = math.nextafter(1.0, math.inf)
        for i in range(2, 12):
            sim[0] = MS + i * 1000
            node.set("line", "GoodCount", i, sim[0])
            node.set("line", "Running", i not in (5, 6, 7), sim[0])
            await node.flush()
        assert node.stored > 0 and node.stats.store_dropped == 0
        await asyncio.to_thread(broker.start)
        await until(lambda: node.born and node.stored == 0 and host.stats.historical > 0, 20,
                    what="births and history after the restart")  # fmt: skip
        assert host.stats.malformed == 0 and node.stats.forwarded == node.stats.stored
        seen = list(sink.all)  # before the node's NDEATH on close

    def timeline(tag: str) -> list[tuple[float, float | int | str | None]]:
        """(t, value) of the tag in store order: by time, arrival breaking ties."""
        return [(s.t, s.value) for s in sorted((s for s in seen if s.tag == tag and s.t >= mark),
                                               key=lambda s: s.t)]  # fmt: skip

    counts = timeline("GoodCount")
    # the mark (Bad), the count held at it restated, then every count at its own time
    assert counts[:2] == [(mark, None), (mark, 1)], counts
    assert counts[2:] == [(float(i), i) for i in range(2, 12)], counts
    running = timeline("Running")
    assert running[:2] == [(mark, None), (mark, 1)], running
    assert running[2:] == [(5.0, 0), (8.0, 1)], running
    # nothing between the mark and the history that is not the node's own
    assert all(s.quality is Quality.Good for s in seen if s.t > mark)
