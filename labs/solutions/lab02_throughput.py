"""Lab 2 reference solution: subscribe to a counter, compute throughput, ask the platform.

Watches OperationCounters/ProcessedCount of IIOTBED_LAB_STATION for WINDOW sim seconds
(wall time = WINDOW / IIOTBED_SPEED), keeps each value with its SourceTimestamp, and
computes units per hour on the simulation's clock.
"""

import asyncio
import datetime as dt
import json
import os
import time
import urllib.request

from asyncua import Client

URL = os.environ.get("IIOTBED_OPCUA", "opc.tcp://127.0.0.1:4840/iiotbed/")
API = os.environ.get("IIOTBED_API", "http://127.0.0.1:8000")
STATION = os.environ.get("IIOTBED_LAB_STATION", "packer-01")
SPEED = float(os.environ.get("IIOTBED_SPEED", "60"))
WINDOW = 1800.0  # sim seconds to watch


class Keep:
    """Subscription handler: every (SourceTimestamp, value) the server sends."""

    def __init__(self):
        self.values = []

    def datachange_notification(self, node, val, data):
        self.values.append((data.monitored_item.Value.SourceTimestamp, val))


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
        asset = await (await child(machine, "Identification", "AssetPath")).read_value()
        counter = await child(machine, "OperationCounters", "ProcessedCount")
        keep = Keep()
        sub = await client.create_subscription(50, keep)
        await sub.subscribe_data_change(counter)
        while not keep.values:
            await asyncio.sleep(0.05)
        first = keep.values[0][0]
        # watch until the source time has moved WINDOW sim seconds past the first value
        while not keep.values or (keep.values[-1][0] - first).total_seconds() < WINDOW:
            await asyncio.sleep(min(1.0, WINDOW / SPEED / 20))
        await sub.delete()
    (s0, c0), (s1, c1) = keep.values[0], keep.values[-1]
    hours = (s1 - s0).total_seconds() / 3600.0
    s0, s1 = s0.replace(tzinfo=s0.tzinfo or dt.UTC), s1.replace(tzinfo=s1.tzinfo or dt.UTC)

    # the platform's figure for the same window: sim seconds = source time - scenario epoch
    runs = json.loads(urllib.request.urlopen(f"{API}/api/runs", timeout=10).read())
    run = runs["runs"][0] if isinstance(runs, dict) else runs[0]
    epoch = dt.datetime.fromisoformat(run["epoch"])
    t0, t1 = (s0 - epoch).total_seconds(), (s1 - epoch).total_seconds()
    # the platform stores what the gateway forwards a moment after the machine published
    # it: ask again (for up to 10 s) until it has counted up to your last value
    for _ in range(100):
        kpis = json.loads(urllib.request.urlopen(
            f"{API}/api/kpis?by=station&start={t0}&end={t1}", timeout=10).read())
        processed = kpis["stations"][asset]["processed"]
        if processed >= c1 - c0:
            break
        time.sleep(0.1)
    print(f"{STATION}: {c1 - c0} units in {hours:.3f} h = {(c1 - c0) / hours:.1f}/h; "
          f"platform: {processed}")
    print(json.dumps({"station": STATION, "t0": s0.isoformat(), "t1": s1.isoformat(),
                      "count0": c0, "count1": c1, "throughput_per_h": (c1 - c0) / hours,
                      "platform_processed": processed}))


asyncio.run(main())
