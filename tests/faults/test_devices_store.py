"""The broker goes away, then ``iiotbed devices`` is stopped (Ctrl-C) while its Sparkplug edge
node holds values; both start again (the same run, resumed): the held values reach the
gateway as historical after the new births, and the counters agree with the answer key.

Before the store went to disk, the values held at the stop died with the process (logged):
the restarted node restated only its state at the resume point, and everything between the
broker's loss and that point was missing from the store.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from pathlib import Path

import pytest
from kit import Mosquitto, Testbed, wait_for
from kit import testbed as running  # not "test*": pytest would collect it

from iiotbed.platform.store import open_store
from iiotbed.telemetry import Quality, Sample, Tag

pytestmark = pytest.mark.network

START, END = 8 * 3600.0, 11 * 3600.0
LOSE_BROKER_AT = 8.5 * 3600.0  # 2.5 sim h (15 s at 600x) before the end: Ctrl-C comes first


def _resumable(tb: Testbed, resume: Path) -> None:
    base = tb.devices_args
    tb.devices_args = lambda: [*base(), "--resume", str(resume), "--log-level", "info"]  # type: ignore[method-assign]


def _mark(resume: Path) -> float:
    return float(json.loads(resume.read_text())["t"]) if resume.exists() else 0.0


def _held_rows(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT count(*) FROM held").fetchone()[0])
    finally:
        db.close()


async def _samples(store_url: str, run_id: str) -> list[Sample]:
    async with open_store(store_url) as store:
        return [s async for s in store.iter_samples(run_id)]


def test_values_held_when_the_devices_stop_reach_the_gateway_after_the_restart(
    tmp_path: Path, broker: Mosquitto
) -> None:
    resume = tmp_path / "devices.resume.json"
    spb_store = tmp_path / "devices.resume.sparkplug.db"
    with running(tmp_path, broker, duration=END, speed=600.0) as tb:
        _resumable(tb, resume)
        tb.start_all()
        gateway = tb.procs["gateway"]
        gateway.wait_output(r"sparkplug: [1-9]\d* rx", 60)  # the edge node was born
        wait_for(lambda: _mark(resume) > LOSE_BROKER_AT, 60, "the run to pass 8:30")
        broker.stop()
        time.sleep(2.0)  # ~20 sim min held by the edge node (the broker is away)
        devices = tb.procs["devices"]
        assert devices.stop(30) is not None  # Ctrl-C, while holding values
        first = devices.output()
        held = int(re.findall(r"closes holding (\d+) values: kept in", first)[-1])
        assert held > 0 and _held_rows(spb_store) == held
        stopped_at = _mark(resume)

        # the gateway hears nothing over MQTT from here until the restart: the broker is
        # down. Taken before the start, not after "live at": the restarted edge node may
        # forward its store before that line (the host's STATE online is already there)
        restarted_wall = time.time()
        broker.start()
        # sim time holds until the gateway is back on both paths: its OPC UA reconnect may be
        # backing off for up to 10 s, longer than the rest of the run takes at this speed
        devices.argv = [*devices.argv, "--wait-for-host"]
        tb.start_devices()
        out = devices.wait_output(r"read (\d+) held values back", 60)
        assert int(out.group(1)) == held
        assert devices.wait(180) == 0
        log = devices.output().rsplit("===== start #", 1)[-1]
        assert re.search(rf"forwarded {held} stored values as historical", log), log[-3000:]
        assert not spb_store.exists()  # a complete run leaves no store behind
        tb.wait_agreement(START, END)  # counters exact: nothing lost, nothing doubled

        assert tb.run_id is not None
        samples = asyncio.run(_samples(tb.store, tb.run_id))
        # Sparkplug values (they carry a seq) dated before the resume point that arrived
        # after the restart: only the store on disk can have carried them (the restarted
        # process restates its state at the point, and goes on from there)
        late = [s for s in samples if s.seq is not None and s.quality is Quality.Good
                and s.gateway_ts is not None and s.gateway_ts > restarted_wall
                and s.t < stopped_at - 1.0]  # fmt: skip
        assert late, f"no held value reached the store ({held} held)"
        # held while the broker was away: after the host's stale mark for the lost broker
        lost = min(s.t for s in samples if s.quality is Quality.Bad and s.seq is None
                   and s.gateway_ts is not None and s.gateway_ts < restarted_wall
                   and s.t > LOSE_BROKER_AT - 3600.0)  # fmt: skip
        assert all(s.t >= lost for s in late), sorted(s.t for s in late)[:5]
        assert any(s.tag == Tag.POWER for s in late)
