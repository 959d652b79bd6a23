"""The PostgreSQL store streams a batch's COPY chunk by chunk while it packs the next: the
leading chunks that cannot repeat a sample go straight into samples, the rest of the batch
(from a chunk with a repeat) by staging. Split batches store each sample
once, in the batch's order, and keep the rollups' KPIs equal to the in-memory engine's."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kpi_compare import assert_same_report

from iiotbed.platform import Layout, compute_kpis
from iiotbed.platform.store import Store, open_store
from iiotbed.platform.store.postgres import _CHUNK
from iiotbed.telemetry import Sample

pytestmark = pytest.mark.network

PG = "postgresql://127.0.0.1:5432/test"
RUN = "run-1"


def _spy(store: Store) -> list[int | None]:
    """What each batch's direct COPY took (leading samples; None: none)."""
    took: list[int | None] = []
    copy_direct = store._copy_direct  # type: ignore[attr-defined]

    async def counted(*args: Any) -> int | None:
        got: int | None = await copy_direct(*args)
        took.append(got)
        return got

    store._copy_direct = counted  # type: ignore[attr-defined]
    return took


def test_batches_split_by_a_repeat_or_bringing_a_series_store_each_sample_once_in_order(
    pg_url: str,
) -> None:
    n = 2 * _CHUNK + _CHUNK // 2
    a = [Sample(float(i), "p/a", "X", float(i % 11)) for i in range(3 * n)]
    # after a batch that makes series p/a known: batch 1, p/a, then from the middle of its
    # second chunk a series the store has not seen; batch 2: new samples, then in its last
    # chunk one of batch 1 again
    first = [
        *a[5 : _CHUNK + _CHUNK // 2],
        Sample(5.0, "p/new", "X", 1.0),
        *a[_CHUNK + _CHUNK // 2 : n],
    ]
    second = [*a[n : n + 2 * _CHUNK + 10], a[7], *a[n + 2 * _CHUNK + 10 : 2 * n]]

    async def main() -> None:
        async with open_store(pg_url) as store:
            assert await store.write_samples(a[:5], RUN) == 5
            took = _spy(store)
            assert await store.write_samples(first, RUN) == len(first)
            assert await store.write_samples(second, RUN) == len(second) - 1
            # batch 1 went straight (its new series made first), batch 2's first two chunks
            assert took == [len(first), 2 * _CHUNK]
            got = [(x.asset, x.t, x.value) async for x in store.iter_samples(RUN)]
            sent = [(x.asset, x.t, x.value) for x in [*a[:5], *first, *second]]
            assert len(got) == 2 * n + 1  # a[:2n] and the new series' one
            assert sorted(got) == sorted(set(sent))
            # reads keep the order the samples were sent in (p/new's one at t=5 among them)
            assert [r for r in got if r[0] == "p/a"] == [
                (x.asset, x.t, x.value) for x in a[: 2 * n]
            ]

    asyncio.run(main())


def test_kpis_of_batches_split_between_copy_and_staging_equal_the_engines(pg_url: str) -> None:
    from iiotbed.devices.sim import simulate
    from iiotbed.scenario import load_scenario

    scenario = load_scenario(Path(__file__).parents[2] / "scenarios" / "tcl-huizhou-5g.yaml")
    layout = Layout.from_scenario(scenario)
    hours = 24.0
    samples = [r for r in simulate(scenario, 5, duration=hours * 3600) if isinstance(r, Sample)]
    size = 2 * _CHUNK + _CHUNK // 2
    assert len(samples) > 4 * size, "the run is too short to give several batches"

    async def main() -> None:
        async with open_store(pg_url) as store:
            took = _spy(store)
            for i in range(0, len(samples), size):
                # after its first chunk each batch resends the previous batch's tail (its
                # series' time goes back there), then goes on with new samples: the first
                # chunk goes straight, the rest (most of the new) by staging, and the
                # rollups fold the samples of the chunk that stopped the COPY twice
                new = samples[i : i + size]
                batch = [*new[:_CHUNK], *samples[max(0, i - 300) : i], *new[_CHUNK:]]
                await store.write_samples(batch, RUN)
            assert (await store.counts(RUN)).samples == len(samples)
            # split, but for the first batch and ones whose first chunk resends
            assert sum(t == _CHUNK for t in took) > len(took) * 0.9, took
            assert await store._kpi_totals(RUN, layout, 0.0, hours * 3600) is not None  # type: ignore[attr-defined]
            for start, end in ((0.0, hours * 3600), (3600.0 * 2.5, 3600.0 * 17.25)):
                assert_same_report(
                    await store.kpis(RUN, layout, start, end),
                    compute_kpis(samples, layout, start=start, end=end),
                )

    asyncio.run(main())


def test_n_drawn_ahead_keeps_the_write_order_across_batches_sizes_and_a_lost_side_link(
    pg_url: str,
) -> None:
    # every sample at one t: reads order them by n alone, so n must grow batch after batch
    # whether it was drawn ahead (a batch no larger than the one before), drawn at the
    # batch's start (a larger one), or drawn again after the side connection was lost
    sizes = [3, 5, 2, 2, 7, 1, 1, 1]
    batches: list[list[Sample]] = []
    k = 0
    for size in sizes:
        batches.append([Sample(1.0, "p/a", "X", float(k + i)) for i in range(size)])
        k += size

    async def main() -> None:
        async with open_store(pg_url) as store:
            ahead = store._ahead  # type: ignore[attr-defined]
            take = ahead.take
            taken: list[bool] = []

            async def spy(count: int) -> Any:
                got = await take(count)
                taken.append(got is not None)
                return got

            ahead.take = spy
            for i, batch in enumerate(batches):
                if i == 4:  # the server ends the side connection's session
                    side = store._ahead._conn  # type: ignore[attr-defined]
                    assert side is not None
                    pid = side.info.backend_pid
                    async with await psycopg.AsyncConnection.connect(PG, autocommit=True) as c:
                        await c.execute("SELECT pg_terminate_backend(%s)", (pid,))
                assert await store.write_samples(batch, RUN) == len(batch)
            got = [x.value async for x in store.iter_samples(RUN)]
            assert got == [float(v) for v in range(k)]
            # drawn ahead: batches 3 and 4; not 5 (larger) nor 6 (its draw met the ended
            # session); 7 and 8 on a new side connection
            assert taken == [False, False, True, True, False, False, True, True]

    asyncio.run(main())
