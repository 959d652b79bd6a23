"""Sparkplug B edge node against a real Mosquitto at 127.0.0.1:1883, seen by a paho peer."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import queue
import time
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from iiotbed.devices.sparkplug import MetricDef, SparkplugEdgeNode
from iiotbed.errors import CommandRefused, ConnectorError
from iiotbed.mqtt import BrokerUrl, parse_broker_url, stop_client
from iiotbed.protocols.sparkplug import _sparkplug_b_pb2 as pb
from iiotbed.protocols.sparkplug.codec import command_payload, decode_payload, metric_value

BROKER = "mqtt://127.0.0.1:1883"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms: the "sim epoch" of these tests

pytestmark = [pytest.mark.network, pytest.mark.timeout(60)]


class Peer:
    """A plain paho client: subscribes, collects, publishes."""

    def __init__(self, *topics: str) -> None:
        self.q: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"peer-{uuid.uuid4().hex}")
        subscribed = queue.Queue[int]()
        self.client.on_message = lambda c, u, m: self.q.put(m)
        self.client.on_subscribe = lambda c, u, mid, rc, p: subscribed.put(mid)
        self.client.connect("127.0.0.1", 1883)
        self.client.loop_start()
        for t in topics:
            self.client.subscribe(t, qos=1)
            subscribed.get(timeout=5)

    async def next(self, wait: float = 5.0) -> paho.MQTTMessage:
        return await asyncio.to_thread(self.q.get, True, wait)

    async def next_on(self, kind: str, wait: float = 5.0) -> tuple[paho.MQTTMessage, Any]:
        while True:
            m = await self.next(wait)
            if f"/{kind}/" in m.topic:
                return m, decode_payload(m.payload)

    def nothing_for(self, seconds: float) -> bool:
        time.sleep(seconds)
        return self.q.empty()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        stop_client(self.client)  # loop_stop, and paho's wake-up socket pair closed


@pytest.fixture
def group() -> str:
    return f"it-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def peer(group: str) -> Iterator[Peer]:
    p = Peer(f"spBv1.0/{group}/#")
    yield p
    p.close()


NODE = [MetricDef("Energy", "Double", unit="KWH"), MetricDef("Uptime", "Int64")]
DEVICES = {
    "press-01": [
        MetricDef("Speed", "Double", writable=True, unit="RPM"),
        MetricDef("Running", "Boolean"),
        MetricDef("Offset", "Int16", writable=True),
        MetricDef("Recipe", "String", writable=True),
    ],
    "oven-01": [MetricDef("Temperature", "Float", unit="CEL")],
}


def by_name(payload: Any) -> dict[str, Any]:
    return {m.name: m for m in payload.metrics}


def make_node(group: str, **kw: Any) -> SparkplugEdgeNode:
    return SparkplugEdgeNode(
        BROKER, group, "edge-1", node_metrics=NODE, devices=DEVICES, clock=lambda: T0, **kw
    )


def test_broker_urls_and_an_unreachable_broker() -> None:
    assert parse_broker_url("mqtt://broker.local") == BrokerUrl("broker.local", 1883)
    assert parse_broker_url("mqtt://10.0.0.5:11883") == BrokerUrl("10.0.0.5", 11883)
    for bad in ("tcp://h:1883", "broker:1883", "mqtt://h:99999"):
        with pytest.raises(ConnectorError, match="mqtt://"):
            parse_broker_url(bad)

    async def main() -> None:
        node = SparkplugEdgeNode("mqtt://127.0.0.1:1", "g", "e", node_metrics=NODE)
        with pytest.raises(ConnectorError) as err:
            await node.__aenter__()
        assert err.value.endpoint == "mqtt://127.0.0.1:1"

    asyncio.run(main())


def test_codec_round_trips_signed_and_rejects_mismatches() -> None:
    data = command_payload(
        [("a", "Int8", -128), ("b", "Int16", -87), ("c", "Int64", -(1 << 63)), ("d", "UInt32", 4_000_000_000)],
        T0,
    )
    p = decode_payload(data)
    assert [metric_value(m) for m in p.metrics] == [-128, -87, -(1 << 63), 4_000_000_000]
    assert p.metrics[1].int_value == 0xFFFFFFA9  # sign-extended into the uint32 field
    with pytest.raises(ValueError):
        metric_value(p.metrics[0], "Double")
    with pytest.raises(ValueError):
        command_payload([("a", "Int8", 128)], T0)
    with pytest.raises(TypeError):
        command_payload([("a", "Boolean", 1)], T0)
    with pytest.raises(ValueError):
        decode_payload(b"\xff\xff\xff")


def test_births_carry_every_metric_and_data_only_changes(group: str, peer: Peer) -> None:
    async def main() -> None:
        node = make_node(group)
        node.set("press-01", "Speed", 12.5, T0 - 1000)  # before birth: the birth carries it
        async with node:
            _, nbirth = await peer.next_on("NBIRTH")
            assert nbirth.seq == 0 and nbirth.timestamp == T0
            ms = by_name(nbirth)
            assert ms["bdSeq"].datatype == pb.Int64 and ms["bdSeq"].long_value == node.bd_seq == 0
            assert ms["Node Control/Rebirth"].datatype == pb.Boolean
            assert ms["Node Control/Rebirth"].boolean_value is False
            assert ms["Energy"].datatype == pb.Double and ms["Energy"].is_null
            assert ms["Energy"].properties.keys[0] == "engUnit"
            assert ms["Energy"].properties.values[0].string_value == "KWH"
            assert ms["Uptime"].datatype == pb.Int64
            births = {}
            for _ in DEVICES:
                msg, p = await peer.next_on("DBIRTH")
                births[msg.topic.rsplit("/", 1)[1]] = p
            assert set(births) == set(DEVICES)
            assert sorted(p.seq for p in births.values()) == [1, 2]
            for dev, defs in DEVICES.items():
                got = by_name(births[dev])
                assert set(got) == {d.name for d in defs}
                for d in defs:
                    assert got[d.name].datatype == getattr(pb, d.datatype)
            speed = by_name(births["press-01"])["Speed"]
            assert metric_value(speed) == 12.5 and speed.timestamp == T0 - 1000
            alias = {m.alias: m.name for p in births.values() for m in p.metrics}

            node.set("press-01", "Speed", 12.5, T0 + 10)  # unchanged: not reported
            node.set("press-01", "Running", True, T0 + 20)
            node.set("press-01", "Offset", -3, T0 + 30)
            node.set(None, "Energy", 1.5, T0 + 40)
            await node.flush()
            seen = {}
            for _ in range(2):
                msg = await peer.next()
                seen[msg.topic.split("/")[2]] = (msg.topic, decode_payload(msg.payload))
            topic, ddata = seen["DDATA"]
            assert topic == f"spBv1.0/{group}/DDATA/edge-1/press-01"
            assert sorted(alias[m.alias] for m in ddata.metrics) == ["Offset", "Running"]
            vals = {alias[m.alias]: (metric_value(m, "Int16" if alias[m.alias] == "Offset" else "Boolean"), m.timestamp) for m in ddata.metrics}
            assert vals == {"Running": (True, T0 + 20), "Offset": (-3, T0 + 30)}
            assert ddata.timestamp == T0 + 30
            _, ndata = seen["NDATA"]
            assert [m.double_value for m in ndata.metrics] == [1.5]
            assert sorted([ddata.seq, ndata.seq]) == [3, 4]

            await node.flush()  # nothing changed since: nothing sent
            assert peer.nothing_for(0.3)
            with pytest.raises(ValueError):
                node.set("press-01", "Nope", 1.0, T0)
            with pytest.raises(TypeError):
                node.set("press-01", "Speed", "fast", T0)
        _, ndeath = await peer.next_on("NDEATH")  # graceful close: explicit NDEATH
        assert by_name(ndeath)["bdSeq"].long_value == 0

    asyncio.run(main())


def test_seq_increments_by_one_and_wraps(group: str, peer: Peer) -> None:
    async def main() -> None:
        async with make_node(group) as node:
            for i in range(300):
                node.set("oven-01", "Temperature", 20.0 + i, T0 + i)
                node.set(None, "Uptime", i, T0 + i)
                await node.flush()
            seqs = []
            for _ in range(1 + len(DEVICES) + 600):
                seqs.append(decode_payload((await peer.next()).payload).seq)
        assert seqs[0] == 0
        assert all(b == (a + 1) % 256 for a, b in itertools.pairwise(seqs))
        assert seqs.count(0) >= 3  # wrapped past 255 twice

    asyncio.run(main())


def test_every_transition_between_two_flushes_is_reported(group: str, peer: Peer) -> None:
    # a break that starts and ends within one pacer advance: both changes must travel
    async def main() -> None:
        async with make_node(group) as node:
            await peer.next_on("NBIRTH")
            node.set("press-01", "Running", True, T0 + 1)
            await node.flush()
            await peer.next_on("DDATA")
            node.set("press-01", "Running", False, T0 + 10)
            node.set("press-01", "Running", False, T0 + 11)  # unchanged: not repeated
            node.set("press-01", "Running", True, T0 + 20)
            await node.flush()
            _, ddata = await peer.next_on("DDATA")
            assert [(m.boolean_value, m.timestamp) for m in ddata.metrics] == [
                (False, T0 + 10),
                (True, T0 + 20),
            ]
            node.set("press-01", "Running", True, T0 + 30)  # as last reported: nothing
            await node.flush()
            assert peer.nothing_for(0.3)

    asyncio.run(main())


def test_will_is_ndeath_with_the_birth_bdseq(group: str, peer: Peer) -> None:
    async def main() -> None:
        async with make_node(group) as node:
            _, nbirth = await peer.next_on("NBIRTH")
            first = by_name(nbirth)["bdSeq"].long_value
            node.connection.abort()  # the link dies without DISCONNECT
            msg, will = await peer.next_on("NDEATH")
            assert by_name(will)["bdSeq"].long_value == first
            assert msg.qos == 1 and not msg.retain
            _, reborn = await peer.next_on("NBIRTH", wait=10)
            assert by_name(reborn)["bdSeq"].long_value == (first + 1) % 256 == node.bd_seq
            assert reborn.seq == 0
            assert node.connection.stats.connection_losses == 1

    asyncio.run(main())


def test_rebirth_on_ncmd(group: str, peer: Peer) -> None:
    async def main() -> None:
        async with make_node(group) as node:
            _, first = await peer.next_on("NBIRTH")
            node.set(None, "Uptime", 7, T0)
            await node.flush()
            await peer.next_on("NDATA")
            peer.publish(node.topic("NCMD"), command_payload([("Node Control/Rebirth", "Boolean", True)], T0))
            _, again = await peer.next_on("NBIRTH")
            assert again.seq == 0
            assert by_name(again)["bdSeq"].long_value == by_name(first)["bdSeq"].long_value
            assert metric_value(by_name(again)["Uptime"]) == 7
            dseqs = [(await peer.next_on("DBIRTH"))[1].seq for _ in DEVICES]
            assert sorted(dseqs) == [1, 2]
            assert node.stats.commands_accepted == 1 and node.stats.births == 2

    asyncio.run(main())


def test_dcmd_writes_go_to_the_callback_and_bad_ones_are_refused(group: str, peer: Peer) -> None:
    calls: list[tuple[str | None, str, object]] = []

    def on_command(device: str | None, metric: str, value: object) -> bool:
        calls.append((device, metric, value))
        if metric == "Speed" and isinstance(value, float) and value > 50.0:
            raise CommandRefused(f"speed must be <= 50, got {value}", target=str(device),
                                 command=metric, out_of_range=True)  # fmt: skip
        return metric != "Recipe" or value != "forbidden"

    async def main() -> None:
        async with make_node(group, on_command=on_command) as node:
            await peer.next_on("NBIRTH")
            dcmd = node.topic("DCMD", "press-01")
            peer.publish(dcmd, command_payload([("Speed", "Double", 42.0), ("Offset", "Int16", -5)], T0))
            peer.publish(dcmd, command_payload([("Nope", "Double", 1.0)], T0))  # unknown
            peer.publish(dcmd, command_payload([("Speed", "String", "fast")], T0))  # wrong type
            peer.publish(dcmd, command_payload([("Running", "Boolean", True)], T0))  # read-only
            peer.publish(dcmd, command_payload([("Recipe", "String", "forbidden")], T0))  # declined
            peer.publish(dcmd, command_payload([("Speed", "Double", 99.0)], T0))  # CommandRefused
            peer.publish(node.topic("DCMD", "ghost"), command_payload([("Speed", "Double", 1.0)], T0))
            peer.publish(dcmd, b"\x08\x96\x01garbage\xff\xff")  # malformed protobuf
            peer.publish(node.topic("NCMD"), b"")  # no metrics at all
            for _ in range(100):  # commands are handled asynchronously: wait for the last
                if node.stats.malformed >= 2:
                    break
                await asyncio.sleep(0.05)
            assert calls == [
                ("press-01", "Speed", 42.0),
                ("press-01", "Offset", -5),
                ("press-01", "Recipe", "forbidden"),
                ("press-01", "Speed", 99.0),
            ]
            assert node.stats.commands_accepted == 2
            assert node.stats.commands_refused == 6
            assert node.stats.malformed == 2
            node.set("press-01", "Speed", 42.0, T0 + 1)  # the node keeps working
            await node.flush()
            _, ddata = await peer.next_on("DDATA")
            assert [metric_value(m, "Double") for m in ddata.metrics] == [42.0]

    asyncio.run(main())


def test_births_wait_for_the_primary_host_state(group: str, peer: Peer) -> None:
    host = f"host-{group}"
    state_topic = f"spBv1.0/STATE/{host}"

    def state(online: bool, ts: int) -> bytes:
        return json.dumps({"online": online, "timestamp": ts}).encode()

    async def main() -> None:
        async with make_node(group, primary_host_id=host) as node:
            assert await asyncio.to_thread(peer.nothing_for, 0.5)
            assert not node.born
            peer.publish(state_topic, b"{not json", retain=False)
            peer.publish(state_topic, state(True, T0), retain=True)
            _, nbirth = await peer.next_on("NBIRTH")
            bd = by_name(nbirth)["bdSeq"].long_value
            peer.publish(state_topic, state(False, T0 + 5), retain=True)
            _, ndeath = await peer.next_on("NDEATH")
            assert by_name(ndeath)["bdSeq"].long_value == bd
            await asyncio.sleep(0.3)
            assert not node.born
            peer.publish(state_topic, state(True, T0 + 1), retain=True)  # stale: ignored
            assert await asyncio.to_thread(peer.nothing_for, 0.5)
            peer.publish(state_topic, state(True, T0 + 10), retain=True)
            _, again = await peer.next_on("NBIRTH")
            assert by_name(again)["bdSeq"].long_value == (bd + 1) % 256
            assert node.stats.malformed == 1
        peer.publish(state_topic, b"", retain=True)  # clear the retained STATE

    asyncio.run(main())


async def _next_of(peer: Peer, kind: str, device: str, wait: float = 5.0) -> Any:
    """The next ``kind`` message of ``device`` (other devices' messages are skipped)."""
    while True:
        msg, payload = await peer.next_on(kind, wait)
        if msg.topic.endswith(f"/{device}"):
            return payload


def _historical(payload: Any) -> list[tuple[int, int, Any]]:
    """(alias, timestamp, value) of a payload's metrics, all of which must be historical."""
    assert all(m.is_historical for m in payload.metrics), payload
    return [(m.alias, m.timestamp, metric_value(m, "Double")) for m in payload.metrics]


def test_store_and_forward_while_the_host_is_away_bounded_oldest_dropped(
    group: str, peer: Peer
) -> None:
    # Sparkplug 3.0 store and forward: without the Primary Host nothing is published; the
    # changes are kept (at most store_limit, the oldest dropped and counted) and follow the
    # births as one historical DDATA with their own timestamps.
    host = f"host-{group}"
    state_topic = f"spBv1.0/STATE/{host}"

    async def main() -> None:
        async with make_node(group, primary_host_id=host, store_limit=3) as node:
            for i in range(1, 6):
                node.set("press-01", "Speed", float(i), T0 + i * 1000)
                await node.flush()
            assert not node.born and node.stored == 3
            assert (node.stats.stored, node.stats.store_dropped) == (5, 2)
            assert await asyncio.to_thread(peer.nothing_for, 0.3)
            peer.publish(state_topic, json.dumps({"online": True, "timestamp": T0}).encode(), retain=True)
            dbirth = await _next_of(peer, "DBIRTH", "press-01")
            speed = by_name(dbirth)["Speed"]
            assert (speed.double_value, speed.timestamp, speed.is_historical) == (5.0, T0 + 5000, False)
            data = await _next_of(peer, "DDATA", "press-01")
            # the three newest, dated when they happened; 1 and 2 were dropped
            assert _historical(data) == [(speed.alias, T0 + i * 1000, float(i)) for i in (3, 4, 5)]
            assert node.stats.forwarded == 3 and node.stored == 0
            node.set("press-01", "Speed", 6.0, T0 + 6000)
            await node.flush()
            _, live = await peer.next_on("DDATA")
            assert not live.metrics[0].is_historical and live.seq == data.seq + 1
        peer.publish(state_topic, b"", retain=True)

    asyncio.run(main())


def test_a_lost_link_resends_what_it_may_have_swallowed_as_history(group: str, peer: Peer) -> None:
    # DATA is QoS 0: what went out just before the link died may be gone. After the rebirth
    # the node sends it again as history, led by the value held before it.
    async def main() -> None:
        async with make_node(group) as node:
            await peer.next_on("NBIRTH")
            node.set("press-01", "Speed", 1.0, T0 + 1000)
            await node.flush()
            node.set("press-01", "Speed", 2.0, T0 + 2000)
            await node.flush()
            node.connection.abort()
            await peer.next_on("NDEATH")
            node.set("press-01", "Speed", 3.0, T0 + 3000)  # while away
            await node.flush()
            dbirth = await _next_of(peer, "DBIRTH", "press-01", wait=10)
            data = await _next_of(peer, "DDATA", "press-01")
            alias = by_name(dbirth)["Speed"].alias
            # the value before the unsure ones (none here: Speed had no value yet), then both
            # published within resend_window of the loss, then the one set while away
            got = [(a, ts, v) for a, ts, v in _historical(data) if a == alias]
            assert got == [(alias, T0 + 1000, 1.0), (alias, T0 + 2000, 2.0), (alias, T0 + 3000, 3.0)]

    asyncio.run(main())


def test_store_and_forward_off_keeps_only_the_latest_for_the_birth(group: str, peer: Peer) -> None:
    host = f"host-{group}"
    state_topic = f"spBv1.0/STATE/{host}"

    async def main() -> None:
        async with make_node(group, primary_host_id=host, store_limit=0) as node:
            for i in range(1, 4):
                node.set("press-01", "Speed", float(i), T0 + i * 1000)
                await node.flush()
            assert node.stored == 0 and node.stats.stored == 0
            # retained: the node's STATE subscription may not be in place yet
            peer.publish(state_topic, json.dumps({"online": True, "timestamp": T0}).encode(), retain=True)
            dbirth = await _next_of(peer, "DBIRTH", "press-01")
            speed = by_name(dbirth)["Speed"]
            assert (speed.double_value, speed.timestamp) == (3.0, T0 + 3000)
            assert await asyncio.to_thread(lambda: all(
                "/DDATA/" not in m.topic for m in _drain(peer, 0.5)))  # fmt: skip
        peer.publish(state_topic, b"", retain=True)
        with pytest.raises(ValueError, match="store_limit"):
            make_node(group, store_limit=-1)

    asyncio.run(main())


def _drain(peer: Peer, seconds: float) -> list[paho.MQTTMessage]:
    out = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            out.append(peer.q.get(True, left))
        except queue.Empty:
            break
    return out


def test_a_refused_publish_mid_session_keeps_the_batch_and_ends_the_session(
    group: str, peer: Peer
) -> None:
    # the link died and the loss is not yet handled: the connection refuses the DATA; the
    # node keeps it (and what went out just before) for the next session, not only the latest
    async def main() -> None:
        async with make_node(group) as node:
            await _next_of(peer, "DBIRTH", "press-01")
            node.set("press-01", "Speed", 1.0, T0 + 1000)
            await node.flush()
            await _next_of(peer, "DDATA", "press-01")
            publish = node.connection.publish
            node.connection.publish = lambda *a, **k: False  # type: ignore[method-assign]
            node.set("press-01", "Speed", 2.0, T0 + 2000)
            await node.flush()
            node.set("press-01", "Speed", 3.0, T0 + 3000)
            await node.flush()
            assert not node.born and node.stored > 0
            node.connection.publish = publish  # type: ignore[method-assign]
            node._publish_births()  # as on the next connection
            dbirth = await _next_of(peer, "DBIRTH", "press-01")
            data = await _next_of(peer, "DDATA", "press-01")
            alias = by_name(dbirth)["Speed"].alias
            got = [(ts, v) for a, ts, v in _historical(data) if a == alias]
            assert got == [(T0 + 1000, 1.0), (T0 + 2000, 2.0), (T0 + 3000, 3.0)]

    asyncio.run(main())


def test_a_clean_close_sends_ddeath_per_device_before_ndeath(group: str, peer: Peer) -> None:
    # what a host sees on a clean shutdown: every device dies (DDEATH, in the seq), then the node
    from iiotbed.gateway.collectors import SparkplugHost
    from iiotbed.telemetry import Quality

    class Sink:
        def __init__(self) -> None:
            self.samples_seen: list[Any] = []

        def samples(self, collector: str, samples: Any) -> None:
            self.samples_seen.extend(samples)

        def events(self, collector: str, events: Any) -> None:
            pass

    sink = Sink()

    async def main() -> None:
        host = SparkplugHost(BROKER, sink, epoch=T0 / 1000, host_id=f"h-{group}", groups=[group],
                             rebirth_interval=0.2)  # fmt: skip
        task = asyncio.create_task(host.run())
        try:
            await _poll(lambda: host.connected, "the host online")
            async with make_node(group) as node:
                for _ in DEVICES:
                    await peer.next_on("DBIRTH")
                node.set("oven-01", "Temperature", 180.0, T0 + 1000)
                await node.flush()
                await peer.next_on("DDATA")
            order = []
            while not order or order[-1][0] != "NDEATH":
                m = await peer.next()
                order.append((m.topic.split("/")[2], m.topic, m.qos, decode_payload(m.payload)))
            assert [k for k, *_ in order] == ["DDEATH", "DDEATH", "NDEATH"]
            assert {t.rsplit("/", 1)[1] for k, t, *_ in order[:2]} == set(DEVICES)
            assert [p.seq for *_, p in order[:2]] == [4, 5]  # NBIRTH 0, DBIRTH 1-2, DDATA 3
            assert all(p.timestamp == T0 and not p.metrics for *_, p in order[:2])
            assert by_name(order[2][3])["bdSeq"].long_value == 0
            await _poll(lambda: host.stats.deaths >= 3, "the host to see the deaths")
            assert host.stats.deaths == 3 and host.stats.seq_gaps == 0  # two DDEATH, one NDEATH
            stale = {(s.asset, s.tag) for s in sink.samples_seen if s.quality == Quality.Bad}
            assert {(f"{group}/edge-1/oven-01", "Temperature"),
                    (f"{group}/edge-1/press-01", "Speed")} <= stale  # fmt: skip
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            p = Peer()
            p.publish(f"spBv1.0/STATE/h-{group}", b"", retain=True)
            p.close()

    asyncio.run(main())


async def _poll(cond: Any, what: str) -> None:
    deadline = time.monotonic() + 5
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
