"""Replaying a recording to an MQTT broker, as the recorded devices would publish now.

:func:`replay` rewrites the recorded traffic (:mod:`.resequence`: Sparkplug sessions
re-born, VDA 5050 header ids continuous) and publishes it on one connection per recorded
publisher, each with its Will. Timing: the stretch the recording ran unpaced (up to the
first shift) goes out at once, then messages keep their recorded spacing divided by
``speed``; ``speed=None`` (``--max``) sends as fast as the broker takes them. Either way a
batch is sent only after the previous one was acknowledged (PUBACK at QoS 1, written at
QoS 0): never faster than the broker. ``loops`` passes (0: until stopped).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from iiotbed.errors import ConnectorError
from iiotbed.mqtt import MqttConnection, Will
from iiotbed.recording.reader import MqttMessage, Recording
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


@dataclass
class ReplayStats:
    """What a replay sent, live-updated while it runs."""

    published: Counter[str] = field(default_factory=Counter)  # per protocol
    skipped: int = 0  # recorded messages that cannot be replayed (data before a birth, host)
    sessions: int = 0  # connections opened (Sparkplug sessions, AMRs, masters)
    loops: int = 0  # passes completed
    sim_s: float = 0.0  # the recorded sim time reached in this pass
    wall_s: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.published.values())


class _Clients:
    """One MQTT connection per recorded publisher, opened and closed as its sessions go."""

    def __init__(self, options: ReplayOptions, stats: ReplayStats) -> None:
        self._opts = options
        self._stats = stats
        self._conns: dict[str, MqttConnection] = {}
        self._tag = secrets.token_hex(3)  # client ids unique on a shared broker

    async def connect(self, client: str, will: Will | None) -> MqttConnection:
        await self.disconnect(client)
        self._stats.sessions += 1
        cid = f"{self._opts.client_prefix}-{self._tag}-{self._stats.sessions}"
        conn = MqttConnection(self._opts.broker, client_id=cid, on_message=lambda _m: None,
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
) -> ReplayStats:
    """Publish ``recording`` to ``options.broker``; see the module docstring."""
    st = stats if stats is not None else ReplayStats()
    protocols = None if options.only is None else sorted(options.only - {"opcua"})
    # reading the file: blocking I/O, in a worker thread
    msgs: list[MqttMessage] = await asyncio.to_thread(
        lambda: list(recording.mqtt_messages(protocols))
    )
    if not msgs:
        return st
    halt = stop or asyncio.Event()
    paced_ns = round((recording.epoch_s + recording.paced_from) * 1e9)
    rs = Resequencer(options.topic_prefix)
    clients = _Clients(options, st)
    wall0 = time.monotonic()
    try:
        n = 0
        while not halt.is_set() and (options.loops == 0 or n < options.loops):
            start = time.monotonic()
            out: list[Outgoing] = []
            for m in msgs:
                out += rs.rewrite(m)
            out += rs.finish(msgs[-1].log_ns)
            st.skipped = rs.skipped
            await _send_all(out, clients, options.speed, paced_ns, start, halt, st, recording)
            n += 1
            st.loops = n
            if on_loop is not None:
                on_loop(n)
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
) -> None:
    epoch_ns = round(recording.epoch_s * 1e9)
    i = 0
    while i < len(out) and not halt.is_set():
        first = out[i]
        if speed is not None and first.log_ns > paced_ns:
            due = start + (first.log_ns - paced_ns) / 1e9 / speed
            wait = due - time.monotonic()
            if wait > 0:
                # woken early by stop: nothing more goes out
                try:
                    async with asyncio.timeout(wait):
                        await halt.wait()
                    return
                except TimeoutError:
                    pass
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
        batch = [(m.topic, m.payload, m.retain) for m in out[i:j] if m.topic]
        if batch:
            conn = await clients.get(first.client)
            try:
                await conn.send(batch, qos=first.qos)
            except ConnectorError as exc:
                raise ConnectorError(f"replay to {conn.url} stopped: {exc}",
                                     endpoint=str(conn.url)) from exc  # fmt: skip
            st.published[first.protocol] += len(batch)
        if out[j - 1].disconnect:
            await clients.disconnect(first.client)
        st.sim_s = (out[j - 1].log_ns - epoch_ns) / 1e9
        i = j
