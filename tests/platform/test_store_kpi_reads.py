"""Store KPIs of long runs: a counter's marks replayed from its own samples, and the KPI
reads kept off the event loop and the writes (a window of days takes seconds to read)."""

from __future__ import annotations

import asyncio
import threading
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from kpi_compare import assert_same_report

from iiotbed.platform import Layout, compute_kpis
from iiotbed.platform.kpi import KpiAccumulator, KpiReport
from iiotbed.platform.store import Store, _rollup, open_store
from iiotbed.telemetry import PlannedState, Quality, Record, Sample, Tag

PG = "postgresql://127.0.0.1:5432/test"
RUN = "run-long"
HOURS = 30.0


@cache
def _line() -> tuple[Layout, tuple[Record, ...]]:
    from iiotbed.devices.sim import simulate
    from iiotbed.scenario import load_scenario

    scenario = load_scenario(Path(__file__).parents[2] / "scenarios" / "single-machine.yaml")
    return Layout.from_scenario(scenario), tuple(simulate(scenario, 3, duration=HOURS * 3600))


def _samples(records: tuple[Record, ...] | list[Record]) -> list[Sample]:
    return [r for r in records if isinstance(r, Sample)]


async def _write(store: Store, samples: list[Sample]) -> None:
    for i in range(0, len(samples), 2000):  # batches as the ingest sends them
        await store.write_samples(samples[i : i + 2000], RUN)


def _gone_and_back(layout: Layout, records: tuple[Record, ...], quality: Quality) -> list[Record]:
    # an edge node that went away for 20 min at 10 h: every counter of the station and the
    # line marked (no value), as the gateway marks them on a Sparkplug NDEATH
    at = 10 * 3600.0
    tags = {(s.asset, s.tag) for s in _samples(records)}
    counters = [(a, t) for a, t in tags if _rollup.series_kind(t) == _rollup.COUNTER]
    assert counters
    marks = [Sample(at, a, t, None, None, quality) for a, t in sorted(counters)]
    kept = [r for r in records if not (at < r.t < at + 1200.0 and isinstance(r, Sample))]
    return sorted([*kept, *marks], key=lambda r: r.t)


@pytest.mark.parametrize("quality", [Quality.Bad, Quality.Uncertain], ids=["bad", "stale"])
def test_kpis_over_counter_marks_replay_those_counters(store_url: str, quality: Quality) -> None:
    # the engine takes a counter sample without a number (Bad, or an Uncertain stale mark)
    # as a gap; the store replays just those counters and still reads the rest from rollups
    layout, records = _line()
    marked = _gone_and_back(layout, records, quality)
    windows = [(0.0, HOURS * 3600), (9.5 * 3600, 20.25 * 3600), (11 * 3600.0, 12 * 3600.0)]
    full = compute_kpis(marked, layout, start=0.0, end=HOURS * 3600)
    naive = compute_kpis(
        [r for r in _samples(marked) if r.quality is Quality.Good],
        layout,
        start=0.0,
        end=HOURS * 3600,
    )
    assert full.line["good_count"] > 0
    assert full.line["performance"] < naive.line["performance"]  # the marks matter

    async def main() -> None:
        async with open_store(store_url) as store:
            await _write(store, _samples(marked))
            for start, end in windows:
                assert await store._kpi_totals(RUN, layout, start, end) is not None  # rollups
                assert_same_report(
                    await store.kpis(RUN, layout, start, end),
                    compute_kpis(marked, layout, start=start, end=end),
                )

    asyncio.run(main())


class _Gate:
    """Holds the first call of a KPI step in its thread until the test has written a sample
    and read the latest ones meanwhile; notes the threads it ran on."""

    def __init__(self) -> None:
        self.threads: set[str] = set()
        self.entered = threading.Event()
        self.written = threading.Event()
        self.saw_write = False

    def hold(self) -> None:
        self.threads.add(threading.current_thread().name)
        if not self.entered.is_set():
            self.entered.set()
            # on the event loop (or the writer's thread) this waits in vain
            self.saw_write = self.written.wait(20.0)


async def _write_while_held(store: Store, gate: _Gate, kpis: asyncio.Task[KpiReport]) -> None:
    assert await asyncio.to_thread(gate.entered.wait, 30.0)
    late = Sample(HOURS * 3600 + 60.0, "elsewhere/x", "Temperature", 21.5)
    assert await store.write_samples([late], "another-run") == 1
    assert [x.value for x in await store.latest("another-run")] == [21.5]
    assert not kpis.done()
    gate.written.set()


def test_streamed_kpis_leave_the_loop_and_the_writes_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a calendar of another asset: the rollups cannot tell, the engine reads every sample
    layout, records = _line()
    other = Sample(50.0, "p/elsewhere", Tag.PLANNED_STATE, int(PlannedState.Break))
    expected = compute_kpis(records, layout, start=0.0, end=HOURS * 3600)
    gate = _Gate()
    feed = KpiAccumulator.feed_many

    def feed_many(self: KpiAccumulator, batch: Any) -> None:
        gate.hold()
        feed(self, batch)

    async def main() -> None:
        async with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
            await _write(store, [other, *_samples(records)])
            assert await store._kpi_totals(RUN, layout, 0.0, HOURS * 3600) is None
            monkeypatch.setattr(KpiAccumulator, "feed_many", feed_many)
            kpis = asyncio.create_task(store.kpis(RUN, layout, 0.0, HOURS * 3600))
            await _write_while_held(store, gate, kpis)
            report = await kpis
            assert gate.saw_write
            assert gate.threads and threading.main_thread().name not in gate.threads
            assert_same_report(report, expected)  # what the engine gives over the records

    asyncio.run(main())


def test_kpis_replaying_counters_leave_the_writes_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, records = _line()
    marked = _gone_and_back(layout, records, Quality.Bad)
    gate = _Gate()
    replay = _rollup.replay_counter

    def replay_counter(rows: Any, start: float) -> Any:
        gate.hold()
        return replay(rows, start)

    async def main() -> None:
        async with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
            await _write(store, _samples(marked))
            monkeypatch.setattr(_rollup, "replay_counter", replay_counter)
            kpis = asyncio.create_task(store.kpis(RUN, layout, 0.0, HOURS * 3600))
            await _write_while_held(store, gate, kpis)
            report = await kpis
            assert gate.saw_write
            assert_same_report(report, compute_kpis(marked, layout, start=0.0, end=HOURS * 3600))

    asyncio.run(main())
