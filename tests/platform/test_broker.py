"""The embedded broker: a free port on 127.0.0.1, carries messages, leaves 1883 alone."""

from __future__ import annotations

import asyncio
import queue
import socket
import uuid

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from iiotbed.errors import ConnectorError
from iiotbed.mqtt import stop_client
from iiotbed.platform.broker import EmbeddedBroker, find_mosquitto

pytestmark = pytest.mark.timeout(60)

KINDS = [
    pytest.param(
        "mosquitto",
        marks=pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
    ),
    "amqtt",
]


class Client:
    def __init__(self, port: int, topic: str | None = None) -> None:
        self.got: queue.Queue[bytes] = queue.Queue()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex}")
        subscribed: queue.Queue[int] = queue.Queue()
        self.client.on_message = lambda c, u, m: self.got.put(m.payload)
        self.client.on_subscribe = lambda c, u, mid, rc, p: subscribed.put(mid)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if topic is not None:
            self.client.subscribe(topic, qos=1)
            subscribed.get(timeout=5)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        stop_client(self.client)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_embedded_broker_carries_messages_on_its_own_port(kind: str) -> None:
    topic = f"test/{uuid.uuid4().hex}"
    shared_1883 = _listening(1883)

    async def main() -> int:
        async with EmbeddedBroker(kind) as broker:  # type: ignore[arg-type]
            assert broker.kind == kind
            assert broker.port != 1883 and broker.url == f"mqtt://127.0.0.1:{broker.port}"
            sub = await asyncio.to_thread(Client, broker.port, topic)
            other = await asyncio.to_thread(Client, 1883, topic) if shared_1883 else None
            pub = await asyncio.to_thread(Client, broker.port)
            try:
                await asyncio.to_thread(pub.publish, topic, b"hello")
                assert await asyncio.to_thread(sub.got.get, True, 5) == b"hello"
                if other is not None:  # the broker on 1883 saw nothing of it
                    with pytest.raises(queue.Empty):
                        other.got.get(timeout=0.3)
            finally:
                for c in (sub, pub, other):
                    if c is not None:
                        await asyncio.to_thread(c.close)
            port = broker.port
        return port

    port = asyncio.run(main())
    assert not _listening(port)  # stopped on close
    assert _listening(1883) == shared_1883  # whatever ran on 1883 still does


def test_the_url_is_known_only_while_started() -> None:
    async def main() -> None:
        broker = EmbeddedBroker("mosquitto", start_timeout=2.0)
        if find_mosquitto() is None:
            with pytest.raises(ConnectorError, match="not installed"):
                await broker.open()
            return
        with pytest.raises(ConnectorError, match="not started"):
            _ = broker.url
        await broker.open()
        await broker.close()
        await broker.close()  # twice is fine
        with pytest.raises(ConnectorError, match="not started"):
            _ = broker.url

    asyncio.run(main())
