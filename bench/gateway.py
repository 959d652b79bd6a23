"""Benchmark: samples/s through the gateway next to raw paho, and p99 latency at 2,000 samples/s.

Gateway path: raw readings → ``normalise.to_sample`` → ``UnsPublisher.submit`` (UNS encode +
SQLite buffer) → batched QoS 1 stream + retained current values → Mosquitto → a paho
subscriber in another process that decodes every stream batch with ``uns.decode_batch``.
Baseline, same run: raw paho → Mosquitto → paho, QoS 1, one ~210-byte JSON message per
sample (the limits.md set-up, inflight 20), subscriber only parsing the JSON.

Throughput = samples received and decoded / (last receive − first submit). Latency =
subscriber receive time − the gateway's receive stamp (``gateway_ts``, ms resolution) per
sample while samples arrive paced at 2,000 samples/s in chunks every 10 ms.

Run: ``python bench/gateway.py [samples] [broker-port]``; the last line is ``samples_per_s <n>``.
"""

from __future__ import annotations

import os
import sys

# Run as a script, bench/ is sys.path[0]: a sibling bench/<stdlib name>.py (platform.py) would
# shadow the standard library module, so the script's own directory leaves the path first.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import asyncio
import multiprocessing as mp
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from iiotbed.gateway import DurableBuffer, UnsPublisher, to_sample
from iiotbed.protocols.uns import decode_batch
from iiotbed.telemetry import Sample

LINE = "tcl/huizhou/module-assembly/line-1"
EPOCH = 1_767_571_200.0
# 10 stations x 15 tags + 10 line tags: a line's worth of current-value topics
TAGS = [(f"{LINE}/stage-{i // 2}/st-{i:02d}", f"Tag{j:02d}") for i in range(10) for j in range(15)]
TAGS += [(LINE, f"Line{j}") for j in range(10)]


# --------------------------------------------------------------------------- subscriber process


def subscriber(
    port: int, topic: str, expect: int, mode: str, ready: Any, results: Any, timeout: float
) -> None:
    """Collect ``expect`` samples on ``topic``; report first/last receive time and latencies."""
    state: dict[str, Any] = {"n": 0, "first": None, "last": None, "lat": []}
    finished = threading.Event()

    def on_message(c: paho.Client, u: Any, m: paho.MQTTMessage) -> None:
        now = time.time()
        if mode == "raw":
            orjson.loads(m.payload)
            n = 1
        else:
            samples, _ = decode_batch(m.payload, m.topic)
            n = len(samples)
            if mode == "latency":
                state["lat"].extend(now - s.sample.gateway_ts for s in samples)  # type: ignore[operator]
        if state["first"] is None:
            state["first"] = now
        state["n"] += n
        state["last"] = now
        if state["n"] >= expect:
            finished.set()

    subscribed = threading.Event()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{uuid.uuid4().hex[:8]}")
    c.on_message = on_message
    c.on_subscribe = lambda *a: subscribed.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.subscribe(topic, qos=1)
    subscribed.wait(5)
    ready.put(True)
    deadline = time.time() + timeout
    while not finished.wait(0.25) and time.time() < deadline:
        if state["last"] is not None and time.time() - state["last"] > 2.0:
            break  # quiet for 2 s: the broker dropped the rest (its per-client queue is bounded)
    c.disconnect()
    c.loop_stop()
    results.put({k: state[k] for k in ("n", "first", "last", "lat")})


class Sub:
    def __init__(self, port: int, topic: str, expect: int, mode: str, timeout: float = 120) -> None:
        ctx = mp.get_context("spawn")
        ready, self.results = ctx.Queue(), ctx.Queue()
        self.proc = ctx.Process(
            target=subscriber, args=(port, topic, expect, mode, ready, self.results, timeout)
        )
        self.proc.start()
        ready.get(timeout=30)

    def result(self) -> dict[str, Any]:
        r: dict[str, Any] = self.results.get(timeout=180)
        self.proc.join(10)
        return r


# --------------------------------------------------------------------------- runs


def readings(n: int) -> list[tuple[str, str, float, float]]:
    """(asset, tag, value, source time) as a collector would hand them over."""
    k = len(TAGS)
    return [(*TAGS[i % k], float(i % 1000) * 0.5, i * 0.001) for i in range(n)]


def normalise(raw: list[tuple[str, str, float, float]]) -> list[Sample]:
    return [to_sample(a, tag, v, t=t, unit="kWh", run_id="bench") for a, tag, v, t in raw]


async def gateway_throughput(port: int, n: int, db: Path) -> tuple[float, dict[str, Any], str]:
    root = f"bench-{uuid.uuid4().hex[:8]}"
    sub = Sub(port, f"{root}/_stream/#", n, "stream")
    raw = readings(n)
    async with (
        DurableBuffer(db) as buf,
        UnsPublisher(
            f"mqtt://127.0.0.1:{port}", buf, line=LINE, epoch=EPOCH, run_id="bench", root=root,
            batch_size=2000, max_inflight_batches=4,
        ) as pub,
    ):  # fmt: skip
        await pub.wait_connected()
        t0 = time.time()
        for k in range(0, n, 2000):
            await pub.submit(normalise(raw[k : k + 2000]))
        submitted = time.time() - t0
        async with asyncio.timeout(300):
            await pub.flush()
        r = await asyncio.to_thread(sub.result)
        m = pub.metrics
        info = (
            f"submit {n / submitted:,.0f}/s (normalise+encode+buffer), {m.batches} stream "
            f"batches, {m.current_values} retained current values, malformed {m.malformed}, "
            f"dropped {m.dropped}"
        )
    clear = paho.Client(CallbackAPIVersion.VERSION2)
    clear.connect("127.0.0.1", port)
    clear.loop_start()
    for asset, tag in TAGS:  # leave no retained bench topics behind
        clear.publish(f"{root}/{asset}/{tag}", b"", qos=1, retain=True)
    clear.disconnect()
    clear.loop_stop()
    assert r["n"] == n, f"subscriber got {r['n']} of {n} samples"
    return n / (r["last"] - t0), r, info


def raw_throughput(port: int, n: int) -> tuple[float, int]:
    topic = f"bench-raw-{uuid.uuid4().hex[:8]}"
    sub = Sub(port, f"{topic}/#", n, "raw")
    payload = orjson.dumps(
        {"asset": TAGS[0][0], "tag": "Tag00", "value": 1.5, "unit": "KWH", "quality": "Good",
         "t": 12.5, "source_ts": "2026-01-05T00:00:12.500Z", "seq": 1}
    )  # fmt: skip
    c = paho.Client(CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", port)
    c.loop_start()
    t0 = time.time()
    info = None
    for i in range(n):
        info = c.publish(f"{topic}/{i % 160}", payload, qos=1)
    assert info is not None
    info.wait_for_publish(120)
    r = sub.result()
    c.disconnect()
    c.loop_stop()
    # Mosquitto drops QoS 1 messages beyond a slow subscriber's queue (max_queued_messages):
    # count what was delivered, as limits.md does.
    return int(r["n"]) / (float(r["last"]) - t0), n - int(r["n"])


async def gateway_latency(port: int, rate: int, seconds: float, db: Path) -> list[float]:
    root = f"bench-lat-{uuid.uuid4().hex[:8]}"
    n = int(rate * seconds)
    chunk = rate // 100  # every 10 ms
    sub = Sub(port, f"{root}/_stream/#", n, "latency")
    raw = readings(n)
    async with (
        DurableBuffer(db) as buf,
        UnsPublisher(
            f"mqtt://127.0.0.1:{port}", buf, line=LINE, epoch=EPOCH, run_id="bench", root=root
        ) as pub,
    ):
        await pub.wait_connected()
        start = time.monotonic()
        for i, k in enumerate(range(0, n, chunk)):
            await asyncio.sleep(max(0.0, start + i * 0.01 - time.monotonic()))
            await pub.submit(normalise(raw[k : k + chunk]))
        async with asyncio.timeout(60):
            await pub.flush()
        r = await asyncio.to_thread(sub.result)
    assert r["n"] == n, f"subscriber got {r['n']} of {n} samples"
    return sorted(r["lat"])


def pct(xs: list[float], p: float) -> float:
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 1883
    with tempfile.TemporaryDirectory() as d:
        raw_rate, raw_lost = raw_throughput(port, min(n, 30_000))
        rate, _, info = asyncio.run(gateway_throughput(port, n, Path(d) / "tp.db"))
        lat = asyncio.run(gateway_latency(port, 2000, 5.0, Path(d) / "lat.db"))
    print(
        f"raw paho       {raw_rate:,.0f} msgs/s (QoS 1, one sample per message, inflight 20; "
        f"{raw_lost} dropped by the broker's queue for the subscriber)"
    )
    print(f"gateway        {rate:,.0f} samples/s end to end, {n} samples, batches of 2000")
    print(f"               {info}")
    print(f"ratio          {rate / raw_rate:.1f}x raw paho")
    print(
        f"latency        at 2,000 samples/s: p50 {pct(lat, 50) * 1e3:.1f} ms, "
        f"p99 {pct(lat, 99) * 1e3:.1f} ms, max {lat[-1] * 1e3:.1f} ms ({len(lat)} samples)"
    )
    print(f"samples_per_s {rate:.0f}")


if __name__ == "__main__":
    main()
