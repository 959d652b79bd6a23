"""Generic JSON-over-MQTT collector: mapping rules, pointers, timestamps, refusals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import paho.mqtt.client as paho
import pytest
from gwkit import ListSink, until
from paho.mqtt.enums import CallbackAPIVersion

from iiotbed.errors import UnsError
from iiotbed.gateway.collectors import JsonMapping, JsonMqttCollector, resolve_pointer
from iiotbed.telemetry import Quality

EPOCH = 1_767_571_200.0


def test_pointer_and_mapping_checks() -> None:
    doc = {"a": {"b/c": [10, {"~k": 3}]}}
    assert resolve_pointer(doc, "/a/b~1c/1/~0k") == 3
    assert resolve_pointer(doc, "") is doc
    for bad in ("/a/x", "/a/b~1c/5", "/a/b~1c/0/z"):
        with pytest.raises(KeyError):
            resolve_pointer(doc, bad)
    with pytest.raises(ValueError, match="'#' must be the last"):
        JsonMapping("a/#/b", "x", "t")
    with pytest.raises(ValueError, match="start with '/'"):
        JsonMapping("a/b", "x", "t", value="v")
    with pytest.raises(UnsError, match="UNECE"):
        JsonMapping("a/b", "x", "t", unit="furlongs")


@pytest.mark.network
@pytest.mark.timeout(60)
def test_messages_become_samples_and_bad_ones_are_counted() -> None:
    asyncio.run(_json())


async def _json() -> None:
    prefix = f"j{time.time_ns() % 10**9}"
    sink = ListSink()
    rules = [
        JsonMapping(f"{prefix}/+/climate", "plant/hall/{1}", "Temperature", "/temp", "°C", "/ts"),
        JsonMapping(f"{prefix}/+/climate", "plant/hall/{1}", "Status", "/status",
                    timestamp="/iso", quality="/q"),
    ]  # fmt: skip
    col = JsonMqttCollector("mqtt://127.0.0.1:1883", sink, rules, epoch=EPOCH)
    task = asyncio.create_task(col.run())
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", 1883)
    pub.loop_start()
    try:
        await until(lambda: col.connected, what="collector up")
        good = {"temp": 21.5, "ts": (EPOCH + 60) * 1000, "status": "ok",
                "iso": "2026-01-05T08:01:00+08:00", "q": "Uncertain"}  # fmt: skip
        bad = [b"not json", json.dumps({**good, "temp": [1]}).encode(),
               json.dumps({**good, "q": "Great"}).encode(), json.dumps({**good, "iso": True}).encode()]
        for p in [json.dumps(good).encode(), *bad]:
            pub.publish(f"{prefix}/s7/climate", p, qos=1).wait_for_publish(5)
        await until(lambda: col.stats.messages == 5, what="five messages")
    finally:
        pub.disconnect()
        pub.loop_stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert col.stats.malformed == 4 and col.stats.samples == 2
    temp, status = sink.all
    assert (temp.asset, temp.tag, temp.value, temp.unit, temp.t) == ("plant/hall/s7", "Temperature", 21.5, "CEL", 60.0)
    assert (status.value, status.quality, status.t) == ("ok", Quality.Uncertain, 60.0)
