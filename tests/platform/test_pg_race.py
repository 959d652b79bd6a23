"""Two writers of one run on one PostgreSQL (two ingest processes on a shared subscription):
the hour rollups must hold every writer's samples, whatever the interleaving of their
transactions. A batch that closes an hour bucket recomputes it from the samples it can
see; a batch of the other writer still uncommitted then must not be left out of it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kpi_compare import assert_same_report

from iiotbed.platform import Layout, StationLayout, compute_kpis
from iiotbed.platform.store import RunInfo, open_store
from iiotbed.telemetry import ItemState, OperationMode, PlannedState, Sample, Tag

pytestmark = pytest.mark.network

PG = "postgresql://127.0.0.1:5432/test"
RUN = "run-1"
EPOCH = "2026-01-05T00:00:00+08:00"
LINE = "p/l"
M1 = f"{LINE}/st/m1"


def s(t: float, tag: str, value: Any, asset: str = M1) -> Sample:
    return Sample(t=t, asset=asset, tag=tag, value=value)


def _layout() -> Layout:
    return Layout(
        line=LINE,
        stations=(StationLayout(M1, "st", "m1", {"a": 10.0}),),
        stage_order=("st",),
        bottleneck_stage="st",
        counted_roles=frozenset(),
        inspection_stages=frozenset(),
        mix={"a": 1.0},
    )


async def _waiting(conn: psycopg.AsyncConnection[Any], pid: int) -> bool:
    cur = await conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND pid = %s", (pid,))
    row = await cur.fetchone()
    return bool(row and row[0])


def test_a_batch_closing_an_hour_while_another_writer_holds_samples_of_it(pg_url: str) -> None:
    # writer B's batch (a state change late in hour 0) is written but not committed when
    # writer A's next batch (hour 1) closes hour 0: A's rollup of hour 0 cannot see B's
    # sample, and B's batch closes no bucket. B is held mid-transaction by a row lock a
    # third connection takes on the counter bucket B's batch updates.
    layout = _layout()
    ex, ne = int(ItemState.Executing), int(ItemState.NotExecuting)
    first = [
        s(0.0, Tag.PLANNED_STATE, int(PlannedState.Production), LINE),
        s(0.0, Tag.OPERATION_MODE, int(OperationMode.Processing)),
        s(0.0, Tag.ITEM_STATE, ex),
        s(0.0, Tag.PROCESSED, 0),
        s(1000.0, Tag.PROCESSED, 5),
    ]
    late = [s(3000.0, Tag.ITEM_STATE, ne), s(3000.0, Tag.PROCESSED, 10)]  # writer B
    closing = [s(4000.0, Tag.ITEM_STATE, ex), s(4000.0, Tag.PROCESSED, 11)]  # writer A
    records = first + late + closing
    schema = pg_url.split("schema=")[1]

    async def main() -> None:
        async with open_store(pg_url) as a, open_store(pg_url) as b:
            await a.upsert_run(RunInfo(RUN, "race", epoch=EPOCH))
            assert await a.write_samples(first, RUN) == len(first)
            pid = b._db.info.backend_pid  # type: ignore[attr-defined]
            async with await psycopg.AsyncConnection.connect(PG) as other:
                await other.execute(f"SET search_path TO {schema}")  # type: ignore[arg-type]
                await other.execute(
                    "SELECT * FROM counter_buckets c JOIN series se ON se.id = c.series"
                    " WHERE se.tag = %s AND c.bucket = 0 FOR UPDATE OF c",
                    (Tag.PROCESSED,),
                )
                write_b = asyncio.create_task(b.write_samples(late, RUN))
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                while not await _waiting(other, pid):  # B's samples in, B waits on the lock
                    assert not write_b.done(), "writer B did not wait on the counter bucket"
                    assert loop.time() < deadline
                    await asyncio.sleep(0.02)
                write_a = asyncio.create_task(a.write_samples(closing, RUN))
                # A may go through now or wait for B: either way it must not lose B's sample
                await asyncio.wait({write_a}, timeout=1.0)
                await other.rollback()
                assert await write_b == len(late)
                assert await write_a == len(closing)
            expected = compute_kpis(records, layout, start=0.0, end=4000.0)
            assert expected.stations[M1]["pbt_h"] > 0
            with_late = compute_kpis(first + closing, layout, start=0.0, end=4000.0)
            assert with_late.stations[M1] != expected.stations[M1]  # B's sample does count
            for store in (a, b):
                assert_same_report(await store.kpis(RUN, layout, 0.0, 4000.0), expected)

    asyncio.run(main())


def test_two_writers_taking_alternate_batches_of_a_run_roll_up_every_sample(pg_url: str) -> None:
    # a shared subscription hands each ingest process every other batch; both write at once
    from iiotbed.devices.sim import simulate
    from iiotbed.scenario import load_scenario

    scenario = load_scenario(Path(__file__).parents[2] / "scenarios" / "single-machine.yaml")
    records = simulate(scenario, 3, duration=12 * 3600.0)
    samples = [r for r in records if isinstance(r, Sample)]
    layout = Layout.from_scenario(scenario)
    batches = [samples[i : i + 40] for i in range(0, len(samples), 40)]

    async def writer(k: int) -> int:
        async with open_store(pg_url) as store:
            await store.upsert_run(RunInfo(RUN, "race", epoch=EPOCH))
            n = 0
            for batch in batches[k::2]:
                n += await store.write_samples(batch, RUN)
            return n

    async def main() -> None:
        async with open_store(pg_url):  # the tables first
            pass
        assert sum(await asyncio.gather(writer(0), writer(1))) == len(samples)
        async with open_store(pg_url) as store:
            end = 12 * 3600.0
            for start in (0.0, 1800.0):
                expected = compute_kpis(records, layout, start=start, end=end)
                assert expected.line["pbt_h"] > 0
                assert_same_report(await store.kpis(RUN, layout, start, end), expected)

    asyncio.run(main())
