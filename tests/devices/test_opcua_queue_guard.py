"""A burst of changes to one node between two publishes reaches an OPC UA client whole.

asyncua keeps ``queue_size`` values per monitored item and silently drops the oldest when
a node changes more often between publishes (a catch-up batch of the pacer did that to the
busiest stations' states: MTBF disagreed). The machine server waits for a publish instead;
only a client that takes nothing loses changes, and those are counted.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, Node, ua

from iiotbed.devices.opcua import MachineServer, _queues
from iiotbed.platform.broker import free_port
from iiotbed.scenario import load_scenario
from iiotbed.telemetry import Sample, Tag
from iiotbed.testbed.agreement import lost_warnings

SINGLE = Path(__file__).resolve().parents[2] / "scenarios" / "single-machine.yaml"
QUEUE = 100
BURST = 250  # changes of one node written in one batch, no publish in between


class Handler:
    def __init__(self) -> None:
        self.values: list[Any] = []
        self.last = asyncio.Event()

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        self.values.append(val)
        if val == BURST:
            self.last.set()


def _params(publishing: bool) -> ua.CreateSubscriptionParameters:
    return ua.CreateSubscriptionParameters(
        RequestedPublishingInterval=100.0, RequestedLifetimeCount=600,
        RequestedMaxKeepAliveCount=20, MaxNotificationsPerPublish=0,
        PublishingEnabled=publishing, Priority=0,
    )  # fmt: skip


async def _burst(publishing: bool) -> tuple[MachineServer, Handler]:
    scenario = load_scenario(SINGLE)
    ((_stage, station, path),) = scenario.station_paths()
    async with (
        MachineServer.from_scenario(scenario, port=free_port()) as server,
        Client(server.endpoint) as client,
    ):
        handler = Handler()
        sub = await client.create_subscription(_params(publishing), handler)
        node = client.get_node(
            ua.NodeId(f"{station}/OperationCounters/{Tag.PROCESSED}", server.namespace_index)
        )
        await sub.subscribe_data_change(node, queuesize=QUEUE)
        records = [Sample(float(i), path, Tag.PROCESSED, i) for i in range(1, BURST + 1)]
        await server.apply_many(records)
        if publishing:
            await asyncio.wait_for(handler.last.wait(), 30)
        return server, handler


def test_a_burst_longer_than_the_queue_arrives_whole() -> None:
    server, handler = asyncio.run(_burst(publishing=True))
    assert handler.values[0] == 0  # the value at subscription time
    assert handler.values[1:] == list(range(1, BURST + 1))
    assert server.lost == 0
    assert lost_warnings(server.lost) == []


def test_a_client_taking_nothing_loses_changes_and_they_are_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_queues, "WAIT_S", 0.05)  # the server gives up on it soon
    server, handler = asyncio.run(_burst(publishing=False))
    assert handler.values == []
    # the value at subscription time and 250 changes into a queue of 100
    assert server.lost == 1 + BURST - QUEUE
    # the run's report says so next to the agreement table
    (warning,) = lost_warnings(server.lost)
    assert warning.startswith("telemetry lost: 151 changes never reached the gateway")


def test_a_dead_clients_subscription_neither_stops_the_devices_nor_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """asyncua keeps a subscription after its client's connection dies; the collector's
    new session gets every change, so nothing is lost and nobody is waited for."""

    async def body() -> tuple[MachineServer, Handler]:
        scenario = load_scenario(SINGLE)
        ((_stage, station, path),) = scenario.station_paths()
        async with MachineServer.from_scenario(scenario, port=free_port()) as server:
            nodeid = ua.NodeId(
                f"{station}/OperationCounters/{Tag.PROCESSED}", server.namespace_index
            )
            dead = Client(server.endpoint)
            await dead.connect()
            sub = await dead.create_subscription(_params(True), Handler())
            await sub.subscribe_data_change(dead.get_node(nodeid), queuesize=QUEUE)
            assert dead.uaclient.protocol is not None and dead.uaclient.protocol.transport
            dead.uaclient.protocol.transport.abort()  # the gateway process killed
            async with Client(server.endpoint) as client:
                handler = Handler()
                sub = await client.create_subscription(_params(True), handler)
                await sub.subscribe_data_change(client.get_node(nodeid), queuesize=QUEUE)
                assert server.subscriptions == 2  # the dead one is kept for a reconnect
                records = [Sample(float(i), path, Tag.PROCESSED, i) for i in range(1, BURST + 1)]
                await server.apply_many(records)
                await asyncio.wait_for(handler.last.wait(), 30)
            return server, handler

    server, handler = asyncio.run(body())
    assert handler.values[1:] == list(range(1, BURST + 1))
    assert server.lost == 0
    # given up on at once, not after waiting for it to take its notifications
    assert not [r for r in caplog.records if "took no notifications" in r.getMessage()]
