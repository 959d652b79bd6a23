"""Lab 1 reference solution: browse a machine, read its identification and state.

Run by `iiotbed lab check 1 --reference`; IIOTBED_OPCUA and IIOTBED_LAB_STATION come
from the checker (see labs/01-browse/README.md).
"""

import asyncio
import json
import os

from asyncua import Client

URL = os.environ.get("IIOTBED_OPCUA", "opc.tcp://127.0.0.1:4840/iiotbed/")
STATION = os.environ.get("IIOTBED_LAB_STATION", "bonder-01")


def text(value):
    """A LocalizedText's text; anything else as it is."""
    return getattr(value, "Text", value)


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
    async with Client(URL) as client:
        machine = await child(client.nodes.objects, "Machines", STATION)
        answer = {"station": STATION}
        for name in ("Manufacturer", "SerialNumber", "ProductInstanceUri"):
            node = await child(machine, "Identification", name)
            answer[name] = text(await node.read_value())
        state = await child(machine, "MachineryItemState", "CurrentState")
        answer["ItemState"] = text(await state.read_value())
        print(f"{STATION}: {answer}")  # for you; the last line is the answer
        print(json.dumps(answer))


asyncio.run(main())
