"""Lab 2 reference solution: subscribe to a counter, compute throughput, ask the platform.

Watches OperationCounters/ProcessedCount of IIOTBED_LAB_STATION for WINDOW sim seconds
(wall time = WINDOW / IIOTBED_SPEED), keeps each value with its SourceTimestamp, and
computes units per hour on the simulation's clock.
"""

import asyncio
import datetime as dt
import json
import os
import urllib.parse
import urllib.request

from asyncua import Client

URL = os.environ.get("IIOTBED_OPCUA", "opc.tcp://127.0.0.1:4840/iiotbed/")
API = os.environ.get("IIOTBED_API", "http://127.0.0.1:8000")
RUN_ID = os.environ.get("IIOTBED_RUN_ID")  # None: the newest run
STATION = os.environ.get("IIOTBED_LAB_STATION", "packer-01")
SPEED = float(os.environ.get("IIOTBED_SPEED", "60"))
WINDOW = 900.0  # sim seconds to watch (the checker wants at least 600)
PATIENCE = 60.0  # wall seconds to wait for anything before giving up


class Keep:
    """Subscription handler: every (SourceTimestamp, value) the server sends."""

    def __init__(self):
        self.values = []
        self.changed = asyncio.Event()  # set at each new value

    def datachange_notification(self, node, val, data):
        self.values.append((data.monitored_item.Value.SourceTimestamp, val))
        self.changed.set()

    async def until(self, condition, what, limit_s=PATIENCE):
        """Wait for values until ``condition()`` holds; give up after ``limit_s`` wall s."""
        try:
            async with asyncio.timeout(limit_s):
                while not condition():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise SystemExit(f"waited {limit_s:g} s for {what} in vain") from None


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


async def get(path, **params):
    """GET the platform's API as JSON. urllib blocks: run it in a thread, not in the loop."""
    url = f"{API}{path}?{urllib.parse.urlencode(params)}"

    def fetch():
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())

    return await asyncio.to_thread(fetch)


async def main():
    async with Client(URL) as client:
        machine = await child(client.nodes.objects, "Machines", STATION)
        asset = await (await child(machine, "Identification", "AssetPath")).read_value()
        counter = await child(machine, "OperationCounters", "ProcessedCount")
        keep = Keep()
        sub = await client.create_subscription(50, keep)
        await sub.subscribe_data_change(counter)
        await keep.until(lambda: keep.values, "the counter's first value")
        first = keep.values[0][0]
        # watch until the source time has moved WINDOW sim seconds past the first value
        await keep.until(lambda: (keep.values[-1][0] - first).total_seconds() >= WINDOW,
                         f"{WINDOW:g} sim s of values", PATIENCE + WINDOW / SPEED)
        await sub.delete()
    (s0, c0), (s1, c1) = keep.values[0], keep.values[-1]
    hours = (s1 - s0).total_seconds() / 3600.0
    s0, s1 = s0.replace(tzinfo=s0.tzinfo or dt.UTC), s1.replace(tzinfo=s1.tzinfo or dt.UTC)

    # the platform's figure for the same window: sim seconds = source time - scenario epoch
    runs = await get("/api/runs")
    run = next((r for r in runs if r["run_id"] == RUN_ID), runs[-1])
    epoch = dt.datetime.fromisoformat(run["epoch"])
    t0, t1 = (s0 - epoch).total_seconds(), (s1 - epoch).total_seconds()
    # the platform stores what the gateway forwards a moment after the machine published
    # it: ask again until it has counted up to your last value
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE
    while True:
        kpis = await get("/api/kpis", by="station", start=t0, end=t1, run_id=run["run_id"])
        processed = kpis["stations"].get(asset, {}).get("processed")
        if (processed is not None and processed >= c1 - c0) or loop.time() > deadline:
            break  # caught up (or never will: print what it says, the checker tells)
        await asyncio.sleep(0.1)
    print(f"{STATION}: {c1 - c0} units in {hours:.3f} h = {(c1 - c0) / hours:.1f}/h; "
          f"platform: {processed}")
    print(json.dumps({"station": STATION, "t0": s0.isoformat(), "t1": s1.isoformat(),
                      "count0": c0, "count1": c1, "throughput_per_h": (c1 - c0) / hours,
                      "platform_processed": processed}))


asyncio.run(main())
