"""The UNS publisher's hand-over to the platform's ingest, against a real Mosquitto.

A consumer here is a plain paho client that behaves as the ingest does on the wire: a
persistent session under a fixed client id, QoS 1, and a retained presence on
``<root>/_ingest/<client id>/status`` (``online`` after its SUBACK, ``offline`` as Will).
The broker runs without persistence and is killed (``-9``) and started again.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from gwkit import Mosquitto
from paho.mqtt.enums import CallbackAPIVersion
from test_publisher import EPOCH, LINE, make_samples

from iiotbed.gateway import DurableBuffer, UnsPublisher
from iiotbed.protocols.uns import decode_batch

pytestmark = [pytest.mark.network, pytest.mark.timeout(60)]


class Consumer:
    """An ingest-like stream consumer; ``ack=False`` never acknowledges (a stalled ingest:
    the broker keeps at most 20 messages in flight to it and queues the rest)."""

    def __init__(self, port: int, root: str, *, ack: bool = True, announce: bool = True) -> None:
        self.port, self.root, self.ack, self.announce = port, root, ack, announce
        self.client_id = f"consumer-{uuid.uuid4().hex[:8]}"
        self.presence = f"{root}/_ingest/{self.client_id}/status"
        self.values: list[Any] = []  # every stream sample value received, in order
        self.lock = threading.Lock()
        self.client: paho.Client | None = None

    def connect(self) -> None:
        subscribed: queue.Queue[int] = queue.Queue()
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        clean_session=False, manual_ack=True)  # fmt: skip
        c.will_set(self.presence, b"offline", qos=1, retain=True)
        c.on_message = self._on_message
        c.on_subscribe = lambda c_, u, mid, rc, p: subscribed.put(mid)
        c.connect("127.0.0.1", self.port)
        c.loop_start()
        c.subscribe(f"{self.root}/_stream/#", qos=1)
        subscribed.get(timeout=5)
        if self.announce:
            c.publish(self.presence, b"online", qos=1, retain=True)
        self.client = c

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        samples, _ = decode_batch(msg.payload, msg.topic)
        with self.lock:
            self.values.extend(u.sample.value for u in samples)
        if self.ack:
            client.ack(msg.mid, msg.qos)

    def seen(self) -> set[Any]:
        with self.lock:
            return set(self.values)

    def drop(self) -> None:
        """The broker died: stop this client (no DISCONNECT reaches anyone)."""
        if self.client is not None:
            self.client.loop_stop()
            self.client.socket() and self.client.socket().close()  # type: ignore[union-attr]
            self.client = None

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None


async def until(cond: Any, limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {limit} s waiting for {what}")
        await asyncio.sleep(0.02)


def publisher(port: int, buf: DurableBuffer, root: str, **kw: Any) -> UnsPublisher:
    return UnsPublisher(f"mqtt://127.0.0.1:{port}", buf, line=LINE, epoch=EPOCH, run_id="r-ho",
                        root=root, batch_size=50, backoff_initial=0.05, backoff_max=0.2,
                        current_values=False, **kw)  # fmt: skip


@pytest.fixture
def root() -> str:
    return f"uns-ho-{uuid.uuid4().hex[:8]}"


def test_require_holds_the_stream_back_until_an_ingest_is_online(
    tmp_path: Path, root: str, mosquitto: Mosquitto
) -> None:
    async def scenario() -> None:
        consumer = Consumer(mosquitto.port, root)
        async with (
            DurableBuffer(tmp_path / "gw.db") as buf,
            publisher(mosquitto.port, buf, root, ingest="require") as pub,
        ):
            await pub.wait_connected()
            await pub.submit(make_samples(500))
            await asyncio.sleep(0.5)
            assert pub.waiting_for_ingest
            m = pub.metrics
            assert (m.forwarded, m.holds, m.buffered) == (0, 1, 500)
            await asyncio.to_thread(consumer.connect)  # announces itself online
            async with asyncio.timeout(10):
                await pub.flush()
            assert (m.forwarded, m.held_back, m.ingests_online) == (500, 500, 1)
            await until(lambda: len(consumer.seen()) == 500, 5, "the 500 samples")
            # the consumer goes away uncleanly: its Will says offline, the stream waits
            consumer.drop()
            await until(lambda: pub.waiting_for_ingest, 60, "the consumer's Will")
            await pub.submit(make_samples(300, start=500))
            await asyncio.sleep(0.3)
            assert m.forwarded == 500 and m.holds == 2 and m.buffered == 300
            await asyncio.to_thread(consumer.connect)
            async with asyncio.timeout(10):
                await pub.flush()
            assert m.forwarded == 800 and m.held_back == 800
        await until(lambda: len(consumer.seen()) == 800, 5, "all 800 samples")
        consumer.close()

    asyncio.run(scenario())


def test_auto_waits_only_once_an_ingest_was_online(
    tmp_path: Path, root: str, mosquitto: Mosquitto
) -> None:
    async def scenario() -> None:
        consumer = Consumer(mosquitto.port, root, announce=False)
        await asyncio.to_thread(consumer.connect)
        async with (
            DurableBuffer(tmp_path / "gw.db") as buf,
            publisher(mosquitto.port, buf, root) as pub,  # ingest="auto", the default
        ):
            await pub.submit(make_samples(200))
            async with asyncio.timeout(10):
                await pub.flush()  # nobody announced: a gateway alone forwards at once
            assert pub.metrics.holds == 0 and not pub.waiting_for_ingest
            consumer.client.publish(consumer.presence, b"online", qos=1, retain=True)  # type: ignore[union-attr]
            await until(lambda: pub.metrics.ingests_online == 1, 5, "the announcement")
            consumer.client.publish(consumer.presence, b"offline", qos=1, retain=True)  # type: ignore[union-attr]
            await until(lambda: pub.waiting_for_ingest, 5, "the offline announcement")
            await pub.submit(make_samples(100, start=200))
            await asyncio.sleep(0.3)
            assert pub.metrics.forwarded == 200 and pub.metrics.holds == 1
        await until(lambda: len(consumer.seen()) == 200, 5, "the first 200 samples")
        consumer.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("fixed", [True, False], ids=["hand-over", "without-hand-over"])
def test_broker_restart_without_persistence_loses_nothing(
    tmp_path: Path, root: str, mosquitto: Mosquitto, fixed: bool
) -> None:
    """A stalled consumer (the broker PUBACKed batches it had not delivered) and samples
    submitted after the restart before the consumer subscribed again: with the hand-over
    every sample arrives; without it (``ingest="off"``, no resend) both groups are lost."""

    async def scenario() -> None:
        consumer = Consumer(mosquitto.port, root, ack=False)
        await asyncio.to_thread(consumer.connect)
        kw: dict[str, Any] = {} if fixed else {"ingest": "off", "resend_window": 0.0}
        async with (
            DurableBuffer(tmp_path / "gw.db") as buf,
            publisher(mosquitto.port, buf, root, **kw) as pub,
        ):
            await until(lambda: fixed is False or pub.metrics.ingests_online == 1, 5, "presence")
            await pub.submit(make_samples(2000))  # 40 stream messages
            async with asyncio.timeout(10):
                await pub.flush()  # all PUBACKed by the broker
            await until(lambda: len(consumer.seen()) >= 1000, 5, "20 messages in flight")
            delivered = len(consumer.seen())
            assert delivered < 2000  # the broker holds the rest for the stalled consumer
            mosquitto.stop()  # kill -9: the queued messages and every session die
            consumer.drop()
            mosquitto.start()
            async with asyncio.timeout(10):
                await pub.wait_connected()
            await pub.submit(make_samples(500, start=2000))
            await asyncio.sleep(0.5)  # the consumer is not back yet
            if fixed:
                assert pub.waiting_for_ingest and pub.metrics.forwarded == 2000
            consumer.ack = True
            await asyncio.to_thread(consumer.connect)
            async with asyncio.timeout(10):
                await pub.flush()
            await asyncio.sleep(0.5)
            m = pub.metrics
            seen = consumer.seen()
            if fixed:
                assert m.resends == 1 and m.resent == 2000  # all confirmed within 2 s
                assert m.held_back == 500 and m.forwarded == 2500
                await until(lambda: len(consumer.seen()) == 2500, 5, "every sample")
                assert consumer.seen() == set(range(2500))
            else:
                assert m.resent == 0 and m.forwarded == 2500
                assert len(seen) == delivered  # both the queued and the new samples are lost
        consumer.close()

    asyncio.run(scenario())
