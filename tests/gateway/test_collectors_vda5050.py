"""VDA 5050 collector against the project's AMR agent over Mosquitto (127.0.0.1:1883)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import paho.mqtt.client as paho
import pytest
from gwkit import ListSink, clear_retained, until
from paho.mqtt.enums import CallbackAPIVersion

from iiotbed.devices.vda5050 import AmrAgent
from iiotbed.gateway.collectors import Vda5050Collector
from iiotbed.telemetry import Quality

pytestmark = [pytest.mark.network, pytest.mark.timeout(60)]

EPOCH = 1_767_571_200.0
LINE = "tcl/huizhou/module-assembly/line-1"


def test_state_visualization_and_connection_broken_marks_stale() -> None:
    asyncio.run(_amr())


async def _amr() -> None:
    mfr = f"m{time.time_ns() % 10**9}"
    sink = ListSink()
    col = Vda5050Collector("mqtt://127.0.0.1:1883", sink, epoch=EPOCH, manufacturer=mfr,
                           assets={"amr-01": f"{LINE}/amr-01"}, prefix=LINE,
                           backoff_initial=0.1)  # fmt: skip
    task = asyncio.create_task(col.run())
    asset = f"{LINE}/amr-01"
    try:
        await until(lambda: col.connected, what="collector up")
        agent = AmrAgent("mqtt://127.0.0.1:1883", mfr, "amr-01", clock=lambda: EPOCH + 1.0,
                         client_id=f"amr-{mfr}")  # fmt: skip
        async with agent:
            agent.update(EPOCH + 10.0, battery=81.5, position=(3.0, 4.5), driving=True)
            await until(lambda: sink.last().get((asset, "BatteryLevel")) is not None
                        and sink.last()[(asset, "BatteryLevel")].value == 81.5, what="state")  # fmt: skip
            await until(lambda: sink.last().get((asset, "PositionX")) is not None
                        and sink.last()[(asset, "PositionX")].value == 3.0, what="position")  # fmt: skip
            last = sink.last()
            assert (last[(asset, "BatteryLevel")].value, last[(asset, "BatteryLevel")].unit) == (81.5, "P1")
            assert last[(asset, "BatteryLevel")].t == 10.0 and last[(asset, "Driving")].value == 1
            assert last[(asset, "ErrorCount")].value == 0 and last[(asset, "PositionY")].unit == "MTR"
            assert last[(asset, "ConnectionState")].value == "ONLINE"
            # malformed: not JSON, a wrong type, a state without the header
            spy = paho.Client(CallbackAPIVersion.VERSION2)
            spy.connect("127.0.0.1", 1883)
            spy.loop_start()
            base = f"uagv/v2/{mfr}/amr-01"
            for p in (b"\xff", b'{"headerId": 1, "timestamp": "2026-01-05T00:00:00Z", "driving": 1}',
                      b'{"driving": true}', b'[]'):  # fmt: skip
                spy.publish(f"{base}/state", p, qos=1).wait_for_publish(5)
            spy.disconnect()
            spy.loop_stop()
            await until(lambda: col.stats.malformed == 4, what="four malformed")
            n = len(sink.all)
            agent.connection.abort()  # the broker publishes CONNECTIONBROKEN (the Will)
            await until(lambda: any(s.tag == "ConnectionState" and s.value == "CONNECTIONBROKEN"
                                    for s in sink.all[n:]), what="CONNECTIONBROKEN")  # fmt: skip
            stale = [s for s in sink.all[n:] if s.quality is Quality.Bad]
            assert {s.tag for s in stale} >= {"BatteryLevel", "PositionX", "PositionY", "Driving"}
            assert all(s.value is None and s.t >= 10.0 for s in stale)
            await until(lambda: sink.last()[(asset, "ConnectionState")].value == "ONLINE", what="back")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(clear_retained, [f"uagv/v2/{mfr}/amr-01/connection"])
