"""Benchmark: latency to the platform's store at 2,000 samples/s, two ways in one run.

* **device -> stored**: the whole path. Devices change values: a Sparkplug B edge node
  publishes a DDATA every 10 ms (half the rate), an OPC UA server (the 5G line's ten
  machines, ``MachineServer``) changes ProcessedCount nodes every 10 ms (the other half);
  each value's source timestamp is the wall clock at the change. Both reach the gateway
  (its Sparkplug host over Mosquitto, its OPC UA client over a socket subscription), which
  publishes the UNS stream to Mosquitto; the platform's ``Ingest`` decodes it and writes
  the store. Each sample's latency is (its batch's store transaction committed, so a
  query sees it) - (its source timestamp), per device protocol.
* **gateway -> stored**: samples enter the gateway's publisher (``UnsPublisher.submit``,
  where the collectors hand them over) at the same rate in 10 ms chunks; the device hop
  (OPC UA publishing interval, Sparkplug publish) is not in this figure.

Baseline: raw paho QoS 1 publish -> Mosquitto -> paho receive of 10 ms chunks.
Mosquitto on 127.0.0.1:1883. Every component runs in this process on one event loop (the
devices, the gateway and the ingest share it) except Mosquitto and PostgreSQL; the clock of
every timestamp is this machine's.

Usage: ``python bench/latency.py [seconds] [rate] [sqlite|postgresql] [publishing_s] [flush_s]``
(the gateway's OPC UA ``publishing_interval`` and output ``flush_interval``, by default
those of its settings: 0.05 s and 0.02 s); the last line is ``p99_ms <n>`` of the whole path
(both protocols).
"""

from __future__ import annotations

import os
import sys

# Run as a script, bench/ is sys.path[0]: bench/platform.py would shadow the standard
# library's `platform` module for every import below. Drop this folder from the path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import asyncio
import datetime as dt
import logging
import math
import multiprocessing as mp
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from iiotbed.devices.opcua import MachineServer
from iiotbed.devices.sparkplug import MetricDef, SparkplugEdgeNode
from iiotbed.gateway import DurableBuffer, UnsPublisher, to_sample
from iiotbed.gateway.collectors import OpcUaCollector
from iiotbed.gateway.service import Gateway
from iiotbed.gateway.settings import (
    GatewaySettings,
    OpcUaSettings,
    OutputSettings,
    SparkplugSettings,
)
from iiotbed.platform.ingest import Ingest
from iiotbed.platform.store import Store, open_store
from iiotbed.scenario import load_scenario
from iiotbed.telemetry import Sample

ROOT = Path(__file__).resolve().parent.parent
BROKER = "mqtt://127.0.0.1:1883"
PG = "postgresql://127.0.0.1:5432/test"
LINE = "bench/site/area/line-1"
EPOCH = 1_767_571_200.0


def pct(xs: Sequence[float], p: float) -> float:
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def store_url(kind: str, d: Path, name: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{d / name}.db"
    return f"{PG}?schema=bench_{name}_{uuid.uuid4().hex[:8]}"


def drop_store(url: str) -> None:
    if url.startswith("postgresql"):
        schema = url.split("schema=")[1]
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _until(flag: Callable[[], bool]) -> None:
    while not flag():  # noqa: ASYNC110 (flags of other processes too)
        await asyncio.sleep(0.01)


class _Path:
    """What the device and gateway processes of the whole-path bench share (picklable)."""

    def __init__(self, rate: int, seconds: float, d: Path, publishing: float, flush: float) -> None:
        tag = uuid.uuid4().hex[:8]
        self.root, self.group, self.run, self.host = (
            f"bench-dev-{tag}",
            f"g{tag}",
            f"bench-dev-{tag}",
            f"h{tag}",
        )
        self.tag = tag
        self.epoch_s = float(math.floor(time.time()))
        self.port = free_port()
        self.buffer = d / f"gw-{tag}.db"
        self.publishing = publishing
        self.flush = flush
        self.per_tick = max(1, rate // 200)  # every 10 ms, half of the rate by each protocol
        self.ticks = int(seconds * 100)
        sc = self.scenario()
        self.stations = [path for _, _, path in sc.station_paths()]
        self.line = self.stations[0].rsplit("/", 2)[0]
        self.spb_asset = f"{self.line}/spb-bench"
        ctx = mp.get_context("spawn")
        self.ready, self.go, self.sent, self.stop, self.stop_gw = (ctx.Event() for _ in range(5))

    def scenario(self) -> Any:
        sc = load_scenario(ROOT / "scenarios" / "tcl-huizhou-5g.yaml")
        epoch = dt.datetime.fromtimestamp(self.epoch_s, dt.UTC)
        return sc.model_copy(update={"plant": sc.plant.model_copy(update={"epoch": epoch})})

    def metrics(self) -> list[MetricDef]:
        return [MetricDef(f"M{k:02d}", "Double") for k in range(self.per_tick)]


def _run_devices(p: _Path) -> None:
    """The device process: an OPC UA server of the line's machines and a Sparkplug edge
    node; on ``go``, a DDATA and ``per_tick`` node changes every 10 ms, source time now."""
    logging.getLogger("asyncua").setLevel(logging.ERROR)

    async def main() -> None:
        server = MachineServer.from_scenario(p.scenario(), port=p.port)
        node = SparkplugEdgeNode(
            BROKER, p.group, "edge-1", devices={"bench": p.metrics()}, primary_host_id=p.host,
            client_id=f"edge-{p.tag}",
        )  # fmt: skip
        async with server, node:
            await _until(p.go.is_set)
            count = 0
            start = time.monotonic()
            for i in range(p.ticks):
                await asyncio.sleep(max(0.0, start + i * 0.01 - time.monotonic()))
                now = time.time()
                ms = int(now * 1000)
                for m in p.metrics():
                    node.set("bench", m.name, float(i), ms)
                await node.flush()
                t = now - p.epoch_s
                changes = []
                for k in range(p.per_tick):
                    count += 1
                    changes.append(Sample(t=t, asset=p.stations[k % len(p.stations)],
                                          tag="ProcessedCount", value=count))  # fmt: skip
                await server.apply_many(changes)
            p.sent.set()
            await _until(p.stop.is_set)

    asyncio.run(main())


def _run_gateway(p: _Path) -> None:
    """The gateway process: OPC UA client and Sparkplug host in, UNS stream out."""
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    settings = GatewaySettings(
        id=f"gw-{p.tag}", run_id=p.run, epoch=dt.datetime.fromtimestamp(p.epoch_s, dt.UTC),
        line=p.line,
        output=OutputSettings(broker=BROKER, root=p.root, buffer=p.buffer,
                              flush_interval=p.flush),
        opcua=OpcUaSettings(endpoints=[f"opc.tcp://127.0.0.1:{p.port}/iiotbed/"],
                            publishing_interval=p.publishing, events=False),
        sparkplug=SparkplugSettings(host_id=p.host, groups=[p.group],
                                    assets={"bench": p.spb_asset}),
    )  # fmt: skip

    async def main() -> None:
        async with Gateway(settings) as gw:
            opc = next(c for c in gw.collectors if isinstance(c, OpcUaCollector))
            spb = next(c for c in gw.collectors if not isinstance(c, OpcUaCollector))
            await _until(lambda: opc.connected and getattr(spb.stats, "births", 0) >= 2)
            p.ready.set()
            await _until(p.stop_gw.is_set)

    asyncio.run(main())


async def device_latency(
    rate: int, seconds: float, d: Path, url: str, publishing: float, flush: float
) -> dict[str, list[float]]:
    """Source timestamp (the device's wall clock) -> committed in the store, per protocol;
    devices and gateway in processes of their own, ingest and store in this one."""
    p = _Path(rate, seconds, d, publishing, flush)
    want = {"sparkplug": p.ticks * p.per_tick, "opcua": p.ticks * p.per_tick}
    lat: dict[str, list[float]] = {"sparkplug": [], "opcua": []}
    begin = [math.inf]  # source time (s since the epoch) from which samples are the bench's
    done = asyncio.Event()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=f, args=(p,), daemon=True) for f in (_run_devices, _run_gateway)]
    store = open_store(url)
    async with store:
        write = store.write_samples

        async def timed_write(samples: Sequence[Sample], run_id: str) -> int:
            inserted = await write(samples, run_id)
            now = time.time()
            for s in samples:
                if s.t >= begin[0] and s.value is not None:
                    key = "sparkplug" if s.asset == p.spb_asset else "opcua"
                    lat[key].append(now - (p.epoch_s + s.t))
            if all(len(lat[k]) >= want[k] for k in lat):
                done.set()
            return inserted

        store.write_samples = timed_write  # type: ignore[method-assign]
        async with Ingest(store, BROKER, root=p.root, runs=[p.run]):
            for proc in procs:
                proc.start()
            try:
                async with asyncio.timeout(60):
                    await _until(p.ready.is_set)
                await asyncio.sleep(1.0)  # the initial values through
                begin[0] = math.floor(time.time() * 1000) / 1000 - p.epoch_s  # Sparkplug: ms
                p.go.set()
                try:
                    async with asyncio.timeout(seconds + 60):
                        await done.wait()
                except TimeoutError:
                    got = {k: len(v) for k, v in lat.items()}
                    raise SystemExit(f"not every sample was stored: {got} of {want}") from None
            finally:
                p.stop.set()  # the devices first: they would keep what the gateway missed
                for proc in procs:
                    await asyncio.to_thread(proc.join, 10)
                    p.stop_gw.set()
                    if proc.is_alive():
                        proc.kill()
    return {k: sorted(v) for k, v in lat.items()}


async def platform_latency(rate: int, seconds: float, d: Path, kind: str) -> list[float]:
    root = f"bench-e2e-{uuid.uuid4().hex[:8]}"
    n = int(rate * seconds)
    chunk = max(1, rate // 100)  # every 10 ms
    url = store_url(kind, d, "gw")
    store: Store = open_store(url)
    try:
        return await _platform_latency(rate, seconds, d, store, root, n, chunk)
    finally:
        drop_store(url)


async def _platform_latency(
    rate: int, seconds: float, d: Path, store: Store, root: str, n: int, chunk: int
) -> list[float]:
    submitted: dict[float, float] = {}
    stored: dict[float, float] = {}
    async with store:
        write = store.write_samples

        all_stored = asyncio.Event()

        async def timed_write(samples: Sequence[Sample], run_id: str) -> int:
            inserted = await write(samples, run_id)
            now = time.monotonic()
            for s in samples:
                stored.setdefault(s.t, now)
            if len(stored) >= n:
                all_stored.set()
            return inserted

        store.write_samples = timed_write  # type: ignore[method-assign]
        async with (
            Ingest(store, BROKER, root=root, runs=["bench-e2e"]),
            DurableBuffer(d / "buffer.db") as buf,
            UnsPublisher(BROKER, buf, line=LINE, epoch=EPOCH, run_id="bench-e2e", root=root) as pub,
        ):
            await pub.wait_connected()
            start = time.monotonic()
            for i, k in enumerate(range(0, n, chunk)):
                await asyncio.sleep(max(0.0, start + i * 0.01 - time.monotonic()))
                batch = [
                    to_sample(
                        f"{LINE}/st-{j % 10:02d}",
                        "Power",
                        float(j % 100),
                        t=j * 0.001,
                        unit="KWT",
                        run_id="bench-e2e",
                    )
                    for j in range(k, min(n, k + chunk))
                ]
                now = time.monotonic()
                for s in batch:
                    submitted[s.t] = now
                await pub.submit(batch)
            async with asyncio.timeout(60):
                await pub.flush()
                await all_stored.wait()
    return sorted(stored[t] - submitted[t] for t in submitted)


def raw_latency(rate: int, seconds: float) -> list[float]:
    """paho QoS 1 publish -> Mosquitto -> paho, one message per 10 ms chunk."""
    topic = f"bench-raw-{uuid.uuid4().hex[:8]}"
    n = int(rate * seconds / max(1, rate // 100))
    got: list[float] = []
    done = threading.Event()

    def on_message(_c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
        got.append(time.monotonic() - float(m.payload.split(b" ", 1)[0]))
        if len(got) >= n:
            done.set()

    sub = paho.Client(CallbackAPIVersion.VERSION2)
    sub.on_message = on_message
    sub.connect("127.0.0.1", 1883)
    sub.subscribe(topic, qos=1)
    sub.loop_start()
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", 1883)
    pub.loop_start()
    time.sleep(0.3)
    pad = b"x" * 2000
    start = time.monotonic()
    for i in range(n):
        time.sleep(max(0.0, start + i * 0.01 - time.monotonic()))
        pub.publish(topic, f"{time.monotonic()!r} ".encode() + pad, qos=1)
    done.wait(30)
    for c in (pub, sub):
        c.loop_stop()
        c.disconnect()
    return sorted(got)


def _line(name: str, xs: Sequence[float], what: str) -> str:
    return (
        f"{name:<24} p50 {pct(xs, 50) * 1e3:6.1f} ms  p99 {pct(xs, 99) * 1e3:6.1f} ms  "
        f"max {xs[-1] * 1e3:6.1f} ms  ({what})"
    )


def _default(which: str) -> float:
    """The gateway's own default (its settings), so the figure is the one users get."""
    from iiotbed.gateway.settings import OpcUaSettings, OutputSettings

    if which == "publishing":
        return float(OpcUaSettings.model_fields["publishing_interval"].default)
    return float(OutputSettings.model_fields["flush_interval"].default)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    rate = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    kind = sys.argv[3] if len(sys.argv) > 3 else "sqlite"
    publishing = float(sys.argv[4]) if len(sys.argv) > 4 else _default("publishing")
    flush = float(sys.argv[5]) if len(sys.argv) > 5 else _default("flush")
    if kind not in ("sqlite", "postgresql"):
        print(f"store {kind!r}: expected sqlite or postgresql", file=sys.stderr)
        sys.exit(2)
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    raw = raw_latency(rate, seconds)
    with tempfile.TemporaryDirectory() as d:
        url = store_url(kind, Path(d), "dev")
        try:
            dev = asyncio.run(device_latency(rate, seconds, Path(d), url, publishing, flush))
        finally:
            drop_store(url)
        lat = asyncio.run(platform_latency(rate, seconds, Path(d), kind))
    print(_line("raw paho QoS 1", raw, f"{len(raw)} messages of 2 kB, one every 10 ms"))
    both = sorted(dev["sparkplug"] + dev["opcua"])
    print(_line("Sparkplug DDATA->stored", dev["sparkplug"],
                f"{len(dev['sparkplug'])} samples, a DDATA every 10 ms"))  # fmt: skip
    print(_line("OPC UA change->stored", dev["opcua"],
                f"{len(dev['opcua'])} samples, publishing interval {publishing:g} s"))  # fmt: skip
    print(f"{'':<24} (the gateway hands collected samples on every {flush:g} s)")
    print(_line("device->stored", both, f"{len(both)} samples at {rate:,} samples/s, {kind}"))
    print(_line("gateway->stored", lat, f"{len(lat)} samples at {rate:,} samples/s, {kind}"))
    print(f"p99_ms {pct(both, 99) * 1e3:.1f}")


if __name__ == "__main__":
    main()
