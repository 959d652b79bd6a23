"""Replaying a recording to an MQTT broker, as the recorded devices would publish now.

:func:`replay` rewrites the recorded traffic (:mod:`.resequence`: Sparkplug sessions
re-born, VDA 5050 header ids continuous) and publishes it on one connection per recorded
publisher, each with its Will. Timing: the stretch the recording ran unpaced (up to the
first shift) goes out at once, then messages keep their recorded spacing divided by
``speed``; ``speed=None`` (``--max``) sends as fast as the broker takes them. Either way a
batch is sent only after the previous one was acknowledged (PUBACK at QoS 1, written at
QoS 0): never faster than the broker. Each edge node answers a host's rebirth request
(NCMD ``Node Control/Rebirth``) as a live one does (:mod:`.rebirths`). ``loops`` passes
(0: until stopped). With ``opcua_port`` the recorded machines are re-served over OPC UA on
the same clock (:mod:`.opcua_serve`).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from iiotbed.errors import ConnectorError
from iiotbed.mqtt import MqttConnection, Will
from iiotbed.recording.reader import MqttMessage, Recording
from iiotbed.recording.rebirths import Rebirths
from iiotbed.recording.resequence import Outgoing, Resequencer

__all__ = ["ReplayOptions", "ReplayStats", "replay"]

_BATCH = 256  # messages per send at most
_SLOT_NS = 2_000_000  # paced: messages due within 2 ms of each other go out together


@dataclass(frozen=True)
class ReplayOptions:
    """How to replay; ``speed=None`` is ``--max``; ``only`` the MQTT protocols to send."""

    broker: str
    speed: float | None = None
    loops: int = 1  # 0: until stopped
    only: frozenset[str] | None = None
    topic_prefix: str = ""
    client_prefix: str = "iiotbed-replay"
    opcua_port: int | None = None  # re-serve the recorded OPC UA servers on this port
    hold_s: float = 1.0  # OPC UA servers stay up this long after the last value


@dataclass
class ReplayStats:
    """What a replay sent, live-updated while it runs."""

    published: Counter[str] = field(default_factory=Counter)  # per protocol
    skipped: int = 0  # recorded messages that cannot be replayed (data before a birth, host)
    sessions: int = 0  # connections opened (Sparkplug sessions, AMRs, masters)
    loops: int = 0  # passes completed
    sim_s: float = 0.0  # the recorded sim time reached in this pass
    wall_s: float = 0.0
    opcua_values: int = 0  # OPC UA nodes set (re-served machines)
    rebirths: int = 0  # rebirth requests (NCMD) answered with new births
    endpoints: list[str] = field(default_factory=list)  # the OPC UA servers' URLs

    @property
    def total(self) -> int:
        return sum(self.published.values())


class _Clients:
    """One MQTT connection per recorded publisher, opened and closed as its sessions go."""

    def __init__(self, options: ReplayOptions, stats: ReplayStats, rebirths: Rebirths) -> None:
        self._opts = options
        self._stats = stats
        self._rebirths = rebirths
        self._conns: dict[str, MqttConnection] = {}
        self._tag = secrets.token_hex(3)  # client ids unique on a shared broker

    async def connect(self, client: str, will: Will | None) -> MqttConnection:
        await self.disconnect(client)
        self._stats.sessions += 1
        cid = f"{self._opts.client_prefix}-{self._tag}-{self._stats.sessions}"
        conn = MqttConnection(self._opts.broker, client_id=cid,
                              on_message=self._rebirths.listener(client),
                              subscriptions=self._rebirths.subscriptions(client),
                              will=(lambda: will) if will is not None else None,
                              max_inflight=_BATCH)  # fmt: skip
        await conn.open()
        self._conns[client] = conn
        return conn

    async def get(self, client: str) -> MqttConnection:
        conn = self._conns.get(client)
        return conn if conn is not None else await self.connect(client, None)

    async def disconnect(self, client: str) -> None:
        conn = self._conns.pop(client, None)
        if conn is not None:
            await conn.close()

    async def close(self) -> None:
        for client in sorted(self._conns):
            await self.disconnect(client)


async def replay(
    recording: Recording,
    options: ReplayOptions,
    *,
    stop: asyncio.Event | None = None,
    stats: ReplayStats | None = None,
    on_loop: Callable[[int], None] | None = None,
    ready: Callable[[ReplayStats], Awaitable[object]] | None = None,
) -> ReplayStats:
    """Publish ``recording`` to ``options.broker``; see the module docstring.

    ``ready`` is awaited once the OPC UA servers are up, before anything is sent: a test
    waits there until its clients are connected."""
    from contextlib import AsyncExitStack

    st = stats if stats is not None else ReplayStats()
    only = options.only
    protocols = None if only is None else sorted(only - {"opcua"})
    # reading the file: blocking I/O, in a worker thread
    msgs: list[MqttMessage] = []
    if protocols is None or protocols:
        msgs = await asyncio.to_thread(lambda: list(recording.mqtt_messages(protocols)))
    serve_ua = options.opcua_port is not None and (only is None or "opcua" in only)
    if not msgs and not serve_ua:
        return st
    halt = stop or asyncio.Event()
    paced_ns = round((recording.epoch_s + recording.paced_from) * 1e9)
    rs = Resequencer(options.topic_prefix)
    rebirths = Rebirths(options.topic_prefix)
    clients = _Clients(options, st, rebirths)
    wall0 = time.monotonic()
    try:
        async with AsyncExitStack() as stack:
            ua = None
            if serve_ua:
                from iiotbed.recording.opcua_serve import OpcUaReplay

                assert options.opcua_port is not None
                ua = await stack.enter_async_context(
                    OpcUaReplay(recording, port=options.opcua_port)
                )
                st.endpoints = ua.endpoints
            if ready is not None:
                await ready(st)
            n = 0
            while not halt.is_set() and (options.loops == 0 or n < options.loops):
                start = time.monotonic()
                out: list[Outgoing] = []
                for m in msgs:
                    out += rs.rewrite(m)
                if msgs:
                    out += rs.finish(msgs[-1].log_ns)
                st.skipped = rs.skipped
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(_send_all(out, clients, options.speed, paced_ns, start, halt,
                                             st, recording, rebirths))  # fmt: skip
                    if ua is not None:
                        tg.create_task(ua.play(options.speed, paced_ns, start, halt))
                if ua is not None:
                    st.opcua_values = ua.applied
                n += 1
                st.loops = n
                if on_loop is not None:
                    on_loop(n)
            if ua is not None and not halt.is_set():
                # the servers stay up a moment: a subscription publishes the last values
                # only at its next publishing interval
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(options.hold_s):
                        await halt.wait()
    finally:
        await clients.close()
        st.wall_s = time.monotonic() - wall0
    return st


async def _send_all(
    out: Sequence[Outgoing],
    clients: _Clients,
    speed: float | None,
    paced_ns: int,
    start: float,
    halt: asyncio.Event,
    st: ReplayStats,
    recording: Recording,
    rebirths: Rebirths,
) -> None:
    epoch_ns = round(recording.epoch_s * 1e9)
    i = 0
    while i < len(out) and not halt.is_set():
        if rebirths.pending:
            # a host asked an edge node for a rebirth: answered before its next message
            for births in rebirths.answers(out, i):
                conn = await clients.get(births[0].client)
                await _send(conn, [(b.topic, b.payload, b.retain) for b in births], births[0].qos)
                st.published["sparkplug"] += len(births)
                st.rebirths += 1
        first = out[i]
        if speed is not None and first.log_ns > paced_ns:
            due = start + (first.log_ns - paced_ns) / 1e9 / speed
            wait = due - time.monotonic()
            if wait > 0:
                # woken early by stop (nothing more goes out) or by a rebirth request
                await _pause(wait, halt, rebirths.wake)
                continue
        if first.connect:
            will = first.will
            await clients.connect(first.client, Will(will.topic, will.payload, will.qos, will.retain)
                                  if will is not None else None)  # fmt: skip
        # a batch: one client, one QoS, no session change inside, due together
        j = i + 1
        while (j < len(out) and j - i < _BATCH and not out[j - 1].disconnect
               and not out[j].connect and out[j].client == first.client
               and out[j].qos == first.qos
               and (speed is None or out[j].log_ns - first.log_ns <= _SLOT_NS)):  # fmt: skip
            j += 1
        batch = [(m.topic, rebirths.sending(k, m), m.retain)
                 for k, m in enumerate(out[i:j], i) if m.topic]  # fmt: skip
        if batch:
            conn = await clients.get(first.client)
            await _send(conn, batch, first.qos)
            st.published[first.protocol] += len(batch)
        if out[j - 1].disconnect:
            await clients.disconnect(first.client)
        st.sim_s = (out[j - 1].log_ns - epoch_ns) / 1e9
        i = j


async def _send(conn: MqttConnection, batch: list[tuple[str, bytes, bool]], qos: int) -> None:
    """Send ``batch`` and wait for the broker's acknowledgements (the flow control)."""
    try:
        await conn.send(batch, qos=qos)
    except ConnectorError as exc:
        raise ConnectorError(f"replay to {conn.url} stopped: {exc}",
                             endpoint=str(conn.url)) from exc  # fmt: skip


async def _pause(seconds: float, halt: asyncio.Event, wake: asyncio.Event) -> None:
    """Sleep ``seconds``, cut short by ``halt`` or ``wake``."""
    waits = {asyncio.ensure_future(halt.wait()), asyncio.ensure_future(wake.wait())}
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:  # owned here: cancelled and awaited
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
