"""``iiotbed devices`` killed (``kill -9``) mid-run and restarted with its resume file.

Before the fix a restarted factory rewound to t = 0 with the same seed: its values carried
source times older than those already published and than the Sparkplug death marks (OEE
1.090 seen). Now it continues from the sim time its resume file was kept ahead at, and the
gateway marks the gap Bad (OPC UA session lost, Sparkplug NDEATH) instead of filling it.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path

import pytest
from kit import Mosquitto, Testbed, wait_for
from kit import testbed as running  # not "test*": pytest would collect it

from iiotbed.platform.store import open_store
from iiotbed.telemetry import Quality, Sample

pytestmark = pytest.mark.network

START, END = 8 * 3600.0, 11 * 3600.0  # the first shift's first three hours
KILL_AT = 9.5 * 3600.0


def _resumable(tb: Testbed, resume: Path) -> None:
    base = tb.devices_args
    tb.devices_args = lambda: [*base(), "--resume", str(resume)]  # type: ignore[method-assign]


def _mark(resume: Path) -> float:
    return float(json.loads(resume.read_text())["t"]) if resume.exists() else 0.0


async def _samples(store_url: str, run_id: str) -> list[Sample]:
    async with open_store(store_url) as store:
        return [s async for s in store.iter_samples(run_id)]


def test_a_killed_devices_process_resumes_and_never_rewinds(
    tmp_path: Path, broker: Mosquitto
) -> None:
    resume = tmp_path / "devices.resume.json"
    with running(tmp_path, broker, duration=END, speed=600.0) as tb:
        _resumable(tb, resume)
        tb.start_all()
        wait_for(lambda: _mark(resume) > KILL_AT, 60, "the run to pass 9.5 h")
        tb.procs["devices"].kill()
        killed_wall = time.time()
        marked = _mark(resume)
        time.sleep(2.0)  # the gateway notices: OPC UA session lost, NDEATH from the Will
        tb.start_devices()
        restarted_wall = time.time()
        assert "resumed from" in tb.procs["devices"].output() or marked > 0
        assert tb.procs["devices"].wait(120) == 0
        assert not resume.exists()  # a complete run forgets its resume point
        got = tb.wait_agreement(START, END)  # counters exact: nothing lost, nothing doubled

        assert tb.run_id is not None
        samples = asyncio.run(_samples(tb.store, tb.run_id))
        good = [s for s in samples if s.quality is not Quality.Bad and s.gateway_ts is not None]
        before = [s.t for s in good if s.gateway_ts is not None and s.gateway_ts < killed_wall]
        after = [s for s in good if s.gateway_ts is not None and s.gateway_ts > restarted_wall]
        assert before and after
        last_before = max(before)
        older = [s for s in after if s.t < last_before]
        assert not older, f"{len(older)} older than {last_before} (mark {marked}): {older[:5]}"
        assert min(s.t for s in after) >= marked - 1e-3  # at the mark (Sparkplug: ms), not t = 0
        # the gap is marked Bad (not filled) and counted apart; KPIs stay physical
        bad = [s for s in samples if s.quality is Quality.Bad]
        assert any(s.tag == "MachineryItemState" for s in bad)
        assert got["oee"] > 0.0 and got["availability"] <= 1.0
        station = tb.get("/api/kpis", run_id=tb.run_id, start=START, end=END, by="station")
        for name, k in station["stations"].items():
            # counted apart, and only while the line was in production: a kill whose resume
            # point lies close to the last publish (or in a break) leaves ~0 h; never negative
            assert k["unknown_h"] is not None and k["unknown_h"] >= 0.0, name
        assert not math.isnan(got["good_count"])
        # units made inside the gap count in the totals (above) but not in performance, as
        # the gap's time is not APT: OEE stays physical (1.003-1.009 before that rule)
        assert got["oee"] <= 1.0 and got["performance"] <= 1.0
        for name, k in station["stations"].items():
            assert k["oee"] is None or k["oee"] <= 1.0, (name, k)
            assert k["performance"] is None or k["performance"] <= 1.0, (name, k)
