"""Stores: every test runs on SQLite (a file in tmp_path) and PostgreSQL (its own schema)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kpi_compare import assert_same_report

from iiotbed.errors import StorageError
from iiotbed.platform import Layout, StationLayout, compute_kpis
from iiotbed.platform.store import AssetInfo, Point, RunInfo, Store, open_store
from iiotbed.telemetry import Event, ItemState, OperationMode, PlannedState, Quality, Sample, Tag

PG = "postgresql://127.0.0.1:5432/test"
RUN = "run-1"
Body = Callable[[Store], Awaitable[None]]


def run(url: str, body: Body) -> None:
    async def main() -> None:
        async with open_store(url) as store:
            await body(store)

    asyncio.run(main())


def s(t: float, tag: str, value: Any, asset: str = "p/a", **kw: Any) -> Sample:
    return Sample(t=t, asset=asset, tag=tag, value=value, **kw)


# --------------------------------------------------------------------------- samples


def test_round_trip_keeps_values_units_quality_and_order(store_url: str) -> None:
    samples = [
        s(2.0, "Temp", 21.5, unit="CEL", gateway_ts=1e9 + 2.5, seq=7),
        s(1.0, "Temp", None, unit="CEL", quality=Quality.Bad),
        s(1.0, "Recipe", "lcm-55"),
        s(3.0, "Count", 12, unit="C62", quality=Quality.Uncertain),
        s(2.0, "Temp", 22.0, asset="p/b", unit="CEL"),
    ]

    async def body(store: Store) -> None:
        assert await store.write_samples(samples, RUN) == 5
        got = [x async for x in store.iter_samples(RUN)]
        # (t, insertion) order; run_id filled from the write
        order = [1, 2, 0, 4, 3]
        assert got == [dataclasses.replace(samples[i], run_id=RUN) for i in order]
        assert got[0].value is None and got[0].quality is Quality.Bad
        assert got[1].value == "lcm-55"
        assert [x.t for x in [y async for y in store.iter_samples(RUN, 2.0, 2.0)]] == [2.0, 2.0]
        assert [y async for y in store.iter_samples("other")] == []
        counts = await store.counts(RUN)
        assert (counts.samples, counts.events, counts.first_t, counts.last_t) == (5, 0, 1.0, 3.0)

    run(store_url, body)


def test_iter_samples_pages_through_large_runs(store_url: str) -> None:
    # more rows than one page, many sharing a time: keyset paging must not skip or repeat
    samples = [s(float(i // 7), "X", float(i)) for i in range(23_000)]

    async def body(store: Store) -> None:
        assert await store.write_samples(samples, RUN) == len(samples)
        got = [x.value async for x in store.iter_samples(RUN)]
        assert got == [float(i) for i in range(23_000)]

    run(store_url, body)


def test_resent_and_overlapping_batches_are_stored_once(store_url: str) -> None:
    batch = [s(float(i), "X", i * 1.5) for i in range(10)]

    async def body(store: Store) -> None:
        assert await store.write_samples(batch[:6], RUN) == 6
        assert await store.write_samples(batch[:6], RUN) == 0
        assert await store.write_samples(batch[3:], RUN) == 4
        # the same sample in another run is another record
        assert await store.write_samples(batch[:2], "run-2") == 2
        assert (await store.counts(RUN)).samples == 10
        assert [p.value for p in await store.query(RUN, "p/a", "X")] == [i * 1.5 for i in range(10)]
        # a changed value at the same time is a new sample, not a resend
        assert await store.write_samples([s(0.0, "X", 99.0)], RUN) == 1

    run(store_url, body)


def test_latest_takes_the_newest_sample_of_every_tag(store_url: str) -> None:
    async def body(store: Store) -> None:
        await store.write_samples(
            [
                s(5.0, "X", 5.0),
                s(9.0, "X", 9.0),
                s(7.0, "X", 7.0),  # arrives late: older than 9
                s(3.0, "Y", "a"),
                s(3.0, "Y", "b"),  # same time: the later insertion wins
                s(4.0, "X", 1.0, asset="p/ab"),
                s(8.0, "X", None, asset="p/a/sub", quality=Quality.Bad),
            ],
            RUN,
        )
        latest = {(x.asset, x.tag): x for x in await store.latest(RUN)}
        assert {k: v.value for k, v in latest.items()} == {
            ("p/a", "X"): 9.0,
            ("p/a", "Y"): "b",
            ("p/ab", "X"): 1.0,
            ("p/a/sub", "X"): None,
        }
        assert latest[("p/a/sub", "X")].quality is Quality.Bad
        # a prefix names a subtree: p/a and p/a/sub, not p/ab
        under = await store.latest(RUN, "p/a")
        assert sorted((x.asset, x.tag) for x in under) == [
            ("p/a", "X"),
            ("p/a", "Y"),
            ("p/a/sub", "X"),
        ]
        assert await store.latest("nothing") == []

    run(store_url, body)


def test_query_ranges_and_downsampling_buckets(store_url: str) -> None:
    # t: 0..9, value = t * 10, except t = 5 which is Bad (no value)
    samples = [
        s(
            float(t),
            "X",
            None if t == 5 else t * 10.0,
            quality=Quality.Bad if t == 5 else Quality.Good,
        )
        for t in range(10)
    ]

    async def body(store: Store) -> None:
        await store.write_samples(samples, RUN)
        raw = await store.query(RUN, "p/a", "X", start=2.0, end=7.0)
        assert raw == [Point(2.0, 20.0), Point(3.0, 30.0), Point(4.0, 40.0), Point(5.0, None),
                       Point(6.0, 60.0)]  # fmt: skip
        # buckets of 4 s aligned on t = 0: [0,4) [4,8) [8,12)
        q = store.query
        assert await q(RUN, "p/a", "X", every=4, agg="mean") == [
            Point(0.0, 15.0),
            Point(4.0, (40 + 60 + 70) / 3),  # the Bad sample has no value to average
            Point(8.0, 85.0),
        ]
        assert await q(RUN, "p/a", "X", every=4, agg="min") == [
            Point(0.0, 0.0), Point(4.0, 40.0), Point(8.0, 80.0)
        ]  # fmt: skip
        assert await q(RUN, "p/a", "X", every=4, agg="max") == [
            Point(0.0, 30.0), Point(4.0, 70.0), Point(8.0, 90.0)
        ]  # fmt: skip
        assert await q(RUN, "p/a", "X", every=4, agg="count") == [
            Point(0.0, 4.0), Point(4.0, 4.0), Point(8.0, 2.0)
        ]  # fmt: skip
        assert await q(RUN, "p/a", "X", every=4, agg="last") == [
            Point(0.0, 30.0), Point(4.0, 70.0), Point(8.0, 90.0)
        ]  # fmt: skip
        # range and buckets together; the bucket at 4 only sees t = 5 (Bad) and 6
        assert await q(RUN, "p/a", "X", start=5.0, end=7.0, every=4, agg="last") == [
            Point(4.0, 60.0)
        ]
        assert await q(RUN, "p/a", "X", start=5.0, end=6.0, every=2, agg="mean") == [
            Point(4.0, None)
        ]
        assert await q(RUN, "p/a", "Nope", every=4) == []
        with pytest.raises(ValueError, match="agg must be one of"):
            await q(RUN, "p/a", "X", every=4, agg="median")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="every must be a positive"):
            await q(RUN, "p/a", "X", every=0)

    run(store_url, body)


# --------------------------------------------------------------------------- events, runs, assets


def test_events_round_trip_and_dedup(store_url: str) -> None:
    events = [
        Event(2.0, "p/line", "UnitProduced", {"unit": "88.1/x-2", "waits": [0.5, 1.0]}),
        Event(1.0, "p/line", "UnitProduced", {"unit": "88.1/x-1", "nested": {"a": None}}),
        Event(3.0, "p/amr-1", "TripDone", {}),
    ]

    async def body(store: Store) -> None:
        assert await store.write_events(events, RUN) == 3
        assert await store.write_events(events[:2], RUN) == 0
        assert await store.events(RUN) == [events[1], events[0], events[2]]
        assert await store.events(RUN, start=1.5, end=2.0) == [events[0]]
        assert (await store.counts(RUN)).events == 3

    run(store_url, body)


def test_runs_and_assets_upsert(store_url: str) -> None:
    t0 = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)
    base = RunInfo(
        run_id="base-1",
        scenario="TCL baseline",
        scenario_file="scenarios/tcl-huizhou-baseline.yaml",
        scenario_hash="abc123",
        epoch="2026-01-05T00:00:00+08:00",
        seed=7,
        replication=2,
        speed=None,
        started=t0,
        status="running",
    )
    upgrade = RunInfo(
        run_id="up-1",
        scenario="TCL 5G",
        epoch="2026-01-05T00:00:00+08:00",
        seed=7,
        speed=10.0,
        started=t0 + dt.timedelta(hours=1),
        baseline_run_id="base-1",
        goal=0.2,
    )

    async def body(store: Store) -> None:
        await store.upsert_run(upgrade)
        await store.upsert_run(base)
        assert await store.get_run("base-1") == base
        assert await store.get_run("missing") is None
        done = dataclasses.replace(
            base,
            status="done",
            ended=t0 + dt.timedelta(minutes=5),
            answer_key={"line": {"oee": 0.61}},
        )
        await store.upsert_run(done)
        assert await store.list_runs() == [done, upgrade]

        assets = [
            AssetInfo("p/line-1", "line"),
            AssetInfo("p/line-1/bonding/bonder-01", "station", "bonding",
                      {"Manufacturer": "Example", "SerialNumber": "B-01"}),
            AssetInfo("p/line-10", "line"),
        ]  # fmt: skip
        await store.upsert_assets(assets)
        moved = dataclasses.replace(assets[1], stage="cof-bonding")
        await store.upsert_assets([moved])
        assert await store.assets() == [assets[0], moved, assets[2]]
        assert await store.assets("p/line-1") == [assets[0], moved]

    run(store_url, body)


def test_source_ts_is_absolute_when_the_run_epoch_is_known(store_url: str) -> None:
    # source_ts is not part of Sample; read it from the table itself
    async def body(store: Store) -> None:
        await store.upsert_run(RunInfo(RUN, "x", epoch="2026-01-05T00:00:00+08:00"))
        await store.write_samples([s(90.0, "X", 1.0)], RUN)

    run(store_url, body)
    expected = dt.datetime(2026, 1, 4, 16, 1, 30, tzinfo=dt.UTC)
    if store_url.startswith("sqlite"):
        import sqlite3

        # closing(): a sqlite3 connection's own `with` commits but never closes (3.13 warns)
        with contextlib.closing(sqlite3.connect(store_url[len("sqlite:///") :])) as db:
            (ts,) = db.execute("SELECT source_ts FROM samples").fetchone()
        assert ts == expected.timestamp()
    else:
        schema = store_url.split("schema=")[1]
        with psycopg.connect(PG) as conn:
            row = conn.execute(f"SELECT source_ts FROM {schema}.samples").fetchone()  # type: ignore[arg-type]
        assert row is not None and row[0] == expected


# --------------------------------------------------------------------------- KPIs


def _small_line() -> tuple[Layout, list[Sample]]:
    line = "p/l"
    m1, m2 = f"{line}/st/m1", f"{line}/st/m2"
    layout = Layout(
        line=line,
        stations=(
            StationLayout(m1, "st", "m1", {"a": 10.0, "b": 20.0}),
            StationLayout(m2, "st", "m2", {"a": 10.0, "b": 20.0}),
        ),
        stage_order=("st",),
        bottleneck_stage="st",
        counted_roles=frozenset({"operators"}),
        inspection_stages=frozenset(),
        mix={"a": 0.5, "b": 0.5},
    )
    ex, ne = int(ItemState.Executing), int(ItemState.NotExecuting)
    prod, brk = int(PlannedState.Production), int(PlannedState.Break)
    bad = Quality.Bad
    records = [
        s(0, Tag.PLANNED_STATE, prod, line),
        s(0, Tag.HEADCOUNT_PREFIX + "operators", 2, line),
        s(0, Tag.HEADCOUNT_PREFIX + "visitors", 9, line),  # not a counted role
        s(0, Tag.ITEM_STATE, ex, m1),
        s(0, Tag.ITEM_STATE, ne, m2),
        s(0, Tag.OPERATION_MODE, int(OperationMode.Processing), m1),
        s(0, Tag.PROCESSED, 100, m1),
        s(0, Tag.GOOD, 50, line),
        s(100, Tag.ITEM_STATE, ex, m2),
        s(100, Tag.PROCESSED, 105, m1),
        s(100, Tag.PROCESSED + "/a", 3, m1),
        s(150, Tag.FAULT, 1, m1),
        s(150, Tag.ITEM_STATE, ne, m1),
        s(150, Tag.FAILURES, 1, m1),
        s(180, Tag.ITEM_STATE, None, m2, quality=bad),  # unknown: no PBT for m2
        s(200, Tag.FAULT, 0, m1),
        s(200, Tag.ITEM_STATE, ex, m1),
        s(240, Tag.PLANNED_STATE, brk, line),
        s(240, Tag.HEADCOUNT_PREFIX + "operators", 1, line),
        s(250, Tag.PROCESSED, 104, m1),  # a stale resend: counters never move back
        s(270, Tag.PLANNED_STATE, prod, line),
        s(270, Tag.ITEM_STATE, ex, m2),
        s(300, Tag.OPERATION_MODE, int(OperationMode.Setup), m1),  # Executing in Setup: not APT
        s(320, Tag.GOOD, 61, line),
        s(320, Tag.SCRAP, 2, line),
        s(320, Tag.LINE_OUTPUT, 61, line),
        s(330, Tag.PROCESSED, 118, m1),
        s(330, Tag.DEFECTIVE, None, m1, quality=bad),
        s(330, Tag.DEFECTIVE, 1, m1),
        s(330, Tag.ENERGY, 2.5, m1),
        s(350, Tag.OPERATION_MODE, int(OperationMode.Processing), m1),
        s(360, Tag.PROCESSED, 121, m1),
        s(400, Tag.ITEM_STATE, ne, m2),
    ]
    return layout, records


@pytest.mark.parametrize("window", [(0.0, 400.0), (120.0, 340.0), (0.0, 500.0), (250.0, 250.0)])
def test_kpis_from_the_store_equal_compute_kpis(
    store_url: str, window: tuple[float, float]
) -> None:
    layout, records = _small_line()
    start, end = window
    expected = compute_kpis(records, layout, start=start, end=end)
    assert expected.line["pbt_h"] > 0 or start == end  # the data does exercise the engine

    async def body(store: Store) -> None:
        # written newest batch first: the store orders by time, as compute_kpis needs
        await store.write_samples(records[15:], RUN)
        await store.write_samples(records[:15], RUN)
        await store.write_samples([s(10, Tag.ITEM_STATE, 0, layout.stations[0].path)], "other")
        assert_same_report(await store.kpis(RUN, layout, start, end), expected)
        assert_same_report(await store.kpis(RUN, layout, start, end, streaming=True), expected)

    run(store_url, body)


def test_kpis_parse_numbers_sent_as_text_like_the_engine(store_url: str) -> None:
    layout, records = _small_line()
    records[6] = dataclasses.replace(records[6], value="100")  # ProcessedCount as text
    expected = compute_kpis(records, layout, start=0.0, end=400.0)
    plain = compute_kpis(_small_line()[1], layout, start=0.0, end=400.0)
    assert expected.stations != plain.stations  # the text value does count

    async def body(store: Store) -> None:
        await store.write_samples(records, RUN)
        assert_same_report(await store.kpis(RUN, layout, 0.0, 400.0), expected)

    run(store_url, body)


def test_kpis_of_a_simulated_day_equal_the_answer_key(store_url: str) -> None:
    from iiotbed.devices.sim import simulate
    from iiotbed.scenario import load_scenario

    scenario = load_scenario(Path(__file__).parents[2] / "scenarios" / "single-machine.yaml")
    records = simulate(scenario, 0, duration=24 * 3600.0)
    samples = [r for r in records if isinstance(r, Sample)]
    layout = Layout.from_scenario(scenario)

    async def body(store: Store) -> None:
        for i in range(0, len(samples), 1000):  # batches as the ingest would send them
            await store.write_samples(samples[i : i + 1000], RUN)
        for start, end in [(0.0, 86400.0), (8 * 3600.0, 12 * 3600.0)]:
            expected = compute_kpis(records, layout, start=start, end=end)
            assert expected.line["good_count"] > 0
            assert_same_report(await store.kpis(RUN, layout, start, end), expected)
        # end defaults to the last stored sample
        last = max(x.t for x in samples)
        assert_same_report(
            await store.kpis(RUN, layout), compute_kpis(records, layout, start=0.0, end=last)
        )

    run(store_url, body)


def test_kpis_of_windows_that_cut_hour_buckets_equal_compute_kpis(store_url: str) -> None:
    # the store rolls state seconds and counter maxima up per hour: windows that start and
    # end inside buckets read whole buckets plus two replayed edges; batches arrive out of
    # order (newest first), so closed buckets must be recomputed from late samples
    from iiotbed.devices.sim import simulate
    from iiotbed.scenario import load_scenario

    scenario = load_scenario(Path(__file__).parents[2] / "scenarios" / "single-machine.yaml")
    records = simulate(scenario, 1, duration=30 * 3600.0)
    samples = [r for r in records if isinstance(r, Sample)]
    layout = Layout.from_scenario(scenario)
    batches = [samples[i : i + 700] for i in range(0, len(samples), 700)]
    windows = [
        (0.0, 30 * 3600.0),
        (1234.5, 27 * 3600.0 + 17.25),  # cuts the first and the last bucket
        (7200.0, 7300.5),  # inside one bucket
        (5 * 3600.0 - 0.5, 9 * 3600.0 + 0.5),
        (29.5 * 3600.0, 40 * 3600.0),  # past the last sample: the open bucket is an edge
    ]

    async def body(store: Store) -> None:
        for batch in batches[len(batches) // 2 :]:
            await store.write_samples(batch, RUN)
        for batch in reversed(batches[: len(batches) // 2]):
            await store.write_samples(batch, RUN)
        await store.write_samples(samples[:500], RUN)  # a resend changes nothing
        for start, end in windows:
            expected = compute_kpis(records, layout, start=start, end=end)
            assert_same_report(await store.kpis(RUN, layout, start, end), expected)
        assert compute_kpis(records, layout, start=1234.5, end=97217.25).line["pbt_h"] > 0
        # a late state sample deep in the past: the rolled-up hours after it change too
        late = Sample(t=10 * 3600.0 + 60.0, asset=layout.stations[0].path, tag=Tag.ITEM_STATE,
                      value=int(ItemState.NotExecuting))  # fmt: skip
        assert await store.write_samples([late], RUN) == 1
        ordered = sorted([*samples, late], key=lambda x: x.t)  # stable: late after its peers
        before = compute_kpis(records, layout, start=0.0, end=30 * 3600.0)
        after = compute_kpis(ordered, layout, start=0.0, end=30 * 3600.0)
        assert after.line["availability"] < before.line["availability"]
        for start, end in windows[:2]:
            expected = compute_kpis(ordered, layout, start=start, end=end)
            assert_same_report(await store.kpis(RUN, layout, start, end), expected)

    run(store_url, body)


def test_kpis_ignore_a_calendar_of_another_asset(store_url: str) -> None:
    # a PlannedState of an asset that is not the layout's line: the engine ignores it
    layout, records = _small_line()
    other = [s(50.0, Tag.PLANNED_STATE, int(PlannedState.Break), "p/elsewhere"), *records]
    expected = compute_kpis(records, layout, start=0.0, end=400.0)

    async def body(store: Store) -> None:
        await store.write_samples(other, RUN)
        assert_same_report(await store.kpis(RUN, layout, 0.0, 400.0), expected)

    run(store_url, body)


# --------------------------------------------------------------------------- errors


def test_unknown_url_scheme_is_a_storage_error() -> None:
    with pytest.raises(StorageError, match="unknown store URL scheme 'mysql'") as info:
        open_store("mysql://localhost/db")
    assert info.value.url == "mysql://localhost/db"


def test_unwritable_sqlite_path_is_a_storage_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}"
    with pytest.raises(StorageError) as info:
        run(url, lambda store: asyncio.sleep(0))
    assert info.value.url == url
    assert "missing-dir" in str(info.value) and "writable" in str(info.value)


@pytest.mark.network
def test_unreachable_postgres_is_a_storage_error_with_the_url() -> None:
    url = "postgresql://iiot:secret@127.0.0.1:1/test"
    with pytest.raises(StorageError) as info:
        run(url, lambda store: asyncio.sleep(0))
    message = str(info.value)
    assert info.value.url == "postgresql://iiot:***@127.0.0.1:1/test"
    assert info.value.url in message and "secret" not in message
    assert "check that the server runs" in message
    assert "Traceback" not in message and 'File "' not in message
    assert "\n" not in message


def test_store_used_outside_async_with_says_how(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(StorageError, match="not open; use `async with`"):
        asyncio.run(store.write_samples([s(0.0, "X", 1.0)], RUN))


def test_kpis_across_a_bad_gap_equal_compute_kpis(store_url: str) -> None:
    # units counted across a Bad gap are kept out of performance; the rollups cannot tell
    # them (they keep a maximum per hour), so a window over a Bad counter mark replays that
    # counter's samples (not the whole run's) through the engine's Counter
    layout, records = _small_line()
    m1 = layout.stations[0].path
    gap = [
        s(3700, Tag.ITEM_STATE, None, m1, quality=Quality.Bad),
        s(3700, Tag.PROCESSED, None, m1, quality=Quality.Bad),
        s(4300, Tag.ITEM_STATE, int(ItemState.Executing), m1),
        s(4300, Tag.PROCESSED, 400, m1),
        s(7300, Tag.PROCESSED, 500, m1),
    ]
    records = [*records, *gap]
    expected = compute_kpis(records, layout, start=0.0, end=7300.0)
    naive = compute_kpis(
        [r for r in records if r.quality is not Quality.Bad], layout, start=0.0, end=7300.0
    )
    st = expected.stations[m1]
    assert st["processed"] == naive.stations[m1]["processed"]
    assert st["performance"] < naive.stations[m1]["performance"]  # the gap's units left out

    async def body(store: Store) -> None:
        await store.write_samples(records, RUN)
        await store.write_samples([s(7400, Tag.GOOD, 70, layout.line)], RUN)  # close the buckets
        assert_same_report(await store.kpis(RUN, layout, 0.0, 7300.0), expected)
        assert await store._kpi_totals(RUN, layout, 0.0, 7300.0) is not None  # not streamed

    run(store_url, body)
