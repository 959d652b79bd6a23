"""OPC UA start-up: the TCL line's MachineServer (companion nodesets loaded, typed machines)
beside bare asyncua building an address space of the same size with core types only.

1. iiotbed: ``MachineServer.from_scenario(tcl)`` entered and left (``async with``): asyncua
   init, DI + Machinery + PackML imported, every station built, listening;
2. bare asyncua: ``Server.init()``, one namespace, the same number of nodes per machine
   (one BaseObjectType object and Double variables, one AddNodes call per machine),
   ``start()`` and ``stop()``.

Each is run ``--repeat`` times in this process, alternating; prints the medians of wall
and CPU seconds (the process's, all threads: on a shared machine the wall time mostly
measures the neighbours), the nodeset import alone, and ``ratio <iiotbed/bare>`` (CPU).
The first server of a process also pays Python's imports of asyncua's standard address
space: one warm-up of each runs first.

    python bench/opcua_startup.py [--repeat 5]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ also holds platform.py, which would shadow the standard library's `platform`
# (imported by uuid, hence by asyncua) when this file runs as a script
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import logging
import socket
import statistics
import time

from asyncua import Server, ua

from iiotbed.devices.opcua import MachineServer
from iiotbed.devices.opcua._nodesets import load_companions
from iiotbed.scenario import Scenario, load_scenario

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "tcl-huizhou-5g.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


Times = tuple[float, float]  # wall s, CPU s


def _since(t0: Times) -> Times:
    return time.perf_counter() - t0[0], time.process_time() - t0[1]


def _now() -> Times:
    return time.perf_counter(), time.process_time()


async def iiotbed_start(scenario: Scenario) -> tuple[Times, list[int]]:
    """Seconds to open the line's server; nodes per machine in our namespace."""
    t0 = _now()
    server = MachineServer.from_scenario(scenario, port=free_port())
    async with server:
        elapsed = _since(t0)
        inner = server._server  # counting nodes needs the address space
        assert inner is not None
        ours = server.namespace_index
        nodes = [n for n in inner.iserver.aspace.keys() if n.NamespaceIndex == ours]  # noqa: SIM118 - not a dict
        per_machine = [
            sum(1 for n in nodes if isinstance(n.Identifier, str)
                and n.Identifier.split("/", 1)[0] == m.name)
            for m in server.machines
        ]  # fmt: skip
    return elapsed, per_machine


async def bare_start(per_machine: list[int]) -> Times:
    """Seconds for bare asyncua to init, add the same node count and start listening."""
    t0 = _now()
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{free_port()}/bare/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace("urn:bench:bare")
    objects = ua.NodeId(ua.ObjectIds.ObjectsFolder)
    for m, count in enumerate(per_machine):
        machine = ua.NodeId(f"m{m}", ns)
        items = [_item(machine, objects, f"m{m}", ua.NodeClass.Object)]
        items += [
            _item(ua.NodeId(f"m{m}/v{i}", ns), machine, f"v{i}", ua.NodeClass.Variable)
            for i in range(count - 1)
        ]
        for result in await server.iserver.isession.add_nodes(items):
            result.StatusCode.check()
    await server.start()
    elapsed = _since(t0)
    await server.stop()
    return elapsed


def _item(nodeid: ua.NodeId, parent: ua.NodeId, name: str, cls: ua.NodeClass) -> ua.AddNodesItem:
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = nodeid
    item.BrowseName = ua.QualifiedName(name, nodeid.NamespaceIndex)
    item.NodeClass = cls
    item.ParentNodeId = parent
    if cls == ua.NodeClass.Object:
        item.ReferenceTypeId = ua.NodeId(ua.ObjectIds.Organizes)
        item.TypeDefinition = ua.NodeId(ua.ObjectIds.BaseObjectType)
        attrs: ua.ObjectAttributes | ua.VariableAttributes = ua.ObjectAttributes()
    else:
        item.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HasComponent)
        item.TypeDefinition = ua.NodeId(ua.ObjectIds.BaseDataVariableType)
        attrs = ua.VariableAttributes()
        attrs.DataType = ua.NodeId(ua.ObjectIds.Double)
        attrs.Value = ua.Variant(0.0, ua.VariantType.Double)
        attrs.ValueRank = ua.ValueRank.Scalar
    attrs.DisplayName = ua.LocalizedText(name)
    item.NodeAttributes = attrs
    return item


async def import_only() -> Times:
    """Seconds to import the three nodesets into an initialised server."""
    server = Server()
    await server.init()
    t0 = _now()
    await load_companions(server)
    return _since(t0)


def _line(what: str, runs: list[Times]) -> str:
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    each = ", ".join(f"{w:.2f}/{c:.2f}" for w, c in runs)
    return f"{what:48} median {wall:5.2f} s wall, {cpu:5.2f} s CPU  (runs wall/CPU: {each})"


async def main(repeat: int) -> None:
    scenario = load_scenario(SCENARIO)
    _, per_machine = await iiotbed_start(scenario)  # warm-up: imports, package data
    await bare_start(per_machine)
    ours: list[Times] = []
    bare: list[Times] = []
    imports: list[Times] = []
    for _ in range(repeat):
        ours.append((await iiotbed_start(scenario))[0])
        bare.append(await bare_start(per_machine))
        imports.append(await import_only())
    print(f"TCL line: {len(per_machine)} machines, {sum(per_machine)} nodes of their own")
    print(_line("iiotbed MachineServer (nodesets, typed)", ours))
    print(_line("bare asyncua, same node count, core types", bare))
    print(_line("nodeset import alone (DI, Machinery, PackML)", imports))
    a = statistics.median(r[1] for r in ours)
    b = statistics.median(r[1] for r in bare)
    print(f"ratio {a / b:.2f}  (CPU s, iiotbed / bare)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main(args.repeat))
