"""Two Sparkplug host applications under one host id (redundant gateways), one edge node
following that Primary Host, over Mosquitto on 127.0.0.1:1883; each host reaches the broker
through its own relay, so a host is "killed" by cutting its path (the broker sends its Will).

Sparkplug 3.0: a host that sees its own STATE topic say offline while it is connected
publishes online again with a new timestamp; an edge node ignores a STATE older than the
newest it saw. Must hold: whichever host dies, the edge node ends born under the survivor,
the retained STATE says online, and the survivor has every value the node set (nothing lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import orjson
import paho.mqtt.client as paho
import pytest
from gwkit import ListSink, Relay, clear_retained, free_port, until
from paho.mqtt.enums import CallbackAPIVersion

from iiotbed.devices.sparkplug import MetricDef, SparkplugEdgeNode
from iiotbed.gateway.collectors import SparkplugHost

pytestmark = [pytest.mark.network, pytest.mark.timeout(60)]

EPOCH = 1_767_571_200.0  # 2026-01-05T00:00:00Z
MS = int(EPOCH * 1000)
LINE = "tcl/huizhou/module-assembly/line-1"


@contextlib.asynccontextmanager
async def _host(port: int, group: str, name: str, sink: ListSink) -> AsyncIterator[SparkplugHost]:
    host = SparkplugHost(
        f"mqtt://127.0.0.1:{port}", sink, epoch=EPOCH, host_id=f"h-{group}", groups=[group],
        assets={"line": LINE}, client_id=f"host-{name}-{group}",
        rebirth_interval=0.2, backoff_initial=0.1, backoff_max=0.3,
    )  # fmt: skip
    task = asyncio.create_task(host.run())
    try:
        await until(lambda: host.connected, what=f"host {name} online")
        yield host
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _retained_state(topic: str) -> dict[str, object]:
    got: list[bytes] = []
    c = paho.Client(CallbackAPIVersion.VERSION2)
    c.on_message = lambda cl, u, m: got.append(bytes(m.payload))
    c.connect("127.0.0.1", 1883)
    c.loop_start()
    try:
        c.subscribe(topic, 1)
        end = time.monotonic() + 5
        while not got and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        c.loop_stop()
        c.disconnect()
    assert got, f"no retained STATE on {topic}"
    state: dict[str, object] = orjson.loads(got[-1])
    return state


@pytest.mark.parametrize(("victim", "grace"), [("newer", 0.0), ("older", 0.0), ("newer", 1.0)])
def test_one_of_two_hosts_dies_the_node_stays_with_the_survivor(victim: str, grace: float) -> None:
    asyncio.run(_one_dies(victim, grace))


async def _one_dies(victim: str, grace: float) -> None:
    group = f"r{victim[0]}{time.time_ns() % 10**9}"
    host_id = f"h-{group}"
    now = [MS]  # the node's clock: deaths and births dated with the data
    sinks = {"a": ListSink(), "b": ListSink()}
    relays = {k: Relay(free_port(), 1883) for k in sinks}
    for r in relays.values():
        await r.up()
    node = SparkplugEdgeNode(
        "mqtt://127.0.0.1:1883", group, "edge-1",
        devices={"line": [MetricDef("GoodCount", "UInt64")]},
        primary_host_id=host_id, client_id=f"edge-{group}", clock=lambda: now[0],
        host_grace=grace,
    )  # fmt: skip
    n = 0

    async def produce(count: int) -> None:
        nonlocal n
        for _ in range(count):
            n += 1
            now[0] = MS + n * 1000
            node.set("line", "GoodCount", n, now[0])
            await node.flush()
            await asyncio.sleep(0.01)

    try:
        async with _host(relays["a"].port, group, "a", sinks["a"]) as a:
            await asyncio.sleep(0.01)  # b's STATE timestamp is the newer one
            async with _host(relays["b"].port, group, "b", sinks["b"]) as b, node:
                await until(lambda: node.born, what="births after the hosts' STATE online")
                assert a._state_ts < b._state_ts
                await produce(20)
                births, b_ts = node.stats.births, b._state_ts
                dead, survivor = ("b", a) if victim == "newer" else ("a", b)
                await relays[dead].down()  # the broker sends the dead host's Will (offline)
                await produce(20)
                await until(lambda: survivor.stats.state_republished >= 1,
                            what="the survivor restating online")  # fmt: skip
                await until(lambda: node.born, what="the node born again")
                await produce(20)
                want = set(range(1, n + 1))

                def got() -> set[object]:
                    return {s.value for s in sinks[survivor_key(dead)].all if s.tag == "GoodCount"}

                with contextlib.suppress(AssertionError):
                    await until(lambda: want <= got(), 10, what="every value at the survivor")
                assert not want - got(), (sorted(want - got()), node.stats)  # type: ignore[operator]
                state = await asyncio.to_thread(_retained_state, survivor.state_topic)
                assert state["online"] is True
                assert isinstance(state["timestamp"], int)
                if victim == "newer":
                    assert state["timestamp"] > b_ts  # newer than the dead one's online
                else:  # its Will is older than the newest STATE: ignored; the survivor
                    assert state["timestamp"] == b_ts  # restates its own timestamp
                if victim == "newer" and not grace:
                    # the node took the Will (not older than the newest STATE seen): a new
                    # session, its births after the survivor's newer online, the gap forwarded
                    assert node.stats.births > births
                    assert node.stats.forwarded > 0
                else:
                    # ignored, or answered within the grace: the session goes on, no blip
                    assert node.stats.births == births
                    assert node.stats.forwarded == 0
                assert node.born
    finally:
        for r in relays.values():
            await r.down()
        await asyncio.to_thread(clear_retained, [f"spBv1.0/STATE/{host_id}"], 1883)


def survivor_key(dead: str) -> str:
    return "a" if dead == "b" else "b"


def test_a_lone_host_dies_the_node_ends_its_session_after_the_grace() -> None:
    asyncio.run(_lone())


async def _lone() -> None:
    # no redundant host answers: after the grace the node ends its session (its NDEATH) and
    # stores; what it sent within the grace, to no host, is in its resend window
    group = f"rl{time.time_ns() % 10**9}"
    now = [MS]
    sink = ListSink()
    relay = Relay(free_port(), 1883)
    await relay.up()
    node = SparkplugEdgeNode(
        "mqtt://127.0.0.1:1883", group, "edge-1",
        devices={"line": [MetricDef("GoodCount", "UInt64")]}, primary_host_id=f"h-{group}",
        client_id=f"edge-{group}", clock=lambda: now[0], host_grace=1.0,
    )  # fmt: skip
    n = 0

    async def produce(count: int) -> None:
        nonlocal n
        for _ in range(count):
            n += 1
            now[0] = MS + n * 1000
            node.set("line", "GoodCount", n, now[0])
            await node.flush()
            await asyncio.sleep(0.02)

    try:
        async with _host(relay.port, group, "a", sink) as host, node:
            await until(lambda: node.born, what="births")
            await produce(10)
            await relay.down()
            await produce(30)  # ~0.6 s of it within the grace, still live
            await until(lambda: not node.born, what="the session ended after the grace")
            await produce(10)
            await relay.up()
            await until(lambda: host.connected and node.born, what="births after the host")
            await produce(5)
            await until(lambda: set(range(1, n + 1)) <= {s.value for s in sink.all}, 10,
                        what="every value")  # fmt: skip
            assert node.stats.forwarded > 0
    finally:
        await relay.down()
        await asyncio.to_thread(clear_retained, [f"spBv1.0/STATE/h-{group}"], 1883)
