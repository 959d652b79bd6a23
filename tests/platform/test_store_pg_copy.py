"""The PostgreSQL store's COPY paths: rows go out grouped by series with their insertion
order reserved in the batch's order; a batch that may repeat a sample (its own or a stored
one) goes by the staging table; two writers racing on one run store each sample once."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import psycopg
import pytest

from iiotbed.platform.store import RunInfo, open_store
from iiotbed.telemetry import Quality, Sample

pytestmark = pytest.mark.network

PG = "postgresql://127.0.0.1:5432/test"
RUN = "run-1"


def s(t: float, tag: str, value: Any, asset: str = "p/a", **kw: Any) -> Sample:
    return Sample(t=t, asset=asset, tag=tag, value=value, **kw)


def test_insertion_order_is_the_batchs_across_series_written_in_key_order(pg_url: str) -> None:
    # series ids follow (asset, tag) order: "z" after "a"; the batch sends z first at each t
    batch = [s(float(t), "X", float(10 * t + k), asset=a) for t in range(50)
             for k, a in enumerate(("p/z", "p/m", "p/a"))]  # fmt: skip

    async def main() -> None:
        async with open_store(pg_url) as store:
            assert await store.write_samples(batch, RUN) == len(batch)
            got = [(x.asset, x.t, x.value) async for x in store.iter_samples(RUN)]
            assert got == [(x.asset, x.t, x.value) for x in batch]
            latest = {x.asset: x.value for x in await store.latest(RUN)}
            assert latest == {"p/z": 490.0, "p/m": 491.0, "p/a": 492.0}

    asyncio.run(main())


def test_a_batch_repeating_its_own_sample_stores_it_once_the_first_wins(pg_url: str) -> None:
    batch = [
        s(1.0, "X", 1.0, unit="CEL"),
        s(2.0, "X", 2.0, unit="CEL"),
        s(2.0, "X", 2.0, unit="KEL", seq=9),  # the same sample again (key: t, value, quality)
        s(2.0, "X", 3.0, unit="CEL"),  # same t, another value: a sample of its own
        s(3.0, "X", 4.0, unit="CEL"),
    ]

    async def main() -> None:
        async with open_store(pg_url) as store:
            assert await store.write_samples(batch, RUN) == 4
            got = [x async for x in store.iter_samples(RUN)]
            assert [(x.t, x.value, x.unit, x.seq) for x in got] == [
                (1.0, 1.0, "CEL", None),
                (2.0, 2.0, "CEL", None),
                (2.0, 3.0, "CEL", None),
                (3.0, 4.0, "CEL", None),
            ]
            # the whole batch again, then a batch overlapping the stored ones
            assert await store.write_samples(batch, RUN) == 0
            assert await store.write_samples([s(3.0, "X", 4.0), s(4.0, "X", 5.0)], RUN) == 1
            assert (await store.counts(RUN)).samples == 5

    asyncio.run(main())


def test_two_writers_racing_on_one_run_store_each_sample_once(pg_url: str) -> None:
    # both send every batch (a resend racing the original); each probes before the other
    # commits, so one COPY meets the other's rows and the batch goes again by staging
    batches = [
        [s(b * 100.0 + i, tag, float(i), asset=f"p/{k}") for i in range(100)
         for k in range(3) for tag in ("X", "Y")]
        for b in range(8)
    ]  # fmt: skip

    async def writer(name: str) -> int:
        async with open_store(pg_url) as store:
            await store.upsert_run(RunInfo(RUN, "race", epoch="2026-01-05T00:00:00+08:00"))
            n = 0
            for batch in batches:
                n += await store.write_samples(batch, RUN)
                await asyncio.sleep(0)
            return n

    async def main() -> None:
        async with open_store(pg_url):  # the tables first: the race here is the samples'
            pass
        a, b = await asyncio.gather(writer("a"), writer("b"))
        total = sum(len(x) for x in batches)
        assert a + b == total
        async with open_store(pg_url) as store:
            got = [(x.asset, x.tag, x.t) async for x in store.iter_samples(RUN)]
            assert len(got) == total
            assert len(set(got)) == total
            # within each batch, samples at one t keep the batch's order
            want = [(x.asset, x.tag, x.t) for batch in batches for x in batch]
            assert got == want

    asyncio.run(main())


def test_a_sample_stored_by_another_writer_meanwhile_is_not_stored_twice(pg_url: str) -> None:
    # another writer of the run (its key row locked, as a store's batch locks it) holds the
    # same sample uncommitted: the batch waits for it, then its probe sees the sample and
    # the batch goes by staging, storing the rest
    schema = pg_url.split("schema=")[1]

    async def main() -> None:
        async with open_store(pg_url) as store:
            assert await store.write_samples([s(0.0, "X", 0.0)], RUN) == 1
            pid = store._db.info.backend_pid
            async with await psycopg.AsyncConnection.connect(PG) as other:
                await other.execute(f"SET search_path TO {schema}")  # type: ignore[arg-type]
                await other.execute("SELECT 1 FROM run_keys FOR UPDATE")
                await other.execute(
                    "INSERT INTO samples (run, series, t, value_num, quality, source_ts)"
                    " SELECT run, id, 5.0, 5.0, 0, now() FROM series WHERE tag = 'X'"
                )
                write = asyncio.create_task(
                    store.write_samples([s(float(t), "X", float(t)) for t in range(1, 10)], RUN)
                )
                deadline = asyncio.get_running_loop().time() + 30
                while True:  # until the store's batch waits on the other writer
                    cur = await other.execute(
                        "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid = %s", (pid,)
                    )
                    row = await cur.fetchone()
                    if row and row[0]:
                        break
                    assert not write.done(), "the batch did not wait on the other writer"
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.02)
                await other.commit()
                assert await write == 8
            got = [(x.t, x.value) async for x in store.iter_samples(RUN)]
            assert got == [(float(t), float(t)) for t in range(10)]

    asyncio.run(main())


def test_rows_packed_for_copy_read_back_as_sent(pg_url: str) -> None:
    # every field kind the packer writes: NULLs, NaN, ints, bools, text, non-ASCII text
    # and units, gateway time and sequence numbers, times before the epoch and fractional
    batch = [
        s(-1.5, "A", 3, unit="C62", seq=2**40, gateway_ts=1.7e9 + 0.125),
        s(0.000001, "A", True),
        s(2.0, "A", float("nan"), quality=Quality.Bad),
        s(3.0, "B", "lcm-55 — Ω°", unit="°C"),
        s(3.0, "B", None, quality=Quality.Uncertain, seq=0),
        s(4.0, "C", -1e300, unit=None, gateway_ts=0.0),
    ]
    want = [
        (-1.5, "A", 3.0, "C62", Quality.Good, 1.7e9 + 0.125, 2**40),
        (0.000001, "A", 1.0, None, Quality.Good, None, None),
        (2.0, "A", None, None, Quality.Bad, None, None),
        (3.0, "B", "lcm-55 — Ω°", "°C", Quality.Good, None, None),
        (3.0, "B", None, None, Quality.Uncertain, None, 0),
        (4.0, "C", -1e300, None, Quality.Good, 0.0, None),
    ]

    async def main() -> None:
        async with open_store(pg_url) as store:
            await store.upsert_run(RunInfo(RUN, "packed", epoch="2026-01-05T00:00:00+08:00"))
            assert await store.write_samples(batch, RUN) == len(batch)
            got = [
                (x.t, x.tag, x.value, x.unit, x.quality, x.gateway_ts, x.seq)
                async for x in store.iter_samples(RUN)
            ]
            assert got == want
        with psycopg.connect(pg_url.split("?")[0]) as conn:
            schema = pg_url.split("schema=")[1]
            rows = conn.execute(
                f"SELECT s.t, s.source_ts = to_timestamp(1767542400 + s.t) FROM {schema}.samples s"  # type: ignore[arg-type]
            ).fetchall()
            assert sorted(rows) == sorted((w[0], True) for w in want)

    asyncio.run(main())


def _key(x: Sample) -> tuple[Any, ...]:
    v = None if isinstance(x.value, float) and x.value != x.value else x.value
    return (x.asset, x.tag, x.t, float(v) if isinstance(v, int | float) else v, x.quality)


def test_resent_reordered_and_repeating_batches_store_each_sample_once(pg_url: str) -> None:
    # a batch goes by one plain COPY only when no row can equal another or a stored one
    # (each series' times strictly later than its stored ones, no equal samples at one t);
    # every other batch by staging. Batches here: in order, with several samples of one
    # series at one t (as events at one instant give), resent whole or in part, late
    # (older than the stored), shuffled, repeating a sample, mixed with new ones.
    rnd = random.Random(7)
    pool: list[Sample] = []
    for i in range(400):
        for a in ("p/a", "p/b"):
            pool.append(s(float(i), "X", float(i % 7), asset=a))
            if i % 5 == 0:  # another value at the same t: a sample of its own
                pool.append(s(float(i), "X", float(i % 7) + 0.5, asset=a))
            if i % 9 == 0:
                pool.append(s(float(i), "T", f"text-{i % 4}", asset=a, unit="C62"))
                pool.append(s(float(i), "T", None, asset=a, quality=Quality.Bad))
    chunks = [pool[i : i + 60] for i in range(0, len(pool), 60)]
    batches: list[list[Sample]] = []
    for k, chunk in enumerate(chunks):
        # new samples, one of them twice: after later ones (its series' time goes back),
        # or right after itself (at the same t)
        if k % 5 == 3:
            batches.append([*chunk[:20], chunk[5], *chunk[20:]])
        elif k % 5 == 1:
            batches.append([*chunk[:6], chunk[5], *chunk[6:]])
        else:
            batches.append(chunk)
        if k % 3 == 1:
            batches.append(chunks[k - 1] + chunk[:10])  # a resend overlapping the new
        if k % 4 == 2:
            shuffled = chunk[:]
            rnd.shuffle(shuffled)
            batches.append(shuffled)
    late = batches[len(batches) // 2 :] + batches[: len(batches) // 2]  # older come later
    direct = 0

    async def main() -> None:
        nonlocal direct
        async with open_store(pg_url) as store:
            copy_direct = store._copy_direct  # type: ignore[attr-defined]

            async def counted(*args: Any) -> int | None:
                nonlocal direct
                got = await copy_direct(*args)
                direct += got is not None
                return got

            store._copy_direct = counted  # type: ignore[attr-defined]
            seen: set[tuple[Any, ...]] = set()
            for batch in late:
                new = {_key(x) for x in batch} - seen
                assert await store.write_samples(batch, RUN) == len(new)
                seen |= new
            got = [_key(x) async for x in store.iter_samples(RUN)]
            assert sorted(got, key=repr) == sorted(seen, key=repr)
            assert len(got) == len({_key(x) for x in pool})

    asyncio.run(main())
    assert 0 < direct < len(late)  # both paths were taken


def test_a_schema_with_the_unique_sample_key_keeps_it_and_stays_idempotent(pg_url: str) -> None:
    # schemas made before the key became a plain (series, t) index hold a unique key
    schema = pg_url.split("schema=")[1]
    batch = [s(float(t), "X", float(t)) for t in range(20)]

    async def main() -> None:
        async with open_store(pg_url):
            pass
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"SET search_path TO {schema}")  # type: ignore[arg-type]
            conn.execute("DROP INDEX samples_key")
            conn.execute(
                "ALTER TABLE samples ADD UNIQUE NULLS NOT DISTINCT"
                " (series, t, value_num, value_text, quality)"
            )
        async with open_store(pg_url) as store:
            assert await store.write_samples(batch, RUN) == 20
            assert await store.write_samples([*batch[10:], s(20.0, "X", 1.0)], RUN) == 1
            assert (await store.counts(RUN)).samples == 21
        with psycopg.connect(PG, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = 'samples'",
                (schema,),
            ).fetchall()
            assert len(rows) == 1 and rows[0][0] != "samples_key"

    asyncio.run(main())
