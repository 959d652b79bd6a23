"""The one MQTT transport (iiotbed.mqtt) through the real Mosquitto on 127.0.0.1:1883:
the awaitable QoS 1 publish, the reconnect loop and its backoff policy."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import Coroutine
from typing import Any

import pytest

from iiotbed.errors import ConnectorError
from iiotbed.mqtt import Backoff, Message, MqttConnection

pytestmark = [pytest.mark.network, pytest.mark.timeout(60)]

BROKER = "mqtt://127.0.0.1:1883"


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HoldingRelay:
    """A TCP relay to the broker that can hold back what the broker sends (its PUBACKs)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.hold = False
        self.held = 0  # bytes from the broker swallowed while holding
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> HoldingRelay:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        self.cut()
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()  # 3.12+: only returns once every connection is closed

    def cut(self) -> None:
        for w in self.writers:
            w.transport.abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", 1883)
        self.writers += [writer, up_w]
        for src, dst, down in ((reader, up_w, False), (up_r, writer, True)):
            task = asyncio.create_task(self._pipe(src, dst, down))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, down: bool) -> None:
        try:
            while data := await src.read(65536):
                if down and self.hold:
                    self.held += len(data)
                    continue
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.transport.abort()


def _connection(broker: str, **kw: Any) -> MqttConnection:
    return MqttConnection(
        broker, client_id=f"t-{uuid.uuid4().hex[:12]}", on_message=lambda m: None, **kw
    )


def test_publish_acked_returns_after_the_puback_and_the_broker_has_the_message() -> None:
    topic = f"test-mqtt/{uuid.uuid4().hex[:10]}/acked"

    async def scenario() -> None:
        got: asyncio.Queue[Message] = asyncio.Queue()
        async with _connection(BROKER) as pub:
            await pub.publish_acked(topic, b"v1", retain=True)
            assert pub.stats.published == 1
            # retained by the broker before its PUBACK: a subscriber joining now gets it
            async with MqttConnection(
                BROKER, client_id=f"s-{uuid.uuid4().hex[:12]}", on_message=got.put_nowait,
                subscriptions=[(topic, 1)],
            ):  # fmt: skip
                async with asyncio.timeout(5):
                    msg = await got.get()
            assert (msg.topic, msg.payload, msg.retain) == (topic, b"v1", True)
            # several messages, one future: resolved when the last PUBACK is in
            done = pub.send([(f"{topic}/{i}", b"x", False) for i in range(500)])
            assert not done.done()
            async with asyncio.timeout(5):
                await done
            assert pub.stats.published == 501
            await pub.publish_acked(topic, b"", retain=True)  # clear the retained value

    run(scenario())


def test_publish_acked_waits_for_the_puback_and_raises_when_the_connection_drops_first() -> None:
    topic = f"test-mqtt/{uuid.uuid4().hex[:10]}/dropped"

    async def scenario() -> None:
        async with HoldingRelay() as relay:
            async with _connection(
                f"mqtt://127.0.0.1:{relay.port}", backoff=Backoff(0.05, 0.1)
            ) as conn:
                await conn.publish_acked(topic, b"through")  # the relay passes PUBACKs: returns
                relay.hold = True  # from now on the broker's PUBACKs never reach us
                pending = asyncio.ensure_future(conn.publish_acked(topic, b"held"))
                await asyncio.sleep(0.5)
                assert relay.held > 0  # the broker did answer...
                assert not pending.done()  # ...but without its PUBACK the publish is not done
                relay.cut()  # the connection drops before the PUBACK comes
                with pytest.raises(ConnectorError, match="lost the connection"):
                    async with asyncio.timeout(5):
                        await pending
                relay.hold = False
                async with asyncio.timeout(5):
                    await conn.wait_connected()  # reconnected by itself: the caller resends
                await conn.publish_acked(topic, b"held")
            assert conn.stats.connects == 2 and conn.stats.connection_losses == 1

    run(scenario())


def test_publish_acked_raises_at_once_while_not_connected() -> None:
    async def scenario() -> None:
        # a broker that is not there: connect_in_background returns at once, retrying behind
        async with _connection(f"mqtt://127.0.0.1:{free_port()}", connect_in_background=True,
                               backoff=Backoff(0.05, 0.1)) as conn:  # fmt: skip
            assert not conn.connected and conn.session is None
            with pytest.raises(ConnectorError, match="cannot publish"):
                await conn.publish_acked("test-mqtt/nowhere", b"x")
            assert conn.stats.dropped == 1

    run(scenario())


def test_a_failing_connection_lost_handler_is_logged_and_reconnection_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []

    def broken_handler() -> None:
        calls.append(1)
        raise RuntimeError("handler bug")

    async def scenario() -> None:
        connected = asyncio.Event()
        async with _connection(
            BROKER, on_connection_lost=broken_handler, on_connect=connected.set,
            backoff=Backoff(0.05, 0.1),
        ) as conn:  # fmt: skip
            for _ in range(2):  # twice: the loop survives the handler's failure every time
                connected.clear()
                conn.abort()
                async with asyncio.timeout(10):
                    await connected.wait()
            await conn.publish_acked(f"test-mqtt/{uuid.uuid4().hex[:10]}/after", b"ok")
            assert (conn.stats.connects, conn.stats.connection_losses) == (3, 2)

    with caplog.at_level(logging.ERROR, logger="iiotbed.mqtt"):
        run(scenario())
    assert len(calls) == 2
    failures = [r for r in caplog.records if "on_connection_lost handler" in r.getMessage()]
    assert len(failures) == 2
    assert failures[0].exc_info is not None and isinstance(failures[0].exc_info[1], RuntimeError)


def test_backoff_doubles_within_jitter_up_to_its_maximum_and_resets() -> None:
    b = Backoff(0.1, 0.4)
    waits = [b.next() for _ in range(5)]
    bounds = [0.1, 0.2, 0.4, 0.4, 0.4]
    assert all(d / 2 <= w <= d for w, d in zip(waits, bounds, strict=True))
    b.reset()
    assert 0.05 <= b.next() <= 0.1
    with pytest.raises(ValueError, match="0 < initial <= maximum"):
        Backoff(1.0, 0.5)
