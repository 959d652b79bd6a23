"""OPC UA benchmark: value changes delivered to a subscribed client, bare asyncua vs iiotbed.

1. bare asyncua: a server with N Double variables written as fast as possible through
   ``write_attribute_value``;
2. iiotbed: ``MachineServer`` for the 5G scenario fed with simulator records
   (``apply_many``), or synthetic samples if the simulator is missing.

In both, one client in its own process subscribes to every variable (publishing interval
100 ms) and counts the notifications it receives. Prints both rates and
``ratio <devices/bare>``.

    python bench/opcua.py [--seconds 5] [--variables 200] [--repeat 3]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ also holds platform.py, which would shadow the standard library's `platform`
# (imported by uuid, hence by asyncua) when this file runs as a script
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import datetime as dt
import logging
import multiprocessing as mp
import socket
import statistics
import time
from collections.abc import Callable, Coroutine, Sequence
from multiprocessing.connection import Connection
from typing import Any

from asyncua import Client, Node, Server, ua

from iiotbed.devices.opcua import MachineServer
from iiotbed.scenario import Scenario, load_scenario
from iiotbed.telemetry import ItemState, Sample, Tag

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "tcl-huizhou-5g.yaml"
PUBLISHING_MS = 100
QUEUE = 100  # per monitored item, so bursts between publishes are not collapsed
BATCH = 200  # writes between yields to the event loop (lets the server publish)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- client (own process)


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        self.n += 1


async def _variables_under(node: Node, ns: int, seen: set[ua.NodeId] | None = None) -> list[Node]:
    """Every variable in namespace ``ns`` below ``node``, once (MachineryBuildingBlocks
    references AddIns a second time)."""
    seen = set() if seen is None else seen
    out: list[Node] = []
    for child in await node.get_children():
        if child.nodeid in seen or child.nodeid.NamespaceIndex != ns:
            continue
        seen.add(child.nodeid)
        if await child.read_node_class() == ua.NodeClass.Variable:
            out.append(child)
        out.extend(await _variables_under(child, ns, seen))
    return out


async def _client(endpoint: str, nodeids: Sequence[str] | None, conn: Connection) -> None:
    async with Client(endpoint) as client:
        if nodeids is None:
            ns = await client.get_namespace_index(conn.recv())
            machinery = await client.get_namespace_index("http://opcfoundation.org/UA/Machinery/")
            machines = await client.nodes.objects.get_child(f"{machinery}:Machines")
            nodes = await _variables_under(machines, ns)
        else:
            nodes = [client.get_node(n) for n in nodeids]
        counter = _Counter()
        sub = await client.create_subscription(PUBLISHING_MS, counter)
        await sub.subscribe_data_change(nodes, queuesize=QUEUE)
        await asyncio.sleep(1.0)  # initial values arrive first
        conn.send(("ready", len(nodes), counter.n))
        await asyncio.to_thread(conn.recv)  # blocks until the writer is done and drained
        conn.send(("done", counter.n))


def _client_main(endpoint: str, nodeids: Sequence[str] | None, conn: Connection) -> None:
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(_client(endpoint, nodeids, conn))


async def _measure(
    endpoint: str,
    nodeids: Sequence[str] | None,
    namespace: str | None,
    seconds: float,
    write_batch: Callable[[], Coroutine[Any, Any, int]],
) -> tuple[int, float, float]:
    """(subscribed variables, writes/s, changes delivered/s)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_client_main, args=(endpoint, nodeids, child), daemon=True)
    proc.start()
    try:
        if namespace is not None:
            parent.send(namespace)
        # a pipe read blocks: wait in a thread so the server keeps answering the client
        _tag, subscribed, before = await asyncio.to_thread(parent.recv)
        writes = 0
        t0 = time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            writes += await write_batch()
            await asyncio.sleep(0)
        await asyncio.sleep(1.0)  # let the last publishes reach the client
        parent.send("stop")
        _tag, after = await asyncio.to_thread(parent.recv)
    finally:
        await asyncio.to_thread(proc.join, 10)  # the server must answer the client's CloseSession
        if proc.is_alive():
            proc.kill()
    return subscribed, writes / elapsed, (after - before) / elapsed


# ---------------------------------------------------------------- 1. bare asyncua


async def bare(seconds: float, variables: int) -> float:
    port = free_port()
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bench/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace("urn:iiotbed:bench")
    folder = await server.nodes.objects.add_folder(ua.NodeId("bench", ns), "bench")
    ids = []
    for i in range(variables):
        node = await folder.add_variable(ua.NodeId(f"v{i}", ns), f"v{i}", 0.0)
        ids.append(node.nodeid)
    counter = 0

    async def write_batch() -> int:
        nonlocal counter
        now = dt.datetime.now(dt.UTC)
        for nid in ids:
            counter += 1
            dv = ua.DataValue(ua.Variant(float(counter), ua.VariantType.Double), None, now, now)
            await server.write_attribute_value(nid, dv)
        return len(ids)

    async with server:
        n, wps, cps = await _measure(
            server.endpoint.geturl(), [n.to_string() for n in ids], None, seconds, write_batch
        )
    print(f"bare asyncua   {n:5d} variables   writes {wps:9.0f}/s   delivered {cps:8.0f} changes/s")
    return cps


# ---------------------------------------------------------------- 2. iiotbed devices


def _records(scenario: Scenario) -> tuple[list[Sample], str]:
    try:
        from iiotbed.devices.sim import simulate
    except ImportError:
        return _synthetic(scenario), "synthetic samples"
    recs = simulate(scenario, duration=3 * 86400.0)
    return [r for r in recs if isinstance(r, Sample)], "simulator records (3 days)"


def _synthetic(scenario: Scenario) -> list[Sample]:
    out: list[Sample] = []
    paths = [p for _s, _n, p in scenario.station_paths()]
    for k in range(20_000):
        t = k * 0.5
        for p in paths:
            out.append(Sample(t, p, Tag.PROCESSED, k))
            out.append(Sample(t, p, Tag.ENERGY, k * 0.01))
            out.append(Sample(t, p, Tag.CYCLE_TIME, 30.0 + k % 7))
            if k % 10 == 0:
                state = ItemState.Executing if k % 20 else ItemState.NotExecuting
                out.append(Sample(t, p, Tag.ITEM_STATE, int(state)))
    return out


async def devices(seconds: float) -> float:
    scenario = load_scenario(SCENARIO)
    records, source = _records(scenario)
    pos = 0

    async with MachineServer.from_scenario(scenario, port=free_port()) as server:

        async def write_batch() -> int:
            nonlocal pos
            chunk = records[pos : pos + BATCH]
            pos = pos + BATCH if pos + BATCH < len(records) else 0
            return await server.apply_many(chunk)

        n, wps, cps = await _measure(server.endpoint, None, server.namespace, seconds, write_batch)
    print(
        f"iiotbed devices {n:4d} variables   samples applied {wps:6.0f}/s   "
        f"delivered {cps:8.0f} changes/s   ({len(server.machines)} machines, {source})"
    )
    return cps


async def main(seconds: float, variables: int, repeat: int) -> None:
    # alternate the two so drifting load from other processes hits both alike
    bs, ds = [], []
    for _ in range(repeat):
        bs.append(await bare(seconds, variables))
        ds.append(await devices(seconds))
    b, d = statistics.median(bs), statistics.median(ds)
    if repeat > 1:
        print(f"median of {repeat}: bare {b:.0f}/s, devices {d:.0f}/s")
    print(f"ratio {d / b:.3f}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--variables", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each; medians are compared")
    args = ap.parse_args()
    asyncio.run(main(args.seconds, args.variables, args.repeat))
