"""The ingest's live view holds O(assets) memory, not O(samples): day 2 of the TCL
scenario, fed through the ingest's own decode (dedup) and live-view path, adds less than a
bound to what day 1 left, and the live KPIs still equal the engine's on the same records.

The stream goes as the gateway's UNS batches (one per sim minute) into ``Ingest._decode``
and ``Ingest._feed``: what a live platform runs per message, minus MQTT and the store write
(SQLite's own memory is not Python's; its page cache is capped by a PRAGMA).
"""

from __future__ import annotations

import asyncio
import gc
import math
import tracemalloc
from pathlib import Path

import pytest

from iiotbed.devices.sim import simulate
from iiotbed.mqtt import Message
from iiotbed.platform import Layout, compute_kpis
from iiotbed.platform.catalog import RunCatalog
from iiotbed.platform.ingest import Ingest
from iiotbed.platform.store import open_store
from iiotbed.protocols.uns import encode_batch, stream_topic
from iiotbed.scenario import load_scenario
from iiotbed.telemetry import Sample

pytestmark = pytest.mark.timeout(120)

ROOT_DIR = Path(__file__).resolve().parents[2]
DAY = 86400.0
DAYS = 2
#: growth of the traced memory from the end of day 1 to the end of day 2. The live view's
#: own state is per tag and per station; only the timeline's buckets grow with sim time
#: (24 bytes per station and 5 minutes: ~0.1 MB a day here). Before the bound, the dedup
#: memory alone grew ~30 MB a day (500,000 ids of ~230 B).
MAX_GROWTH_MB = 0.5


def test_live_view_memory_is_flat_over_sim_days(tmp_path: Path) -> None:
    scenario = load_scenario(ROOT_DIR / "scenarios" / "tcl-huizhou-5g.yaml")
    records = simulate(scenario, 0, duration=DAYS * DAY)
    samples = [r for r in records if isinstance(r, Sample)]
    epoch = scenario.plant.epoch.timestamp()
    topic = stream_topic(scenario.line_path)
    run_id = "tcl-memory"
    # the gateway's batches: one per sim minute, each stamped as the gateway sends it
    by_minute: dict[int, list[Sample]] = {}
    for s in samples:
        by_minute.setdefault(int(s.t // 60.0), []).append(s)
    payloads = [
        (60.0 * (k + 1), encode_batch(b, epoch=epoch, run_id=run_id, gateway_ts=epoch + s.t))
        for k, b in sorted(by_minute.items())
        for s in b[-1:]
    ]
    del records, by_minute

    async def main() -> tuple[list[float], float, float]:
        async with open_store(f"sqlite:///{tmp_path / 'm.db'}") as store:
            ingest = Ingest(
                store, "mqtt://127.0.0.1:1", catalog=RunCatalog(store, scenario), runs=[run_id],
                reorder_wall_s=0.0,
            )  # fmt: skip
            live = await ingest._register(run_id)
            traced: list[float] = []
            day = 1
            tracemalloc.start(1)
            try:
                for edge, payload in payloads:
                    d = ingest._decode([Message(topic, payload, 1, False)])
                    ingest._feed(live, d.samples.get(run_id, []))
                    if edge >= day * DAY:
                        gc.collect()
                        traced.append(tracemalloc.get_traced_memory()[0] / 2**20)
                        day += 1
            finally:
                tracemalloc.stop()
            ingest.settle(run_id)
            report = live.report()
            assert report is not None
            return traced, live.fed_t, report.line["oee"]

    traced, fed_t, oee = asyncio.run(main())
    assert len(traced) == DAYS, traced
    growth = traced[-1] - traced[0]
    assert growth < MAX_GROWTH_MB, (
        f"traced memory grew {growth:.2f} MB from day 1 to day {DAYS} "
        f"({', '.join(f'{x:.1f}' for x in traced)} MB at the end of each day)"
    )
    # bounding the memory changed no KPI: the live view equals the engine on the records
    want = compute_kpis(samples, Layout.from_scenario(scenario), start=0.0, end=fed_t)
    assert fed_t > (DAYS - 0.01) * DAY
    assert not math.isnan(oee)
    assert oee == pytest.approx(want.line["oee"], rel=1e-9)
