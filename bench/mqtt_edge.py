"""Throughput of the MQTT device adapters against raw paho, measured in one run.

Needs Mosquitto at 127.0.0.1:1883. Prints, for QoS 0 through the same broker:
raw paho -> Mosquitto -> paho at the Sparkplug DDATA size and at the VDA 5050 state size,
the Sparkplug edge node's DDATA rate (messages/s and metrics/s) and the AMR agent's state
rate, each delivered to a subscribed paho client, and last ``ratio <adapter/raw>`` (the
lower of the two adapter/raw ratios). Usage: ``python bench/mqtt_edge.py [-n 20000]``.
"""

from __future__ import annotations

import os
import sys

# Run as a script, bench/ is sys.path[0]: bench/platform.py would shadow the standard
# library's `platform` module for every import below. Drop this folder from the path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse
import asyncio
import threading
import time
import uuid

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from iiotbed.devices.sparkplug import MetricDef, SparkplugEdgeNode
from iiotbed.devices.vda5050 import AmrAgent

HOST, PORT = "127.0.0.1", 1883
BROKER = f"mqtt://{HOST}:{PORT}"
METRICS = 10


class Counter:
    """A paho subscriber counting messages and the time of the last one."""

    def __init__(self, topic: str) -> None:
        self.count = 0
        self.bytes = 0
        self.last = 0.0
        self.done = threading.Event()
        self.expect = 0
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{uuid.uuid4().hex}")
        self.client.on_message = self._on_message
        ready = threading.Event()
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.connect(HOST, PORT)
        self.client.loop_start()
        self.client.subscribe(topic, qos=0)
        ready.wait(5)

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        self.count += 1
        self.bytes += len(msg.payload)
        self.last = time.perf_counter()
        if self.count >= self.expect:
            self.done.set()

    def reset(self, expect: int) -> None:
        self.count, self.bytes, self.expect = 0, 0, expect
        self.done.clear()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def rate(sub: Counter, start: float, n: int) -> tuple[float, float]:
    """(delivered messages/s, delivered fraction) once the stream has drained."""
    seen = -1
    while not sub.done.wait(0.5) and sub.count != seen:
        seen = sub.count  # QoS 0 may drop: stop once nothing arrived for half a second
    elapsed = (sub.last or time.perf_counter()) - start
    return sub.count / elapsed, sub.count / n


def raw(n: int, size: int) -> tuple[float, float]:
    topic = f"bench/raw/{uuid.uuid4().hex}"
    sub = Counter(topic)
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex}")
    pub.connect(HOST, PORT)
    pub.loop_start()
    payload = b"x" * size
    sub.reset(n)
    start = time.perf_counter()
    for _ in range(n):
        pub.publish(topic, payload, qos=0)
    result = rate(sub, start, n)
    pub.disconnect()
    pub.loop_stop()
    sub.close()
    return result


async def sparkplug(n: int) -> tuple[float, float, int]:
    group = f"bench-{uuid.uuid4().hex[:8]}"
    defs = [MetricDef(f"Line/Value{i}", "Double", unit="KWH") for i in range(METRICS)]
    sub = Counter(f"spBv1.0/{group}/DDATA/#")
    async with SparkplugEdgeNode(BROKER, group, "edge", devices={"meter": defs}) as node:
        await asyncio.sleep(0.2)
        sub.reset(n)
        t0 = 1_767_225_600_000
        start = time.perf_counter()
        for k in range(n):
            for i in range(METRICS):
                node.set("meter", f"Line/Value{i}", k + i / 10, t0 + k)
            await node.flush()
        msgs, fraction = await asyncio.to_thread(rate, sub, start, n)
        size = sub.bytes // max(sub.count, 1)
    sub.close()
    return msgs, fraction, size


async def vda5050(n: int) -> tuple[float, float, int]:
    mfr = f"bench{uuid.uuid4().hex[:8]}"
    sub = Counter(f"uagv/v2/{mfr}/amr/state")
    t0 = 1_767_225_600.0
    async with AmrAgent(BROKER, mfr, "amr", clock=lambda: t0) as amr:
        await asyncio.sleep(0.2)
        sub.reset(n)
        start = time.perf_counter()
        for k in range(n):
            # A driving flag that flips is a relevant change: every update sends a state.
            amr.update(t0 + k * 0.01, driving=bool(k % 2), battery=90 - k * 1e-4)
            if k % 64 == 0:
                await asyncio.sleep(0)  # let the loop breathe as a pacer would
        msgs, fraction = await asyncio.to_thread(rate, sub, start, n)
        size = sub.bytes // max(sub.count, 1)
    sub.close()
    # Clear the retained connection message this run left behind.
    c = paho.Client(CallbackAPIVersion.VERSION2)
    c.connect(HOST, PORT)
    c.publish(f"uagv/v2/{mfr}/amr/connection", b"", qos=0, retain=True)
    c.disconnect()
    return msgs, fraction, size



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20_000, help="messages per measurement")
    n = ap.parse_args().n

    spb_size, vda_size = 209, 569  # the adapters' message sizes, re-measured below
    before = raw(n, spb_size), raw(n, vda_size)
    spb_rate, spb_frac, spb_size = asyncio.run(sparkplug(n))
    vda_rate, vda_frac, vda_size = asyncio.run(vda5050(n))
    after = raw(n, spb_size), raw(n, vda_size)
    # The raw baseline is the better of a run before and one after the adapters.
    raw_spb, raw_spb_frac = max(before[0], after[0])
    raw_vda, raw_vda_frac = max(before[1], after[1])

    print(f"raw paho->mosquitto->paho, QoS 0, {spb_size} B: {raw_spb:10.0f} msg/s "
          f"(delivered {raw_spb_frac:.1%})")  # fmt: skip
    print(f"raw paho->mosquitto->paho, QoS 0, {vda_size} B: {raw_vda:10.0f} msg/s "
          f"(delivered {raw_vda_frac:.1%})")  # fmt: skip
    print(f"sparkplug DDATA ({METRICS} metrics, {spb_size} B): {spb_rate:10.0f} msg/s, "
          f"{spb_rate * METRICS:10.0f} metrics/s (delivered {spb_frac:.1%})")  # fmt: skip
    print(f"vda5050 state ({vda_size} B):            {vda_rate:10.0f} msg/s (delivered {vda_frac:.1%})")
    r_spb, r_vda = spb_rate / raw_spb, vda_rate / raw_vda
    print(f"sparkplug/raw {r_spb:.3f}  vda5050/raw {r_vda:.3f}")
    print(f"ratio {min(r_spb, r_vda):.3f}")


if __name__ == "__main__":
    main()
