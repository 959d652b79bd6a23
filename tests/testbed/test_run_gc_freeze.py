"""While sim time runs, the objects alive at the start (the OPC UA address spaces with their
nodesets, the model, modules) are out of the cyclic GC's full collections: scanning them
blocked the event loop for up to 0.7 s at a time. They are thawed when the services close."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from iiotbed.platform.broker import free_port
from iiotbed.scenario import load_scenario
from iiotbed.testbed import RunOptions, Services, plan_run

ROOT = Path(__file__).resolve().parents[2]
SINGLE = ROOT / "scenarios" / "single-machine.yaml"


def test_startup_objects_are_frozen_while_the_run_goes_and_thawed_after(tmp_path: Path) -> None:
    scenario = load_scenario(SINGLE)
    opts = RunOptions(speed=20000.0, opcua_port=free_port(), runs_dir=tmp_path)
    plan = plan_run(scenario, opts, has_base=False)
    plan.run_dir.mkdir(parents=True)
    seen: dict[str, int] = {}

    async def main() -> None:
        async with Services(scenario, plan, opts) as tb:
            seen["before"] = gc.get_freeze_count()
            servers = tb.live.servers
            assert servers is not None
            stop = asyncio.Event()
            stop.set()  # the run stops at once: enough to have started it
            await tb.run(stop)
            seen["during"] = gc.get_freeze_count()
            # the OPC UA servers' objects are among the frozen, out of the collections
            seen["servers_tracked"] = int(gc.is_tracked(servers))
            seen["servers_visible"] = int(any(o is servers for o in gc.get_objects()))
        seen["after"] = gc.get_freeze_count()

    asyncio.run(main())
    assert seen["before"] == 0
    assert seen["during"] > 100_000  # the address spaces, the model, the modules
    assert seen["servers_tracked"] == 1 and seen["servers_visible"] == 0
    assert seen["after"] == 0
