"""Shared pieces of the gateway tests: ports, a restartable Mosquitto, a UNS subscriber, a sink."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from iiotbed.protocols.uns import UnsSample, decode_batch
from iiotbed.scenario import Scenario, load_scenario
from iiotbed.telemetry import Event, Sample

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def five_g(duration: float) -> Scenario:
    """The 5G line with its epoch at the day shift's start, so production begins at t = 0."""
    sc = load_scenario(ROOT / "scenarios/tcl-huizhou-5g.yaml")
    epoch = dt.datetime.fromisoformat("2026-01-05T08:00:00+08:00")
    sc = sc.model_copy(update={"plant": sc.plant.model_copy(update={"epoch": epoch})})
    return sc.with_run(duration=duration)


def last_values(records: Sequence[Any]) -> dict[tuple[str, str], Any]:
    """The final value of every (asset, tag) in a record list (the event log's totals)."""
    out: dict[tuple[str, str], Any] = {}
    for r in records:
        if isinstance(r, Sample):
            out[(r.asset, r.tag)] = r.value
    return out


async def until(cond: Callable[[], bool | Awaitable[bool]], limit: float = 20.0, what: str = "") -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        r = cond()
        if not isinstance(r, bool):
            r = await r
        if r:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class ListSink:
    """A collector sink that keeps everything (collector tests without the gateway)."""

    def __init__(self) -> None:
        self.all: list[Sample] = []
        self.evs: list[Event] = []

    def samples(self, collector: str, samples: Sequence[Sample]) -> None:
        self.all.extend(samples)

    def events(self, collector: str, events: Sequence[Event]) -> None:
        self.evs.extend(events)

    def last(self) -> dict[tuple[str, str], Sample]:
        out: dict[tuple[str, str], Sample] = {}
        for s in self.all:
            out[(s.asset, s.tag)] = s
        return out


class UnsSubscriber:
    """A paho client decoding the UNS stream under ``root``; dedups samples by id."""

    def __init__(self, root: str, port: int = 1883, extra: Sequence[str] = ()) -> None:
        self.root = root
        self.lock = threading.Lock()
        self.samples: dict[str, UnsSample] = {}
        self.arrivals = 0  # stream samples received, duplicates included
        self.retained: dict[str, bytes] = {}
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"uns-sub-{uuid.uuid4().hex[:10]}")
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe([(f"{root}/_stream/#", 1), *((t, 1) for t in extra)])
        subscribed.wait(5)

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self.lock:
            if "/_stream/" in msg.topic:
                samples, _ = decode_batch(msg.payload, msg.topic)
                self.arrivals += len(samples)
                for u in samples:
                    self.samples.setdefault(u.id, u)
            else:
                self.retained[msg.topic] = bytes(msg.payload)

    def last(self) -> dict[tuple[str, str], Sample]:
        """Newest sample (by source time, then arrival) of every (asset, tag)."""
        with self.lock:
            out: dict[tuple[str, str], Sample] = {}
            for u in self.samples.values():
                s = u.sample
                key = (s.asset, s.tag)
                if key not in out or s.t >= out[key].t:
                    out[key] = s
            return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Mosquitto:
    """A second broker on its own port that a test can stop and start again."""

    def __init__(self, exe: str, port: int) -> None:
        self.exe, self.port = exe, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.exe, "-p", str(self.port)], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"mosquitto did not listen on {self.port} within 5 s")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None


class Relay:
    """A TCP relay standing in for the network path to a broker: up, down (an outage)."""

    def __init__(self, port: int, target: int) -> None:
        self.port, self.target = port, target
        self.server: asyncio.Server | None = None
        self.conns: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def up(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def down(self) -> None:
        """Stop listening and cut every live connection (a network outage)."""
        server, self.server = self.server, None
        if server is not None:
            server.close()
        for w in list(self.conns):
            w.transport.abort()
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if server is not None:
            # Since 3.12 wait_closed() also waits for every connection the server accepted to
            # close: so only after the cuts above (before them it waits forever).
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.server is None:  # accepted just before down(): cut it too
            writer.transport.abort()
            return
        self.conns.add(writer)
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            self.conns.discard(writer)
            writer.transport.abort()
            return
        self.conns.add(up_w)
        for src, dst in ((reader, up_w), (up_r, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.transport.abort()
            self.conns.discard(dst)


def clear_retained(topics: Sequence[str], port: int = 1883) -> None:
    c = paho.Client(CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", port)
    c.loop_start()
    for t in topics:
        with contextlib.suppress(Exception):
            c.publish(t, b"", qos=1, retain=True).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()
