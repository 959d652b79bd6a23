"""Rebirth requests during a replay: a host's NCMD `Node Control/Rebirth` is answered with a new
NBIRTH and DBIRTHs carrying the current values, seq on from 0, bdSeq unchanged."""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from iiotbed.platform.broker import EmbeddedBroker
from iiotbed.protocols.sparkplug.codec import decode_payload, pb
from iiotbed.recording import open_recording
from iiotbed.recording.replay import ReplayOptions, replay
from iiotbed.recording.resequence import plan, rebirth

pytestmark = [pytest.mark.network, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "tests/data/single-machine-8h.mcap"
NODE = "spBv1.0/iiotbed-lab/{}/teaching-line-1"


class Values:
    """A host's view of an edge node: each device's metrics by name (aliases from births)."""

    def __init__(self) -> None:
        self.names: dict[tuple[str, int], str] = {}
        self.now: dict[str, dict[str, Any]] = {}

    def take(self, topic: str, payload: pb.Payload) -> None:
        kind, device = topic.split("/")[2], (topic.split("/")[4:] or [""])[0]
        for m in payload.metrics:
            if kind.endswith("BIRTH"):
                self.names[device, m.alias] = m.name
            name = m.name or self.names[device, m.alias]
            which = m.WhichOneof("value")
            self.now.setdefault(device, {})[name] = getattr(m, which) if which else None


def test_rebirth_carries_the_values_the_session_sent_so_far() -> None:
    out = [o for o in plan(open_recording(SHIPPED).mqtt_messages()) if o.topic]
    k = [i for i, o in enumerate(out) if "/DDATA/" in o.topic][100]  # mid-shift
    seen = Values()
    for o in out[:k]:
        seen.take(o.topic, decode_payload(o.payload))
    births = rebirth(out[:k], 1_767_600_000_000)
    topics = [b.topic for b in births]
    devices = sorted(NODE.format("DBIRTH") + f"/{d}" for d in ("ar-headsets", "bonder-01", "line"))
    assert topics == [NODE.format("NBIRTH"), *devices]
    again = Values()
    for seq, b in enumerate(births):
        p = decode_payload(b.payload)
        assert p.seq == seq and p.timestamp == 1_767_600_000_000
        again.take(b.topic, p)
    assert again.now[""]["bdSeq"] == 0  # the session's
    for device in ("line", "bonder-01", "ar-headsets"):
        assert again.now[device] == seen.now[device], device
    good = seen.now["line"]["GoodCount"]
    assert 0 < good < 753  # mid-shift: above none, below the shift's answer key


def test_a_host_asking_for_a_rebirth_during_a_replay_gets_one() -> None:
    asyncio.run(_host_asks())


async def _host_asks() -> None:
    prefix = f"rb-{uuid.uuid4().hex[:8]}/"
    got: list[tuple[str, pb.Payload]] = []
    asked = threading.Event()
    lock = threading.Lock()
    async with EmbeddedBroker() as broker:
        host = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"host-{uuid.uuid4().hex[:8]}")

        def on_message(c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
            if "/NCMD/" in msg.topic:
                return  # its own request
            p = decode_payload(msg.payload)
            topic = msg.topic.removeprefix(prefix)
            with lock:
                got.append((topic, p))
                ddata = sum(1 for t, _ in got if "/DDATA/" in t)
            if ddata == 40 and not asked.is_set():
                asked.set()  # the host lost track: it asks the edge node for a rebirth
                cmd = pb.Payload(timestamp=0)
                cmd.metrics.add(
                    name="Node Control/Rebirth", datatype=pb.Boolean, boolean_value=True
                )
                c.publish(prefix + NODE.format("NCMD"), cmd.SerializeToString(), qos=0)

        subscribed = threading.Event()
        host.on_message = on_message
        host.on_subscribe = lambda *a: subscribed.set()
        host.connect("127.0.0.1", broker.port)
        host.loop_start()
        try:
            host.subscribe(f"{prefix}spBv1.0/iiotbed-lab/+/teaching-line-1/#", 1)
            host.subscribe(f"{prefix}spBv1.0/iiotbed-lab/+/teaching-line-1", 1)
            assert await asyncio.to_thread(subscribed.wait, 5)
            # 8 h at 10000x: ~3 s, the 233 line DDATA spread over it
            stats = await replay(open_recording(SHIPPED),
                                 ReplayOptions(broker.url, speed=10_000, topic_prefix=prefix))  # fmt: skip
            for _ in range(100):
                if len(got) >= stats.total:
                    break
                await asyncio.sleep(0.05)
        finally:
            host.disconnect()
            host.loop_stop()
    assert asked.is_set() and stats.rebirths == 1
    topics = [t for t, _ in got]
    assert len(got) == stats.total == 251 + 4  # the recording, and one NBIRTH + 3 DBIRTHs more
    births = [i for i, t in enumerate(topics) if "/NBIRTH/" in t]
    assert len(births) == 2 and "/NDEATH/" in topics[-1]
    second = births[1]
    assert [t.split("/")[2] for t in topics[second : second + 4]] == ["NBIRTH"] + ["DBIRTH"] * 3
    # bdSeq unchanged: the first NBIRTH's, the rebirth's and the NDEATH's are the session's
    bd = [{m.name: m.long_value for m in got[i][1].metrics}["bdSeq"] for i in (births[0], second)]
    assert bd == [0, 0] and got[-1][1].metrics[0].long_value == 0
    # seq: 0 at each NBIRTH, +1 on every other message (mod 256), no gap for the host
    prev = None
    for t, p in got[:-1]:
        assert p.seq == (0 if "/NBIRTH/" in t else (prev + 1) % 256), (t, p.seq, prev)  # type: ignore[operator]
        prev = p.seq
    # the new births carry what the host had seen until then
    seen, reborn = Values(), Values()
    for t, p in got[:second]:
        seen.take(t, p)
    for t, p in got[second : second + 4]:
        reborn.take(t, p)
    assert reborn.now == seen.now
