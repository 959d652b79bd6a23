"""The dashboard's state timeline of an ended run is the store's, whatever came late.

The live view feeds samples in time order after a short hold-back; a sample that arrives
after the view has moved past it is stored but cannot be drawn any more (a loaded machine
makes this happen: the CI once saw a station's timeline 0.0004 away from the availability
its card showed). Once the run has ended, the strips are rebuilt from the store, the source of
the run's KPIs, so their executing share is the availability again; so are they on a
platform that did not see the run live.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from iiotbed.devices.sim import simulate
from iiotbed.mqtt import stop_client
from iiotbed.platform import Layout, compute_kpis
from iiotbed.platform.catalog import RunCatalog
from iiotbed.platform.ingest import Ingest
from iiotbed.platform.queries import PlatformView
from iiotbed.platform.snapshot import snapshot
from iiotbed.platform.store import open_store
from iiotbed.protocols.uns import encode_batch, stream_topic
from iiotbed.scenario import load_scenario
from iiotbed.telemetry import Sample, Tag

pytestmark = [pytest.mark.network, pytest.mark.timeout(120)]

BROKER = "mqtt://127.0.0.1:1883"
ROOT_DIR = Path(__file__).resolve().parents[2]
DAY = 86400.0
LATE = (41_000.0, 54_000.0)  # the station's state changes of this stretch arrive last
STATE = (Tag.ITEM_STATE, Tag.OPERATION_MODE, Tag.FAULT)


async def _until(pred: Callable[[], bool], limit_s: float = 30.0) -> None:
    async with asyncio.timeout(limit_s):
        while not pred():  # noqa: ASYNC110 - plain counters, no event to wait on
            await asyncio.sleep(0.05)


def _share(cols: list[list[float]]) -> float:
    """The executing share of a timeline's columns: APT / PBT."""
    return sum(c[3] for c in cols) / sum(c[2] for c in cols)


def test_ended_run_timeline_is_the_stores_despite_late_samples(store_url: str) -> None:
    scenario = load_scenario(ROOT_DIR / "scenarios" / "single-machine.yaml")
    layout = Layout.from_scenario(scenario)
    records = simulate(scenario, 0, duration=DAY)
    samples = [r for r in records if isinstance(r, Sample)]

    def is_late(s: Sample) -> bool:
        return s.tag in STATE and LATE[0] <= s.t < LATE[1]

    late = [s for s in samples if is_late(s)]
    assert len(late) >= 9, "the stretch holds a fault and its repair"
    on_time = [s for s in samples if not is_late(s)]
    truth = compute_kpis(records, layout, start=0.0, end=DAY).to_dict()["stations"]
    root, run_id = f"test-{uuid.uuid4().hex[:10]}", "late-r0"
    topic = stream_topic(scenario.line_path, root)
    epoch = scenario.plant.epoch.timestamp()

    async def main() -> None:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex}")
        client.connect("127.0.0.1", 1883)
        client.loop_start()

        async def send(batch: list[Sample], i: int) -> None:
            payload = encode_batch(batch, epoch=epoch, run_id=run_id, gateway_ts=1.0e9 + i)
            info = client.publish(topic, payload, qos=1)
            await asyncio.to_thread(info.wait_for_publish, 5)

        try:
            async with open_store(store_url) as store:
                catalog = RunCatalog(store, scenario)
                # no hold-back: every sample is due at once, so the stretch's comes late
                async with Ingest(
                    store, BROKER, catalog=catalog, root=root, reorder_s=0.0, reorder_wall_s=0.0
                ) as ingest:
                    for i in range(0, len(on_time), 500):
                        await send(on_time[i : i + 500], i)
                    await _until(lambda: ingest.metrics.stored == len(on_time))
                    await send(late, -1)
                    await _until(lambda: ingest.metrics.stored == len(samples))
                    live = ingest.live(run_id)
                    assert live is not None and live.timeline is not None
                    assert live.late == len(late) == ingest.metrics.late
                    run = await store.get_run(run_id)
                    assert run is not None
                    view = PlatformView(store, catalog, ingest)
                    path = layout.stations[0].path
                    # while the run goes, the live view draws what it was fed, so it is off
                    running = await snapshot(view, run_id)
                    (card,) = [s for s in running["stations"] if s["path"] == path]
                    assert _share(card["timeline"]) != pytest.approx(
                        truth[path]["availability"], rel=1e-6
                    ), "the late state changes should have been missed live"
                    # the run ends: its answer key's window is known
                    ended = dataclasses.replace(
                        run, status="completed", answer_key={"start": 0.0, "end": DAY}
                    )
                    await store.upsert_run(ended)
                    after = await snapshot(view, run_id)
                    assert after["t"] == DAY
                    for s in after["stations"]:
                        cols = s["timeline"]
                        assert sum(c[1] for c in cols) == pytest.approx(DAY)
                        want = truth[s["path"]]["availability"]
                        assert _share(cols) == pytest.approx(want, rel=1e-9), s["path"]
                        assert s["kpis"]["availability"] == pytest.approx(want, rel=1e-9)
                    # the same page from a platform that did not see the run live
                    cold = await snapshot(PlatformView(store, catalog), run_id)
                    assert [s["timeline"] for s in cold["stations"]] == [
                        s["timeline"] for s in after["stations"]
                    ]
        finally:
            client.disconnect()
            stop_client(client)

    asyncio.run(main())
