"""Benchmark: latency from the gateway's hand-over to the platform's store, at 2,000 samples/s.

Samples enter the gateway (`UnsPublisher.submit`, where a collector hands them over) at a
steady 2,000 samples/s in 10 ms chunks, cross Mosquitto on 127.0.0.1:1883 as UNS stream
batches (QoS 1), are decoded and deduplicated by the platform's `Ingest` and written to
the embedded SQLite store. Each sample's latency is (its batch's store write returned) -
(it was submitted). The device -> collector hop (OPC UA publishing interval, Sparkplug
report-by-exception) is not in this figure. Baseline in the same run: raw paho QoS 1
publish -> Mosquitto -> paho receive of the same chunks, nothing stored.

Usage: ``python bench/latency.py [seconds] [rate]``; last line ``p99_ms <n>``.
"""

from __future__ import annotations

import os
import sys

# Run as a script, bench/ is sys.path[0]: bench/platform.py would shadow the standard
# library's `platform` module for every import below. Drop this folder from the path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import asyncio
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from iiotbed.gateway import DurableBuffer, UnsPublisher, to_sample
from iiotbed.platform.ingest import Ingest
from iiotbed.platform.store import open_store
from iiotbed.telemetry import Sample

BROKER = "mqtt://127.0.0.1:1883"
LINE = "bench/site/area/line-1"
EPOCH = 1_767_571_200.0


def pct(xs: Sequence[float], p: float) -> float:
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


async def platform_latency(rate: int, seconds: float, d: Path) -> list[float]:
    root = f"bench-e2e-{uuid.uuid4().hex[:8]}"
    n = int(rate * seconds)
    chunk = max(1, rate // 100)  # every 10 ms
    submitted: dict[float, float] = {}
    stored: dict[float, float] = {}
    store = open_store(f"sqlite:///{d / 'store.db'}")
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
                        f"{LINE}/st-{j % 10:02d}", "Power", float(j % 100), t=j * 0.001,
                        unit="KWT", run_id="bench-e2e",
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


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    rate = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    raw = raw_latency(rate, seconds)
    with tempfile.TemporaryDirectory() as d:
        lat = asyncio.run(platform_latency(rate, seconds, Path(d)))
    print(
        f"raw paho QoS 1  p50 {pct(raw, 50) * 1e3:.2f} ms  p99 {pct(raw, 99) * 1e3:.2f} ms  "
        f"({len(raw)} messages of 2 kB, one every 10 ms)"
    )
    print(
        f"gateway->stored p50 {pct(lat, 50) * 1e3:.1f} ms  p99 {pct(lat, 99) * 1e3:.1f} ms  "
        f"max {lat[-1] * 1e3:.1f} ms  ({len(lat)} samples at {rate:,} samples/s, SQLite store)"
    )
    print(f"p99_ms {pct(lat, 99) * 1e3:.1f}")


if __name__ == "__main__":
    main()
