"""Benchmark: store ingest against each database's raw insert rate, and KPIs over N samples.

Samples come from the 5G scenario (``devices.sim``), as many simulated days as needed.
For each backend, in the same run:

* ingest: ``write_samples`` in batches of 10k (dedup id, indexes, transaction per batch);
* raw: the same rows, pre-built, into a bare table without indexes (SQLite
  ``executemany`` in WAL mode, 10k per commit; PostgreSQL binary COPY, 10k per COPY);
* KPIs: ``store.kpis`` (hourly rollups kept at ingest, two replayed edges) over a run of
  ``kpi_samples`` samples, and the in-memory ``compute_kpis`` over the same records.

Ingest and raw alternate ``rounds`` times (each ingest into a fresh store), so a busy
machine slows both alike; each round prints its ratio, then the median of the rounds'.

Run: ``python bench/platform.py [ingest_samples] [kpi_samples] [sqlite,postgresql] [rounds]``;
the last line is ``ratio <ingest/raw>`` (median) of the last backend (SQLite by default).
"""

from __future__ import annotations

import os
import sys

# this file is named like the standard library's ``platform`` (which uuid imports): drop
# the script's own directory from the import path before anything imports it
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import asyncio
import gc
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg

from iiotbed.devices.sim import Factory
from iiotbed.platform import Layout, compute_kpis
from iiotbed.platform.store import RunInfo, Store, open_store
from iiotbed.scenario import load_scenario
from iiotbed.telemetry import Sample

ROOT = Path(__file__).resolve().parent.parent
PG = "postgresql://127.0.0.1:5432/test"
BATCH = 10_000


def make_samples(n: int) -> tuple[Layout, list[Sample]]:
    """At least ``n`` samples of the 5G scenario (whole simulated days), cut to ``n``."""
    scenario = load_scenario(ROOT / "scenarios" / "tcl-huizhou-5g.yaml")
    samples: list[Sample] = []

    def sink(r: object) -> None:
        if type(r) is Sample:
            samples.append(r)

    factory = Factory(scenario, 0, sink=sink)
    days = 0
    while len(samples) < n:
        days += 1
        factory.run(days * 86400.0)
    return Layout.from_scenario(scenario), samples[:n]


def raw_sqlite(samples: list[Sample], path: Path) -> float:
    rows = [
        (s.asset, s.tag, s.t, s.value if not isinstance(s.value, str) else None, s.unit,
         int(s.quality))
        for s in samples
    ]  # fmt: skip
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE raw (asset TEXT, tag TEXT, t REAL, value REAL, unit TEXT, q INTEGER)")
    t0 = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        db.execute("BEGIN")
        db.executemany("INSERT INTO raw VALUES (?,?,?,?,?,?)", rows[i : i + BATCH])
        db.execute("COMMIT")
    wall = time.perf_counter() - t0
    db.close()
    return len(rows) / wall


def raw_postgres(samples: list[Sample]) -> float:
    rows = [
        (s.asset, s.tag, s.t, float(s.value) if isinstance(s.value, int | float) else None,
         s.unit, int(s.quality))
        for s in samples
    ]  # fmt: skip
    table = f"raw_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (asset text, tag text, t float8, value float8, unit text, q int2)"  # type: ignore[arg-type]
        )
        try:
            t0 = time.perf_counter()
            for i in range(0, len(rows), BATCH):
                with (
                    conn.transaction(),
                    conn.cursor().copy(
                        f"COPY {table} FROM STDIN (FORMAT BINARY)"  # type: ignore[arg-type]
                    ) as copy,
                ):
                    copy.set_types(["text", "text", "float8", "float8", "text", "int2"])
                    for row in rows[i : i + BATCH]:
                        copy.write_row(row)
            wall = time.perf_counter() - t0
        finally:
            conn.execute(f"DROP TABLE {table}")  # type: ignore[arg-type]
    return len(rows) / wall


async def ingest(store: Store, samples: list[Sample], run_id: str) -> float:
    await store.upsert_run(RunInfo(run_id, "bench", epoch="2026-01-05T00:00:00+08:00"))
    t0 = time.perf_counter()
    n = 0
    for i in range(0, len(samples), BATCH):
        n += await store.write_samples(samples[i : i + BATCH], run_id)
    wall = time.perf_counter() - t0
    assert n == len(samples), f"stored {n} of {len(samples)}"
    return len(samples) / wall


async def bench_kpis(url: str, name: str, layout: Layout, samples: list[Sample]) -> None:
    async with open_store(url) as store:
        await ingest(store, samples, "kpi")
        end = samples[-1].t
        t0 = time.perf_counter()
        got = await store.kpis("kpi", layout, 0.0, end)
        wall_sql = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = compute_kpis(samples, layout, end=end)
        wall_mem = time.perf_counter() - t0
        same = all(
            abs(got.line[k] - ref.line[k]) <= 1e-9 * max(1.0, abs(ref.line[k]))
            for k in ("good_count", "oee", "labour_hours", "energy_kwh")
        )
        print(
            f"{name:10} kpis   {len(samples):>10,} samples  {wall_sql:>9.3f} s in the store"
            f"  (compute_kpis in memory {wall_mem:.3f} s; same KPIs: {same})"
        )


async def bench_ingest(url: str, samples: list[Sample]) -> float:
    async with open_store(url) as store:
        return await ingest(store, samples, "ingest")


def fresh(name: str) -> tuple[str, Callable[[], None]]:
    """A URL of an empty store of backend ``name``, and how to drop it."""
    if name == "sqlite":
        d = tempfile.TemporaryDirectory()
        return f"sqlite:///{d.name}/store.db", d.cleanup
    schema = f"bench_{uuid.uuid4().hex[:10]}"

    def drop() -> None:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")  # type: ignore[arg-type]

    return f"{PG}?schema={schema}", drop


def bench(name: str, n_ingest: int, n_kpi: int, rounds: int) -> float:
    layout, samples = make_samples(max(n_ingest, n_kpi))
    # millions of long-lived Samples would make every GC pass of the timed loops walk them
    # (a service holds one batch, not a data set): keep them out of the collector's sight
    gc.collect()
    gc.freeze()
    ratios = []
    for r in range(rounds):
        url, drop = fresh(name)
        try:
            rate = asyncio.run(bench_ingest(url, samples[:n_ingest]))
        finally:
            drop()
        if name == "sqlite":
            with tempfile.TemporaryDirectory() as d:
                raw = raw_sqlite(samples[:n_ingest], Path(d) / "raw.db")
        else:
            raw = raw_postgres(samples[:n_ingest])
        ratios.append(rate / raw)
        print(
            f"{name:10} round {r + 1}: ingest {n_ingest:,} samples {rate:>10,.0f} rows/s, "
            f"raw {raw:>10,.0f} rows/s, ratio {rate / raw:.3f}",
            flush=True,
        )
    url, drop = fresh(name)
    try:
        asyncio.run(bench_kpis(url, name, layout, samples[:n_kpi]))
    finally:
        drop()
    ratio = statistics.median(ratios)
    print(f"{name:10} ingest/raw ratio: median {ratio:.3f} of {rounds} rounds "
          f"({min(ratios):.3f} .. {max(ratios):.3f})")  # fmt: skip
    return ratio


def main() -> None:
    n_ingest = int(float(sys.argv[1])) if len(sys.argv) > 1 else 200_000
    n_kpi = int(float(sys.argv[2])) if len(sys.argv) > 2 else 1_000_000
    backends = sys.argv[3].split(",") if len(sys.argv) > 3 else ["postgresql", "sqlite"]
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    ratio = None
    for name in backends:
        ratio = bench(name, n_ingest, n_kpi, rounds)
    if ratio is not None:
        print(f"ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
