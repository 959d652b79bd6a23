"""A small asyncio face on paho-mqtt 2.x: the one MQTT transport of devices, gateway and platform.

One :class:`MqttConnection` owns one broker session at a time: it connects with a Will,
re-subscribes and calls ``on_connect`` after every (re)connect, hands received messages to
the asyncio loop, and after a lost connection reconnects with the one reconnect policy,
:class:`Backoff` (bounded exponential, with jitter). :meth:`MqttConnection.send` and
:meth:`~MqttConnection.publish_acked` are the awaitable QoS 1 publish: they return when the
broker PUBACKed and raise if the connection ended first, so the caller can resend. paho
errors leave this module as :class:`~iiotbed.errors.ConnectorError`. ``mqtts://`` URLs
(:mod:`iiotbed.brokerurl`) use TLS and a login; a refusal raises :class:`BrokerRefused` once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from iiotbed._aio import AsyncClosing
from iiotbed.brokerurl import (  # re-exported
    BrokerRefused,
    BrokerUrl,
    parse_broker_url,
    redact_url,
    refusal,
    tls_context,
    tls_failure,
)
from iiotbed.errors import ConnectorError

__all__ = ["Backoff", "BrokerRefused", "BrokerUrl", "ConnectionStats", "Message", "MqttAdapter",
           "MqttConnection", "Will", "parse_broker_url", "redact_url", "stop_client"]  # fmt: skip

log = logging.getLogger(__name__)


def stop_client(client: paho.Client) -> None:
    """Join paho's network thread and close the socket pair it wakes itself with (blocking).

    paho closes that pair only when a client is reused; a dropped client leaks two sockets.
    """
    client.loop_stop()
    client._reset_sockets(sockpair_only=True)


class Backoff:
    """Bounded exponential backoff with jitter: waits in [d/2, d], d doubling up to ``maximum``.

    The one reconnect policy of every client (MQTT connections, the UNS publisher, ingest,
    the OPC UA collector).
    """

    def __init__(self, initial: float = 0.5, maximum: float = 10.0) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"backoff needs 0 < initial <= maximum, got {initial}, {maximum}")
        self.initial = initial
        self.maximum = maximum
        self._delay = initial
        # Jitter only spreads reconnect storms of many clients; it never touches data.
        self._rng = random.Random()

    def reset(self) -> None:
        self._delay = self.initial

    def next(self) -> float:
        """The next wait in seconds; each call doubles the bound up to ``maximum``."""
        wait = self._delay * (0.5 + 0.5 * self._rng.random())
        self._delay = min(self._delay * 2, self.maximum)
        return wait


@dataclass(frozen=True)
class Will:
    """The message the broker publishes for us when the connection dies uncleanly."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False


@dataclass(frozen=True)
class Message:
    """One received message, delivered in the asyncio loop (``mid``, ``session``: for ack)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int = 0
    session: int = 0


@dataclass
class ConnectionStats:
    """Counters of one :class:`MqttConnection` (all since construction)."""

    connects: int = 0
    connection_losses: int = 0
    published: int = 0
    dropped: int = 0
    received: int = 0


class _Acks:
    """The acknowledgements one :meth:`MqttConnection.send` waits for."""

    __slots__ = ("done", "remaining")

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.remaining = 0


@dataclass
class _Session:
    """One paho client = one broker connection; a reconnect makes a new one."""

    client: paho.Client
    generation: int
    connack: asyncio.Future[int] = field(repr=False)
    waiting: dict[int, _Acks] = field(default_factory=dict, repr=False)  # by paho mid
    tracking: int = 0  # sends not yet settled: paho's thread forwards on_publish only then


class MqttConnection(AsyncClosing):
    """An MQTT 3.1.1 session (clean unless asked) that survives broker restarts.

    ``will`` is called before every CONNECT so a caller can put fresh data in it
    (Sparkplug's bdSeq). ``on_connect`` runs in the event loop after each CONNACK,
    once the subscriptions are requested; ``on_message`` and ``on_connection_lost`` run
    in the event loop too (an exception in any of them is logged, never fatal).

    ``async with`` connects once and raises :class:`ConnectorError` when the broker is
    away, unless ``connect_in_background``: then it returns at once and the first
    connect is retried like every reconnect (:meth:`wait_connected` waits for it).
    ``max_inflight`` bounds QoS 1 messages awaiting PUBACK (paho queues the rest);
    ``nodelay`` turns Nagle off, for clients that keep many small messages in flight.

    ``clean_session=False`` keeps the broker's session (subscriptions, QoS 1 messages
    queued while away, messages sent but not acknowledged) across connections of the same
    ``client_id``; with ``manual_ack`` a received QoS 1 message is acknowledged only by
    :meth:`ack`, so one never acknowledged is sent again on the next connection.
    """

    def __init__(
        self,
        broker: str,
        *,
        client_id: str,
        on_message: Callable[[Message], None],
        subscriptions: Sequence[tuple[str, int]] = (),
        will: Callable[[], Will | None] | None = None,
        on_connect: Callable[[], None] | None = None,
        on_connection_lost: Callable[[], None] | None = None,
        keepalive: int = 30,
        connect_timeout: float = 10.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        backoff: Backoff | None = None,
        connect_in_background: bool = False,
        max_inflight: int = 20,
        nodelay: bool = False,
        clean_session: bool = True,
        manual_ack: bool = False,
    ) -> None:
        self.url = parse_broker_url(broker)
        self.client_id = client_id
        self._login = self.url.login(client_id)
        self._tls = tls_context(self.url) if self.url.tls else None
        self.stats = ConnectionStats()
        self._on_message = on_message
        self._subscriptions = list(subscriptions)
        self._will = will
        self._on_connect = on_connect
        self._on_connection_lost = on_connection_lost
        self._keepalive = keepalive
        self._connect_timeout = connect_timeout
        self._backoff = backoff if backoff is not None else Backoff(backoff_initial, backoff_max)
        self._background = connect_in_background
        self._max_inflight = max_inflight
        self._nodelay = nodelay
        self._clean_session = clean_session
        self._manual_ack = manual_ack
        self._session: _Session | None = None
        self._generation = 0
        self._closing = False
        self._lost = asyncio.Event()
        self._up = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.refused: BrokerRefused | None = None  # refused for good: nothing reconnects

    @property
    def connected(self) -> bool:
        """True between a successful CONNACK and the loss or close of that connection."""
        s = self._session
        return s is not None and s.connack.done() and s.client.is_connected()

    @property
    def session(self) -> int | None:
        """Names the session in use (new on every reconnect); None while not connected."""
        s = self._session
        return s.generation if s is not None and self.connected else None

    async def wait_connected(self) -> None:
        """Wait until a connection is up (at once when it is); raises a :class:`BrokerRefused`."""
        if self.refused is not None:
            raise self.refused
        await self._up.wait()
        if self.refused is not None:
            raise self.refused

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        if not self._background:
            await self._connect_once()
        else:
            self._lost.set()  # the supervisor makes the first connect, retrying with backoff
        self._supervisor = asyncio.create_task(
            self._supervise(first=self._background), name=f"mqtt-reconnect-{self.client_id}"
        )

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        """Queue a message; False (and counted as dropped) while not connected."""
        s = self._session
        if s is None or not self.connected:
            self.stats.dropped += 1
            return False
        info = s.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            self.stats.dropped += 1
            return False
        self.stats.published += 1
        return True

    def send(
        self, messages: Sequence[tuple[str, bytes, bool]], *, qos: int = 1
    ) -> asyncio.Future[None]:
        """Queue ``(topic, payload, retain)`` messages in order on the current connection.

        The future resolves when the broker acknowledged all of them (PUBACK at QoS 1,
        written at QoS 0); it fails with :class:`ConnectorError` when the connection ends
        first: resend them then, on the next connection.
        """
        assert self._loop is not None, "send() needs an open connection: use `async with`"
        acks = _Acks(self._loop.create_future())
        s, rc = self._session, paho.MQTT_ERR_NO_CONN
        if s is not None and self.connected:
            if s.client.on_publish is None:
                # installed on the first send only: paho calls on_publish for every message
                # it writes, which costs a fire-and-forget publisher (Sparkplug, VDA 5050) ~25 %
                s.client.on_publish = _paho_on_publish(s, self._call_in_loop)
            # counted before the first publish: a PUBACK racing in on paho's thread is forwarded
            s.tracking += 1
            acks.done.add_done_callback(lambda _: _untrack(s))
            publish, waiting = s.client.publish, s.waiting
            for topic, payload, retain in messages:
                info = publish(topic, payload, qos=qos, retain=retain)
                if (rc := info.rc) != paho.MQTT_ERR_SUCCESS:
                    break
                acks.remaining += 1
                waiting[info.mid] = acks
            self.stats.published += acks.remaining
        if rc == paho.MQTT_ERR_SUCCESS:
            if acks.remaining == 0:
                acks.done.set_result(None)
            return acks.done
        self.stats.dropped += len(messages) - acks.remaining
        topic = messages[acks.remaining][0] if messages else ""
        acks.done.set_exception(
            ConnectorError(
                f"cannot publish to {topic!r} on {self.url}: {paho.error_string(rc)}",
                endpoint=topic,
            )
        )
        return acks.done

    def ack(self, msg: Message) -> bool:
        """Acknowledge (PUBACK) a message received with ``manual_ack``; False, and nothing
        sent, when it came on an earlier connection: the broker sends that one again."""
        s = self._session
        if not self._manual_ack or msg.qos == 0 or s is None or s.generation != msg.session:
            return False
        if not self.connected:  # the broker sends it again on the next connection
            return False
        # paho's ack() only queues the packet for its network thread (under its lock)
        return s.client.ack(msg.mid, msg.qos) == paho.MQTT_ERR_SUCCESS

    async def publish_acked(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and return once the broker's PUBACK arrived; raises
        :class:`ConnectorError` if the connection drops first (resend it then)."""
        await self.send([(topic, payload, retain)])

    async def publish_and_wait(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, ack_wait: float = 5.0
    ) -> None:
        """:meth:`publish_acked` at any QoS, waiting at most ``ack_wait`` seconds."""
        try:
            async with asyncio.timeout(ack_wait):
                await asyncio.shield(self.send([(topic, payload, retain)], qos=qos))
        except TimeoutError:
            raise ConnectorError(
                f"publishing to {topic!r} on {self.url} was not acknowledged within {ack_wait} s",
                endpoint=topic,
            ) from None

    def abort(self) -> None:
        """Drop the TCP link without DISCONNECT, as a network outage would.

        The broker then publishes the Will, and the connection reconnects with backoff.
        """
        s = self._session
        if s is None:
            return
        sock = s.client.socket()
        if isinstance(sock, socket.socket):
            # shutdown, not close: it wakes paho's select() in its thread with EOF.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    async def reconnect(self) -> None:
        """Disconnect cleanly and connect again (a new CONNECT, so a fresh Will)."""
        s, self._session = self._session, None
        self._generation += 1  # the old session's on_disconnect is now stale
        self._up.clear()
        if s is not None:
            _fail(s, ConnectorError(f"reconnecting to {self.url}", endpoint=str(self.url)))
            s.client.disconnect()
            await asyncio.to_thread(stop_client, s.client)
        try:
            await self._connect_once()
        except ConnectorError as exc:
            log.warning("%s; the reconnect loop takes over", exc)
            self._lost.set()

    async def close(self) -> None:
        """Send DISCONNECT (so the broker drops the Will) and stop the network thread."""
        if self._closing:
            return
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        s, self._session = self._session, None
        self._up.clear()
        if s is not None:
            _fail(s, ConnectorError(f"the connection to {self.url} closed", endpoint=str(self.url)))
            s.client.disconnect()
            # loop_stop joins paho's thread: a blocking call, so it runs in a worker thread.
            await asyncio.to_thread(stop_client, s.client)

    async def _connect_once(self) -> None:
        loop = self._loop
        assert loop is not None
        self._generation += 1
        gen = self._generation
        # reconnect_on_failure=False: paho's thread ends when the link dies and we
        # reconnect ourselves, because every CONNECT needs a freshly computed Will.
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=self._clean_session,
            protocol=paho.MQTTv311,
            reconnect_on_failure=False,
            manual_ack=self._manual_ack,
        )
        if self._max_inflight != 20:  # paho's default
            client.max_inflight_messages_set(self._max_inflight)
        session = _Session(client, gen, loop.create_future())
        will = self._will() if self._will is not None else None
        if will is not None:
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        client.on_connect = self._paho_on_connect(session)
        client.on_disconnect = self._paho_on_disconnect(session)
        client.on_message = self._paho_on_message(session)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        if self._login is not None:
            client.username_pw_set(*self._login)
        try:
            # connect() does the blocking TCP handshake; the network loop then runs in
            # paho's own thread (loop_start) so a busy event loop never starves keepalives.
            await asyncio.to_thread(client.connect, self.url.host, self.url.port, self._keepalive)
            client.loop_start()
            sock = client.socket()
            if self._nodelay and isinstance(sock, socket.socket):
                # paho leaves Nagle on: with many small QoS 1 packets in flight it stalls each
                # burst for a delayed ACK (~40 ms on Linux).
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rc = await asyncio.wait_for(session.connack, self._connect_timeout)
        except asyncio.CancelledError:
            # Closing mid-connect: stop this client now so no orphan session (and its Will)
            # outlives us. A short blocking join, only on this path.
            client.disconnect()
            stop_client(client)
            raise
        except ssl.SSLError as exc:  # before OSError (its base): a retry cannot fix it
            await asyncio.to_thread(stop_client, client)
            raise tls_failure(self.url, exc) from exc
        except (OSError, TimeoutError) as exc:
            await asyncio.to_thread(stop_client, client)
            raise ConnectorError(
                f"cannot connect to MQTT broker {self.url} as {self.client_id!r}: {exc!r}; "
                "is the broker running and reachable?",
                endpoint=str(self.url),
            ) from exc
        if rc != 0:
            await asyncio.to_thread(stop_client, client)
            raise refusal(self.url, self.client_id, self._login, rc)
        self._session = session
        self._up.set()
        self.stats.connects += 1
        for topic, qos in self._subscriptions:
            client.subscribe(topic, qos)
        if self._on_connect is not None:
            try:
                self._on_connect()
            except Exception:
                log.exception("on_connect handler of %s failed", self.client_id)

    async def _supervise(self, first: bool = False) -> None:
        backoff = self._backoff
        while not self._closing:
            await self._lost.wait()
            self._lost.clear()
            if not first and self._on_connection_lost is not None:
                try:
                    self._on_connection_lost()
                except Exception:
                    # a handler bug must not end reconnection: logged with its traceback
                    log.exception("on_connection_lost handler of %s failed", self.client_id)
            backoff.reset()
            # the first connect of a background start is tried at once, a reconnect after a wait
            wait = 0.0 if first else backoff.next()
            first = False
            while not self._closing:
                await asyncio.sleep(wait)
                try:
                    await self._connect_once()
                    log.info("connected to %s as %s", self.url, self.client_id)
                    break
                except BrokerRefused as exc:
                    # retrying a refused login only hammers the broker: stop, and say why
                    log.error("%s; not retrying", exc)
                    self.refused = exc
                    self._up.set()  # wakes wait_connected(), which raises it
                    return
                except Exception as exc:  # ConnectorError, or a bug: either way, try again
                    wait = backoff.next()
                    bug = not isinstance(exc, ConnectorError)  # then with its traceback
                    log.warning("%s; retrying in %.2f s", exc, wait, exc_info=bug)

    # paho callbacks run in paho's network thread: they only hand over to the event loop.

    def _call_in_loop(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(fn, *args)

    def _paho_on_connect(self, session: _Session) -> Callable[..., None]:
        def on_connect(
            client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
        ) -> None:
            value = int(reason.value) if hasattr(reason, "value") else int(reason)
            self._call_in_loop(_resolve, session.connack, value)

        return on_connect

    def _paho_on_disconnect(self, session: _Session) -> Callable[..., None]:
        def on_disconnect(
            client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
        ) -> None:
            self._call_in_loop(self._handle_disconnect, session)

        return on_disconnect

    def _paho_on_message(self, session: _Session) -> Callable[..., None]:
        def on_message(client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
            m = Message(msg.topic, bytes(msg.payload), int(msg.qos), bool(msg.retain),
                        int(msg.mid), session.generation)  # fmt: skip
            self._call_in_loop(self._deliver, m)

        return on_message

    def _handle_disconnect(self, session: _Session) -> None:
        # what was in flight on this session can never be acknowledged now
        _fail(session, ConnectorError(f"lost the connection to {self.url}", endpoint=str(self.url)))
        if self._closing or session.generation != self._generation:
            return
        if not session.connack.done():
            # closed before CONNACK (plain client, TLS listener): _connect_once says so now
            _resolve(session.connack, -1)
            return
        self.stats.connection_losses += 1
        self._up.clear()
        log.warning("lost connection to %s (%s)", self.url, self.client_id)
        self._lost.set()

    def _deliver(self, msg: Message) -> None:
        if self._closing:
            return
        self.stats.received += 1
        try:
            self._on_message(msg)
        except Exception:
            # A handler bug must not kill the connection; it is logged with its traceback.
            log.exception("handler for %s failed on topic %s", self.client_id, msg.topic)


class MqttAdapter(AsyncClosing):
    """A protocol adapter on one :class:`MqttConnection`, opened and closed with ``async with``."""

    _conn: MqttConnection

    @property
    def connection(self) -> MqttConnection:
        """The underlying MQTT connection (stats, :meth:`MqttConnection.abort`)."""
        return self._conn

    async def open(self) -> None:
        await self._conn.open()

    async def close(self) -> None:
        """Disconnect."""
        await self._conn.close()

    async def _publish_farewell(
        self, topic: str, payload: bytes, *, retain: bool = False, what: str
    ) -> bool:
        """Publish the goodbye a clean close owes (QoS 1) if connected; True once confirmed."""
        if not self._conn.connected:
            return False
        try:
            await self._conn.publish_and_wait(topic, payload, qos=1, retain=retain)
        except Exception as exc:  # the link may die while closing; the Will covers it
            # logged under the adapter's module, as its other messages are
            logging.getLogger(type(self).__module__).warning("%s not confirmed: %s", what, exc)
            return False
        return True


def _resolve(fut: asyncio.Future[int], value: int) -> None:
    if not fut.done():
        fut.set_result(value)


def _untrack(session: _Session) -> None:
    session.tracking -= 1


def _fail(session: _Session, exc: ConnectorError) -> None:
    """Fail every send still waiting on ``session``: the caller resends on the next one."""
    for acks in set(session.waiting.values()):
        if not acks.done.done():
            acks.done.set_exception(exc)
            acks.done.exception()  # an expected end: no "never retrieved" log if nobody awaits
    session.waiting.clear()


def _acked(session: _Session, mid: int) -> None:
    acks = session.waiting.pop(mid, None)
    if acks is None:
        return  # a publish nobody waits for, or of a send that already failed
    acks.remaining -= 1
    if acks.remaining == 0 and not acks.done.done():
        acks.done.set_result(None)


_QUICKACK: Final = getattr(socket, "TCP_QUICKACK", None)


def _paho_on_publish(session: _Session, call_in_loop: Callable[..., None]) -> Callable[..., None]:
    # runs in paho's network thread, once per PUBACK (QoS 1) or write (QoS 0)
    def on_publish(client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        if session.tracking <= 0:
            return  # nobody awaits an acknowledgement: no hop to the loop
        sock = client.socket()
        if _QUICKACK is not None and isinstance(sock, socket.socket):
            # Mosquitto keeps Nagle on, so after the first PUBACK of a burst it holds the
            # others until our ACK, which Linux delays by ~40 ms: TCP_QUICKACK sends it now.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        call_in_loop(_acked, session, mid)

    return on_publish
