"""Lab 3 reference solution: stop the cleaner, watch the bonders starve, start it again."""

import asyncio
import json
import os

from asyncua import Client

from iiotbed.scenario import load_scenario

URL = os.environ.get("IIOTBED_OPCUA", "opc.tcp://127.0.0.1:4840/iiotbed/")
CLEANER = os.environ.get("IIOTBED_LAB_STATION", "cleaner-01")
SCENARIO = os.environ.get("IIOTBED_SCENARIO", "scenarios/tcl-huizhou-5g.yaml")
PATIENCE = 60.0  # wall seconds to wait for the bonders before giving up


class States:
    """Subscription handler: the latest PackML state text of each bonder."""

    def __init__(self, names):
        self.names = names  # node id -> station
        self.now = {}

    def datachange_notification(self, node, val, data):
        self.now[self.names[node.nodeid]] = getattr(val, "Text", val)


async def child(node, *names):
    """Follow browse names down from ``node``, whatever namespace each name is in."""
    for name in names:
        for c in await node.get_children():
            if (await c.read_browse_name()).Name == name:
                node = c
                break
        else:
            raise LookupError(f"no {name!r} under {node}")
    return node


async def main():
    scenario = load_scenario(SCENARIO)
    stage = next(s for s in scenario.line.stages if s.name == "cof-bonding")
    bonders = list(stage.station_names)
    async with Client(URL) as client:
        machines = await child(client.nodes.objects, "Machines")
        cleaner = await child(machines, CLEANER)
        nodes, names = [], {}
        for b in bonders:
            node = await child(machines, b, "State", "CurrentState")
            nodes.append(node)
            names[node.nodeid] = b
        states = States(names)
        sub = await client.create_subscription(50, states)
        await sub.subscribe_data_change(nodes)
        print(await cleaner.call_method(await child(cleaner, "Stop")))
        # a bonder that is Suspended now has nothing to work on: its buffer ran empty
        starved = set()
        async with asyncio.timeout(PATIENCE):  # they starve in seconds; not forever
            while starved != set(bonders):
                starved |= {b for b, s in states.now.items() if s == "Suspended"}
                await asyncio.sleep(0.02)
        print(await cleaner.call_method(await child(cleaner, "Start")))
        await sub.delete()
    print(json.dumps({"stopped": CLEANER, "starved": sorted(starved),
                      "buffer_capacity": stage.buffer_capacity}))


asyncio.run(main())
