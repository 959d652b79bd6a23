"""R3: the OPC UA server restarts (``iiotbed devices`` stopped with Ctrl-C, started again
with its resume file): the gateway resubscribes; the gap is marked Bad, not filled.

Before the fix the collector kept the last values through the outage (nothing Bad), so the
KPI engine extended them across the gap.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from kit import Mosquitto, wait_for
from kit import testbed as running  # not "test*": pytest would collect it

from iiotbed.platform.store import open_store
from iiotbed.telemetry import Quality, Sample, Tag

pytestmark = pytest.mark.network

START, END = 8 * 3600.0, 11 * 3600.0
STOP_AT = 9.5 * 3600.0


def _mark(resume: Path) -> float:
    return float(json.loads(resume.read_text())["t"]) if resume.exists() else 0.0


async def _samples(store_url: str, run_id: str) -> list[Sample]:
    async with open_store(store_url) as store:
        return [s async for s in store.iter_samples(run_id)]


def test_opcua_server_restart_resubscribes_and_marks_the_gap(
    tmp_path: Path, broker: Mosquitto
) -> None:
    resume = tmp_path / "devices.resume.json"
    with running(tmp_path, broker, duration=END, speed=600.0) as tb:
        base = tb.devices_args
        tb.devices_args = lambda: [*base(), "--resume", str(resume)]  # type: ignore[method-assign]
        tb.start_all()
        wait_for(lambda: _mark(resume) > STOP_AT, 60, "the run to pass 9.5 h")
        stopping = time.time()
        tb.procs["devices"].stop()  # Ctrl-C: the OPC UA server goes away
        time.sleep(2.0)
        tb.start_devices()
        assert tb.procs["devices"].wait(120) == 0
        tb.wait_agreement(START, END)  # counters exact after the resubscription

        assert tb.run_id is not None
        samples = asyncio.run(_samples(tb.store, tb.run_id))
        state = [s for s in samples if s.tag == Tag.ITEM_STATE]
        bad = [s for s in state if s.quality is Quality.Bad]
        assert bad, "the lost session's item state was never marked Bad"
        mark = bad[0]
        assert mark.gateway_ts is not None and mark.gateway_ts >= stopping
        # resubscribed: Good state values after the mark, none dated inside the gap
        after = [s for s in state if s.quality is Quality.Good and (s.gateway_ts or 0) > mark.gateway_ts]
        assert after and all(s.t >= mark.t for s in after)
        station = tb.get("/api/kpis", run_id=tb.run_id, start=START, end=END, by="station")
        for name, k in station["stations"].items():
            assert k["unknown_h"] > 0.0, name  # the gap, counted apart
            assert k["availability"] <= 1.0 and (k["oee"] is None or k["oee"] <= 1.0), name
