"""The devices' run announcement (:mod:`iiotbed.devices.live.announce`) over Mosquitto on
127.0.0.1:1883: the edge node keeps it retained (again after a lost connection), a gateway
reads it (``--run-id @devices``) however often it starts, and a cleared one is none."""

from __future__ import annotations

import asyncio
import time

import pytest
import typer

from iiotbed.cli.gateway import _announced_run
from iiotbed.devices.live.announce import (
    announcement,
    parse_announcement,
    run_id_of,
    run_topic,
)
from iiotbed.devices.sparkplug import MetricDef, SparkplugEdgeNode

pytestmark = [pytest.mark.network, pytest.mark.timeout(60)]

BROKER = "mqtt://127.0.0.1:1883"


def test_run_id_names_scenario_replication_and_token() -> None:
    a = run_id_of("TCL Huizhou 5G", 2, "0123456789abcdef0123")
    assert a == "tcl-huizhou-5g-r2-0123456789ab"
    assert run_id_of("TCL Huizhou 5G", 2, "fedcba9876543210") != a  # the next run: another
    assert parse_announcement(announcement("TCL Huizhou 5G", 2, "0123456789abcdef0123")) == a
    with pytest.raises(ValueError, match="not a run announcement"):
        parse_announcement(b"online")
    with pytest.raises(ValueError, match="1 to 200"):
        parse_announcement(b'{"run_id": ""}')


def test_gateways_read_the_run_the_node_keeps_retained() -> None:
    group = f"a{time.time_ns() % 10**9}"
    topic = run_topic(group, "edge-1")
    payload = announcement("s", 0, "feedfacecafebeef")

    def read(n: int, timeout: float = 10.0) -> str:
        return _announced_run(BROKER, topic, f"gw-{group}-{n}", timeout)

    async def run() -> None:
        node = SparkplugEdgeNode(BROKER, group, "edge-1", devices={"d": [MetricDef("X", "Int64")]},
                                 client_id=f"edge-{group}")  # fmt: skip
        node.announce(topic, payload)  # before the connect: published on it
        async with node:
            # two gateways, and one of them again (a restart): one run id
            ids = [await asyncio.to_thread(read, n) for n in (1, 2, 1)]
            assert ids == ["s-r0-feedfacecafe"] * 3
            await asyncio.to_thread(_clear, topic)  # gone from the broker ...
            node._conn.abort()  # ... and the node's link drops: its reconnect restates it
            assert await asyncio.to_thread(read, 3) == "s-r0-feedfacecafe"
            node.announce(topic, b"")  # the run complete: cleared
            await asyncio.sleep(0.3)
            with pytest.raises(typer.Exit):
                await asyncio.to_thread(read, 4, 1.0)

    asyncio.run(run())


def _clear(topic: str) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    c = paho.Client(CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", 1883)
    c.loop_start()
    try:
        c.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    finally:
        c.loop_stop()
        c.disconnect()
