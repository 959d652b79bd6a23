"""UNS publisher end to end through a real Mosquitto, including outages of the output."""

from __future__ import annotations

import asyncio
import contextlib
import math
import queue
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from gwkit import Relay
from paho.mqtt.enums import CallbackAPIVersion

from iiotbed.gateway import DurableBuffer, UnsPublisher
from iiotbed.protocols.uns import decode_batch, decode_sample, split_topic
from iiotbed.telemetry import Event, Quality, Sample

pytestmark = [pytest.mark.network, pytest.mark.timeout(60)]

LINE = "tcl/huizhou/module-assembly/line-1"
ASSETS = [LINE, f"{LINE}/bonding/bonder-01", f"{LINE}/bonding/bonder-02"]
TAGS = ["EnergyTotal", "ProcessedCount/lcm-55"]
EPOCH = 1_767_571_200.0  # 2026-01-05T00:00:00Z
UNIT_DONE = Event(999.5, LINE, "UnitProduced", {"unit": "88.999.1/u-1", "product": "lcm-55"})


class Subscriber:
    """A plain paho client collecting every message under a topic filter."""

    def __init__(self, port: int, topic: str) -> None:
        self.q: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex}")
        done: queue.Queue[int] = queue.Queue()
        self.client.on_message = lambda c, u, m: self.q.put(m)
        self.client.on_subscribe = lambda c, u, mid, rc, p: done.put(mid)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        done.get(timeout=5)

    def drain(self, quiet: float = 0.3) -> list[paho.MQTTMessage]:
        out = []
        with contextlib.suppress(queue.Empty):
            while True:
                out.append(self.q.get(timeout=quiet))
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def stream_of(
    msgs: list[paho.MQTTMessage], events: list[Event] | None = None
) -> list[tuple[str, Sample]]:
    out = []
    for m in msgs:
        if "/_stream/" in m.topic:
            assert not m.retain
            samples, evs = decode_batch(m.payload, m.topic)
            out.extend((u.id, u.sample) for u in samples)
            if events is not None:
                events.extend(e.event for e in evs)
    return out


def make_samples(n: int, start: int = 0) -> list[Sample]:
    return [
        Sample(
            float(i),
            ASSETS[i % 3],
            TAGS[(i // 3) % 2],
            i,
            "C62",
            seq=i,
        )
        for i in range(start, start + n)
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def run_through_relay(broker: int, body: Callable[[Relay], Awaitable[None]]) -> None:
    """Run ``body`` with a relay on a free port to ``broker``, taken down afterwards."""

    async def scenario() -> None:
        relay = Relay(free_port(), broker)
        try:
            await body(relay)
        finally:
            await relay.down()

    run(scenario())


@pytest.fixture
def root() -> str:
    return f"uns-test-{uuid.uuid4().hex[:10]}"


def test_samples_reach_subscribers_as_stream_and_retained_values(tmp_path: Path, root: str) -> None:
    async def scenario() -> None:
        sub = Subscriber(1883, f"{root}/#")
        samples = make_samples(2000)
        samples.append(Sample(2000.0, ASSETS[1], "Power", 1.5, "KWT", Quality.Bad))
        samples.append(Sample(2001.0, ASSETS[1], "Temp", math.nan))  # malformed: Good NaN
        async with DurableBuffer(tmp_path / "gw.db") as buf:
            pub = UnsPublisher(
                "mqtt://127.0.0.1:1883", buf, line=LINE, epoch=EPOCH, run_id="run-e2e",
                root=root, batch_size=300,
            )  # fmt: skip
            # buffered before the sender starts, so the batches are cut the same way every run
            # (2002 rows in 300s: 7), not where a fast connect happened to read
            assert await pub.submit(samples[:1000]) == 1000
            assert await pub.submit_events([UNIT_DONE, Event(1.0, "a/+", "Broken")]) == 1
            assert await pub.submit(samples[1000:]) == 1001
            async with pub, asyncio.timeout(20):
                await pub.flush()
            m = pub.metrics
            assert (m.received, m.malformed, m.forwarded, m.buffered, m.dropped) == (
                2004, 2, 2002, 0, 0,
            )  # fmt: skip
            assert m.batches == 7 and m.connects == 1 and 0 <= m.lag_s < 10
        msgs = await asyncio.to_thread(sub.drain)
        sub.close()

        events: list[Event] = []
        stream = stream_of(msgs, events)
        assert events == [UNIT_DONE]  # events ride in the stream, never as current values
        assert [s.value for _, s in stream[:2000]] == list(range(2000))  # every sample, in order
        assert len({i for i, _ in stream}) == len(stream) == 2001
        first = stream[0][1]
        assert (first.asset, first.tag, first.unit, first.run_id, first.seq) == (
            ASSETS[0], TAGS[0], "C62", "run-e2e", 0,
        )  # fmt: skip
        assert stream[-1][1].value is None and stream[-1][1].quality is Quality.Bad

        # current values: retained, one topic per asset/tag, the newest value last
        latest = {
            (s.asset, s.tag): None if s.quality is Quality.Bad else s.value for s in samples[:2001]
        }
        current = {}
        for msg in msgs:
            if "/_stream/" not in msg.topic:
                u = decode_sample(msg.payload, msg.topic)
                current[split_topic(msg.topic, ASSETS, root)] = u.sample.value
        assert current == latest

        late = Subscriber(1883, f"{root}/{LINE}/#")  # joins afterwards: gets only retained values
        retained = await asyncio.to_thread(late.drain)
        late.close()
        assert all(m.retain for m in retained)
        assert {
            split_topic(m.topic, ASSETS, root): decode_sample(m.payload, m.topic).sample.value
            for m in retained
        } == latest
        assert len(retained) == len(latest)
        clear_retained(root, [m.topic for m in retained])

    run(scenario())


def clear_retained(root: str, topics: list[str]) -> None:
    c = paho.Client(CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", 1883)
    c.loop_start()
    for t in topics:
        c.publish(t, b"", qos=1, retain=True).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def test_only_changed_values_are_republished(tmp_path: Path, root: str) -> None:
    async def scenario() -> None:
        sub = Subscriber(1883, f"{root}/#")
        a, b = ASSETS[1], ASSETS[2]
        async with (
            DurableBuffer(tmp_path / "gw.db") as buf,
            UnsPublisher(
                "mqtt://127.0.0.1:1883", buf, line=LINE, epoch=EPOCH, run_id="r",
                root=root, only_changed=True,
            ) as pub,
        ):  # fmt: skip
            for t, va, vb in [(1.0, 5, 7), (2.0, 5, 8), (3.0, 5, 8), (4.0, 6, 8)]:
                await pub.submit([Sample(t, a, "Level", va), Sample(t, b, "Level", vb)])
                async with asyncio.timeout(10):
                    await pub.flush()
            assert pub.metrics.current_values == 4 and pub.metrics.forwarded == 8
        msgs = await asyncio.to_thread(sub.drain)
        sub.close()
        current = [
            (m.topic.rsplit("/", 2)[-2], decode_sample(m.payload).sample.value)
            for m in msgs
            if "/_stream/" not in m.topic
        ]
        assert current == [("bonder-01", 5), ("bonder-02", 7), ("bonder-02", 8), ("bonder-01", 6)]
        assert len(stream_of(msgs)) == 8
        clear_retained(root, [f"{root}/{a}/Level", f"{root}/{b}/Level"])

    run(scenario())


# --------------------------------------------------------------------------- outages


@pytest.fixture
def broker() -> Iterator[int]:
    """A second Mosquitto on a free port, the output that goes away and comes back."""
    exe = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if exe is None:
        pytest.skip("the mosquitto binary is not installed: cannot start a second broker")
    port = free_port()
    proc = subprocess.Popen([exe, "-p", str(port)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"mosquitto did not listen on {port} within 5 s")
        time.sleep(0.02)
    yield port
    proc.terminate()
    proc.wait(5)


def test_unreachable_output_buffers_then_delivers_exactly_once(
    tmp_path: Path, root: str, broker: int
) -> None:
    async def body(relay: Relay) -> None:
        sub = Subscriber(broker, f"{root}/_stream/#")
        samples = make_samples(3000)
        async with (
            DurableBuffer(tmp_path / "gw.db") as buf,
            UnsPublisher(
                f"mqtt://127.0.0.1:{relay.port}", buf, line=LINE, epoch=EPOCH, run_id="r-out",
                root=root, batch_size=250, backoff_initial=0.05, backoff_max=0.2,
            ) as pub,
        ):  # fmt: skip
            for k in range(0, 3000, 500):
                await pub.submit(samples[k : k + 500])
            await asyncio.sleep(0.5)  # several failed connection attempts
            assert not pub.connected
            assert (pub.metrics.buffered, pub.metrics.forwarded, pub.metrics.connects) == (
                3000,
                0,
                0,
            )
            await relay.up()  # the output is back
            async with asyncio.timeout(20):
                await pub.flush()
            assert pub.metrics.connects == 1 and pub.metrics.forwarded == 3000
        stream = stream_of(await asyncio.to_thread(sub.drain))
        sub.close()
        assert [s.value for _, s in stream] == list(range(3000))  # nothing missing, nothing doubled

    run_through_relay(broker, body)


def test_overflow_while_unreachable_keeps_the_newest(
    tmp_path: Path, root: str, broker: int
) -> None:
    async def body(relay: Relay) -> None:
        sub = Subscriber(broker, f"{root}/_stream/#")
        async with (
            DurableBuffer(tmp_path / "gw.db", max_rows=1000) as buf,
            UnsPublisher(
                f"mqtt://127.0.0.1:{relay.port}", buf, line=LINE, epoch=EPOCH, run_id="r-ov",
                root=root, backoff_initial=0.05, backoff_max=0.2,
            ) as pub,
        ):  # fmt: skip
            for k in range(0, 3000, 300):
                await pub.submit(make_samples(300, start=k))
            assert (pub.metrics.dropped, pub.metrics.buffered) == (2000, 1000)
            await relay.up()
            async with asyncio.timeout(20):
                await pub.flush()
            assert pub.metrics.forwarded == 1000
        stream = stream_of(await asyncio.to_thread(sub.drain))
        sub.close()
        assert [s.value for _, s in stream] == list(range(2000, 3000))  # drop oldest

    run_through_relay(broker, body)


def test_cut_connections_lose_nothing_and_resends_carry_the_same_ids(
    tmp_path: Path, root: str, broker: int
) -> None:
    async def body(relay: Relay) -> None:
        sub = Subscriber(broker, f"{root}/_stream/#")
        n = 20_000
        samples = make_samples(n)
        await relay.up()
        async with (
            DurableBuffer(tmp_path / "gw.db") as buf,
            UnsPublisher(
                f"mqtt://127.0.0.1:{relay.port}", buf, line=LINE, epoch=EPOCH, run_id="r-cut",
                root=root, batch_size=200, backoff_initial=0.05, backoff_max=0.2,
            ) as pub,
        ):  # fmt: skip
            for k in range(0, n, 1000):
                await pub.submit(samples[k : k + 1000])
                if k in (5000, 12000):  # outages while batches are in flight
                    await relay.down()
                    await asyncio.sleep(0.3)
                    await relay.up()
                    async with asyncio.timeout(5):
                        await pub.wait_connected()
            async with asyncio.timeout(30):
                await pub.flush()
            assert pub.metrics.connection_losses >= 2 and pub.metrics.connects >= 3
            assert pub.metrics.forwarded == n and pub.metrics.buffered == 0
        stream = stream_of(await asyncio.to_thread(sub.drain))
        sub.close()
        first_seen: dict[str, Sample] = {}
        for i, s in stream:
            if i in first_seen:
                assert first_seen[i] == s  # a resend is the same sample under the same id
            else:
                first_seen[i] = s
        # after dedup by id: every sample exactly once, in the original order
        assert [s.value for s in first_seen.values()] == list(range(n))
        # a resend is a batch whose PUBACK the outage swallowed, or one the broker confirmed
        # within resend_window s before the loss (it may have died undelivered): counted
        assert pub.metrics.resends >= 1 and pub.metrics.resent > 0
        unconfirmed = 2 * pub.max_inflight_batches * pub.batch_size
        assert len(stream) - n <= unconfirmed + pub.metrics.resent

    run_through_relay(broker, body)


def test_restart_replays_what_the_broker_never_confirmed(
    tmp_path: Path, root: str, broker: int
) -> None:
    async def scenario() -> None:
        dead = free_port()
        async with (
            DurableBuffer(tmp_path / "gw.db") as buf,
            UnsPublisher(
                f"mqtt://127.0.0.1:{dead}", buf, line=LINE, epoch=EPOCH, run_id="r-rs", root=root
            ) as pub,
        ):
            await pub.submit(make_samples(700))
        sub = Subscriber(broker, f"{root}/_stream/#")
        async with (
            DurableBuffer(tmp_path / "gw.db") as buf,
            UnsPublisher(
                f"mqtt://127.0.0.1:{broker}", buf, line=LINE, epoch=EPOCH, run_id="r-rs", root=root
            ) as pub,
        ):
            assert pub.metrics.buffered == 700
            await pub.submit(make_samples(300, start=700))
            async with asyncio.timeout(20):
                await pub.flush()
        stream = stream_of(await asyncio.to_thread(sub.drain))
        sub.close()
        assert [s.value for _, s in stream] == list(range(1000))

    run(scenario())
