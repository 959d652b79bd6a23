"""Replay ``--max`` of a recording into its own Mosquitto, beside raw paho in the same run.

Replay path: :func:`iiotbed.recording.replay.replay` with ``speed=None`` (sessions re-born,
one connection per recorded publisher, a batch of at most 256 sent only after the previous
one was acknowledged) -> Mosquitto -> a paho subscriber in another process that counts.
Baselines, same broker, same run: one raw paho client publishing the very messages the
replay sends (same topics, payloads, order), in batches of at most 256 with
``max_inflight`` 256, each batch after the previous one's acknowledgements: (a) every
message at QoS 1 (PUBACK), (b) at each message's recorded QoS (as the replay does: PUBACK
at QoS 1, written at QoS 0). Rate = messages counted at the subscriber / (last receive -
start); nothing may be lost. The replay repeats the recording ``--loops`` times (new
sessions every pass, as ``--loop`` does).

Default recording: the TCL 5G scenario recorded first, 4 h from the first shift at 4000x,
in a temporary directory (~20 s). Run: ``python bench/replay.py [--recording F.mcap]
[--loops 15] [--rounds 3]``; the last line is ``ratio <replay/raw>`` against (a), raw
paho at QoS 1 (issue 13's baseline); the line before it gives the stricter ratio against (b).
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
import logging
import multiprocessing as mp
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from iiotbed.platform.broker import EmbeddedBroker, free_port
from iiotbed.recording import open_recording
from iiotbed.recording.replay import ReplayOptions, replay
from iiotbed.recording.resequence import plan

ROOT = Path(__file__).resolve().parents[1]
BATCH = 256  # the replay's batch and in-flight window (replay._BATCH)


# --------------------------------------------------------------------------- subscriber process


def subscriber(port: int, pattern: str, expect: int, ready: Any, results: Any) -> None:
    """Count messages on ``pattern`` until ``expect`` arrived or nothing came for 3 s."""
    state: dict[str, Any] = {"n": 0, "last": None}
    finished = threading.Event()

    def on_message(c: paho.Client, u: Any, m: paho.MQTTMessage) -> None:
        state["n"] += 1
        state["last"] = time.time()
        if state["n"] >= expect:
            finished.set()

    subscribed = threading.Event()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{uuid.uuid4().hex[:8]}")
    c.on_message = on_message
    c.on_subscribe = lambda *a: subscribed.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.subscribe(pattern, qos=1)
    subscribed.wait(5)
    ready.put(True)
    started = time.time()
    while not finished.wait(0.25):
        if time.time() - (state["last"] or started) > 3.0:
            break  # quiet for 3 s: the rest is lost
    c.disconnect()
    c.loop_stop()
    results.put(dict(state))


class Sub:
    def __init__(self, port: int, pattern: str, expect: int) -> None:
        ctx = mp.get_context("spawn")
        ready, self.results = ctx.Queue(), ctx.Queue()
        self.proc = ctx.Process(
            target=subscriber, args=(port, pattern, expect, ready, self.results)
        )
        self.proc.start()
        ready.get(timeout=30)

    def result(self) -> dict[str, Any]:
        r: dict[str, Any] = self.results.get(timeout=300)
        self.proc.join(10)
        return r


# --------------------------------------------------------------------------- runs


def raw(port: int, messages: list[tuple[str, bytes, int, bool]], qos1: bool) -> tuple[float, int]:
    """One paho client, the same messages, batches of ``BATCH`` each after the previous one's
    acknowledgements (PUBACK at QoS 1, written at QoS 0): (messages/s, lost)."""
    prefix = f"bench-raw-{uuid.uuid4().hex[:8]}/"
    sub = Sub(port, f"{prefix}#", len(messages))
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-raw-{uuid.uuid4().hex[:8]}")
    c.max_inflight_messages_set(BATCH)
    c.connect("127.0.0.1", port)
    c.loop_start()
    t0 = time.time()
    for i in range(0, len(messages), BATCH):
        infos = [c.publish(prefix + topic, payload, qos=1 if qos1 else qos, retain=False)
                 for topic, payload, qos, _retain in messages[i : i + BATCH]]  # fmt: skip
        for info in infos:
            info.wait_for_publish(30)
    r = sub.result()
    c.disconnect()
    c.loop_stop()
    return int(r["n"]) / (float(r["last"]) - t0), len(messages) - int(r["n"])


async def replayed(port: int, path: Path, loops: int, expect: int) -> tuple[float, int, int]:
    """(messages/s, lost, sessions) of a ``--max`` replay of ``loops`` passes."""
    prefix = f"bench-replay-{uuid.uuid4().hex[:8]}/"
    sub = await asyncio.to_thread(Sub, port, f"{prefix}#", expect)
    t0 = time.time()
    rec = open_recording(path)  # opening the file is part of the replay's work
    stats = await replay(rec, ReplayOptions(f"mqtt://127.0.0.1:{port}", speed=None, loops=loops,
                                            topic_prefix=prefix))  # fmt: skip
    r = await asyncio.to_thread(sub.result)
    assert stats.total == expect, (stats.total, expect)
    return int(r["n"]) / (float(r["last"]) - t0), expect - int(r["n"]), stats.sessions


async def record_default(out: Path) -> None:
    from iiotbed.cli._common import _load
    from iiotbed.cli.run import _first_production
    from iiotbed.recording import RecordOptions, record

    file = ROOT / "scenarios/tcl-huizhou-5g.yaml"
    end = _first_production(_load(file)) + 4 * 3600
    sc = _load(file, duration=end)  # as `iiotbed record --duration 4h`
    print(
        f"recording {sc.name}, sim time 0 .. {end / 3600:g} h at 4000x into {out} ...", flush=True
    )
    await record(sc, file, out, RecordOptions(speed=4000, end=end, opcua_port=free_port()))


async def main_async(path: Path | None, loops: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        if path is None:
            path = Path(tmp) / "tcl-4h.mcap"
            await record_default(path)
        rec = open_recording(path)
        msgs = [(o.topic, o.payload, o.qos, o.retain)
                for o in plan(list(rec.mqtt_messages()), loops=loops) if o.topic]  # fmt: skip
        qos1 = sum(1 for m in msgs if m[2] == 1)
        size = sum(len(m[1]) for m in msgs) / len(msgs)
        print(f"{path.name}: {len(msgs) // loops} MQTT messages a pass ({rec.counts()}), "
              f"{loops} passes = {len(msgs)} messages, {qos1} of them QoS 1, mean {size:.0f} B")  # fmt: skip
        best: dict[str, tuple[float, int]] = {}
        sessions = 0
        async with EmbeddedBroker("mosquitto") as broker:
            for k in range(rounds):
                # alternate the order: a machine shared with other work drifts
                order = ("raw1", "rawq", "replay") if k % 2 == 0 else ("replay", "rawq", "raw1")
                for name in order:
                    if name == "replay":
                        rate, lost, sessions = await replayed(broker.port, path, loops, len(msgs))
                    else:
                        rate, lost = await asyncio.to_thread(raw, broker.port, msgs, name == "raw1")
                    print(f"  round {k + 1} {name:<6} {rate:10.0f} msg/s, lost {lost}", flush=True)
                    if lost:
                        raise SystemExit(f"{name}: {lost} messages lost at the subscriber")
                    if rate > best.get(name, (0.0, 0))[0]:
                        best[name] = (rate, lost)
    r1, rq, rr = best["raw1"][0], best["rawq"][0], best["replay"][0]
    print(f"raw paho -> mosquitto, every message QoS 1, batches of {BATCH}: {r1:10.0f} msg/s")
    print(
        f"raw paho -> mosquitto, recorded QoS (as replayed), batches of {BATCH}: {rq:10.0f} msg/s"
    )
    print(f"replay --max ({sessions} sessions, nothing lost):               {rr:10.0f} msg/s")
    print(f"replay/raw recorded QoS {rr / rq:.3f} (the stricter: most recorded traffic is QoS 0)")
    print(f"ratio {rr / r1:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recording", type=Path, default=None,
                    help="an .mcap to replay (default: record 4 h of the TCL 5G scenario first)")  # fmt: skip
    ap.add_argument("--loops", type=int, default=15, help="passes over the recording")
    ap.add_argument("--rounds", type=int, default=3, help="measurements of each; the best counts")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    asyncio.run(main_async(a.recording, a.loops, a.rounds))


if __name__ == "__main__":
    main()
