"""The embedded store: one SQLite file, zero set-up (``sqlite:///path/to/file.db``).

WAL journal, one transaction and one ``executemany`` per batch. sqlite3 calls block, so
every call runs on one dedicated thread: the event loop never waits on the disk, and one
thread owning the connection serialises writes without a lock. KPIs, whose reads last
long on a long run (a window of days, a counter replayed, a whole run streamed through the
engine), run on a second thread with a read-only connection of its own, each in one read
transaction (a snapshot, as WAL gives readers): they hold up neither the loop nor the writes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson

from iiotbed.errors import StorageError
from iiotbed.platform.kpi import KpiAccumulator, KpiReport
from iiotbed.platform.layout import Layout
from iiotbed.platform.store import _rollup, _sql
from iiotbed.platform.store.base import (
    AssetInfo,
    KpiTotals,
    RunInfo,
    epoch_seconds,
)
from iiotbed.protocols.uns import event_id
from iiotbed.telemetry import Event, Sample

__all__ = ["DEFAULT_PATH", "SqliteStore"]

DEFAULT_PATH: Final = Path("iiotbed.db")
_T = TypeVar("_T")
_D = _sql.SQLITE

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS run_keys (
    id INTEGER PRIMARY KEY, run_id TEXT NOT NULL UNIQUE, next_n INTEGER NOT NULL DEFAULT 0,
    closed INTEGER
);
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY, run INTEGER NOT NULL, asset TEXT NOT NULL, tag TEXT NOT NULL,
    kind INTEGER NOT NULL, unit TEXT, UNIQUE (run, asset, tag)
);
CREATE TABLE IF NOT EXISTS samples (
    series INTEGER NOT NULL, t REAL NOT NULL, v NOT NULL, quality INTEGER NOT NULL,
    n INTEGER NOT NULL, source_ts REAL NOT NULL, x TEXT,
    value_num REAL GENERATED ALWAYS AS (CASE WHEN typeof(v) = 'real' THEN v END) VIRTUAL,
    value_text TEXT GENERATED ALWAYS AS (CASE WHEN typeof(v) = 'text' THEN v END) VIRTUAL,
    PRIMARY KEY (series, t, v, quality)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state_buckets (
    run INTEGER NOT NULL, bucket INTEGER NOT NULL, asset TEXT NOT NULL, name TEXT NOT NULL,
    seconds REAL NOT NULL, PRIMARY KEY (run, bucket, asset, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counter_buckets (
    series INTEGER NOT NULL, bucket INTEGER NOT NULL, vmax REAL NOT NULL,
    texts INTEGER NOT NULL, PRIMARY KEY (series, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL, asset TEXT NOT NULL, name TEXT NOT NULL, t REAL NOT NULL,
    fields TEXT NOT NULL, id TEXT NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS events_time ON events (run_id, t);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, scenario TEXT NOT NULL, scenario_file TEXT, scenario_hash TEXT,
    epoch TEXT, seed INTEGER, replication INTEGER NOT NULL, speed REAL,
    started TEXT, ended TEXT, status TEXT NOT NULL, baseline_run_id TEXT, goal REAL,
    answer_key TEXT
);
CREATE TABLE IF NOT EXISTS assets (
    path TEXT PRIMARY KEY, kind TEXT NOT NULL, stage TEXT, identification TEXT NOT NULL
);
"""


def sqlite_path(url: str | None) -> Path:
    """The file of ``sqlite:///relative.db``, ``sqlite:////abs.db``, a bare path, or default."""
    if url is None or url in ("sqlite://", "sqlite:///"):
        return DEFAULT_PATH
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :])
    if "://" in url:
        raise StorageError(
            f"not a SQLite URL: {url!r}; write sqlite:///relative/path.db or sqlite:////abs/path.db",
            url=url,
        )
    return Path(url)


class SqliteStore(_sql.SqlStore):
    """Samples, events, runs and assets in one SQLite file."""

    def __init__(self, url: str | None = None) -> None:
        self.path = sqlite_path(url)
        self.url = url if url is not None and "://" in url else f"sqlite:///{self.path}"
        self._conn: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None  # the KPI reads, started on first use
        self._rconn: sqlite3.Connection | None = None
        self._ro_uri = ""
        self._dialect = _D
        self._epochs: dict[str, float] = {}
        # run -> asset -> tag -> (series id, kind, unit): resolved without SQL per sample
        self._series: dict[str, dict[str, dict[str, tuple[int, int, str | None]]]] = {}

    # ----------------------------------------------------------------------- lifecycle

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._thread is None:
            raise StorageError(f"store {self.url} is not open; use `async with`", url=self.url)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, fn, *args)
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite store {self.path}: {exc}", url=self.url) from exc

    async def open(self) -> None:
        if self._thread is not None:
            return
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iiotbed-sqlite")
        try:
            await self._call(self._open)
        except StorageError as exc:
            await self.close()
            raise StorageError(
                f"cannot open SQLite store {self.path}: {exc.__cause__ or exc}; "
                f"check that the directory exists and is writable",
                url=self.url,
            ) from exc.__cause__

    async def _read(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(connection, *args)`` on the reader thread, in one read transaction."""
        if self._thread is None:
            raise StorageError(f"store {self.url} is not open; use `async with`", url=self.url)
        if self._reader is None:
            self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iiotbed-kpi")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._reader, self._in_snapshot, fn, args)
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite store {self.path}: {exc}", url=self.url) from exc

    def _in_snapshot(self, fn: Callable[..., _T], args: tuple[Any, ...]) -> _T:
        db = self._rconn
        if db is None:
            db = sqlite3.connect(
                self._ro_uri, uri=True, check_same_thread=False, isolation_level=None
            )
            db.execute("PRAGMA cache_size=-4096")
            _math_functions(db)
            self._rconn = db
        db.execute("BEGIN")
        try:
            return fn(db, *args)
        finally:
            db.execute("COMMIT")  # ends the read transaction: nothing was written

    def _open(self) -> None:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # with WAL, NORMAL keeps the file consistent; a power cut may lose the last commits
            conn.execute("PRAGMA synchronous=NORMAL")
            # 4 MiB page cache: every series appends to its own leaf page of the key, and
            # rollups and KPI edges read recent pages; a larger cache only fills with old
            # pages, growing the process by the size of the file until the cap is reached
            conn.execute("PRAGMA cache_size=-4096")
            cols = {r[1] for r in conn.execute("PRAGMA table_info(samples)")}
            if "id" in cols or "run" in cols:
                raise sqlite3.OperationalError(
                    "its samples table has an earlier layout (keyed by a text id, or with a"
                    " run column and a time index); move the file aside, or load its runs"
                    " into a new file"
                )
            conn.executescript(_SCHEMA)
            _math_functions(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._ro_uri = self.path.absolute().as_uri() + "?mode=ro"  # the file opened, read-only

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop = asyncio.get_running_loop()
        reader, self._reader = self._reader, None
        if reader is not None:
            await loop.run_in_executor(reader, self._close_reader)
            reader.shutdown(wait=False)
        await loop.run_in_executor(thread, self._close)
        thread.shutdown(wait=False)  # its last job has run: the thread ends on its own

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _close_reader(self) -> None:
        if self._rconn is not None:
            self._rconn.close()
            self._rconn = None

    @property
    def _db(self) -> sqlite3.Connection:
        assert self._conn is not None
        return self._conn

    async def _rows(self, query: str, params: dict[str, Any]) -> list[Any]:
        return await self._call(self._execute, query, params)

    # ----------------------------------------------------------------------- writes

    async def write_samples(self, samples: Sequence[Sample], run_id: str) -> int:
        if not samples:
            return 0
        epoch = await self._epoch(run_id)
        return await self._call(self._write_samples, samples, run_id, epoch)

    def _write_samples(self, samples: Sequence[Sample], run_id: str, epoch: float) -> int:
        db = self._db
        try:
            with _transaction(db):
                rk, next_n, closed = self._run_key(run_id)
                ids = self._series.get(run_id)
                if ids is None:
                    ids = self._load_series(run_id, rk)
                try:
                    built = _build(samples, ids, epoch, next_n)
                except KeyError:  # a series seen for the first time: its first unit is its own
                    new: dict[tuple[str, str], str | None] = {}
                    for s in samples:
                        new.setdefault((s.asset, s.tag), s.unit)
                    db.executemany(
                        "INSERT INTO series (run, asset, tag, kind, unit) VALUES (?,?,?,?,?)"
                        " ON CONFLICT DO NOTHING",
                        [(rk, a, t, _rollup.series_kind(t), u) for (a, t), u in new.items()],
                    )
                    ids = self._load_series(run_id, rk)
                    built = _build(samples, ids, epoch, next_n)
                rows, counters, state_min_t, max_t = built
                before = db.total_changes
                db.executemany(
                    "INSERT INTO samples (series, t, v, quality, n, source_ts, x)"
                    " VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                    rows,
                )
                inserted = db.total_changes - before
                if counters:
                    db.executemany(
                        "INSERT INTO counter_buckets VALUES (?,?,?,?) ON CONFLICT DO UPDATE SET"
                        " vmax = max(vmax, excluded.vmax), texts = max(texts, excluded.texts)",
                        [(sid, k, m[0], int(m[1])) for (sid, k), m in counters.items()],
                    )
                lo, hi, closed_new = _rollup.roll_bounds(closed, state_min_t, max_t)
                if lo < hi:
                    self._roll(rk, lo, hi)
                db.execute(
                    "UPDATE run_keys SET next_n = ?, closed = ? WHERE id = ?",
                    (next_n + len(rows), closed_new, rk),
                )
        except BaseException:
            self._series.pop(run_id, None)  # series made in a rolled-back transaction
            raise
        return inserted

    def _run_key(self, run_id: str) -> tuple[int, int, int | None]:
        db = self._db
        row = db.execute(
            "SELECT id, next_n, closed FROM run_keys WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is None:
            cur = db.execute("INSERT INTO run_keys (run_id) VALUES (?)", (run_id,))
            assert cur.lastrowid is not None
            return cur.lastrowid, 0, None
        return row[0], row[1], row[2]

    def _load_series(
        self, run_id: str, rk: int
    ) -> dict[str, dict[str, tuple[int, int, str | None]]]:
        ids: dict[str, dict[str, tuple[int, int, str | None]]] = {}
        for sid, asset, tag, kind, unit in self._db.execute(
            "SELECT id, asset, tag, kind, unit FROM series WHERE run = ?", (rk,)
        ):
            ids.setdefault(asset, {})[tag] = (sid, kind, unit)
        self._series[run_id] = ids
        return ids

    def _roll(self, rk: int, lo: int, hi: int) -> None:
        """Recompute the state buckets ``[lo, hi)`` of a run from its samples."""
        db = self._db
        b = _rollup.BUCKET_S
        seconds = self._integrate(rk, lo * b, hi * b, b)
        db.execute(_sql.DELETE_BUCKETS, {"rk": rk, "lo": lo, "hi": hi})
        db.executemany(
            "INSERT INTO state_buckets VALUES (?,?,?,?,?)",
            [(rk, k, asset, name, v) for (k, asset, name), v in seconds.items()],
        )

    def _integrate(
        self, rk: int, lo: float, hi: float, size: float | None
    ) -> dict[tuple[int, str, str], float]:
        return self._drive(_sql.integrate_plan(rk, lo, hi, size))

    def _drive(self, plan: _sql.Plan[_T], db: sqlite3.Connection | None = None) -> _T:
        """Run a plan's queries on a connection (the store's, on its thread, by default)."""
        db = self._db if db is None else db
        try:
            query, params = next(plan)
            while True:
                query, params = plan.send(db.execute(query, params).fetchall())
        except StopIteration as stop:
            result: _T = stop.value
            return result

    async def write_events(self, events: Sequence[Event], run_id: str) -> int:
        if not events:
            return 0
        rows = [
            (run_id, e.asset, e.name, e.t, orjson.dumps(e.fields).decode(),
             event_id(run_id, e.asset, e.name, e.t, e.fields))
            for e in events
        ]  # fmt: skip
        return await self._call(self._write_events, rows)

    def _write_events(self, rows: list[tuple[Any, ...]]) -> int:
        db = self._db
        before = db.total_changes
        with _transaction(db):
            db.executemany(
                "INSERT INTO events VALUES (?,?,?,?,?,?) ON CONFLICT (id) DO NOTHING", rows
            )
        return db.total_changes - before

    async def upsert_run(self, run: RunInfo) -> None:
        params = _sql.run_params(run)
        params.update(started=_iso(run.started), ended=_iso(run.ended))
        if run.answer_key is not None:
            params["answer_key"] = orjson.dumps(run.answer_key).decode()
        await self._call(self._execute, _sql.UPSERT_RUN, params)
        self._epochs[run.run_id] = epoch_seconds(run.epoch)

    async def upsert_assets(self, assets: Sequence[AssetInfo]) -> None:
        rows = [
            (a.path, a.kind, a.stage, orjson.dumps(dict(a.identification)).decode()) for a in assets
        ]
        sql = (
            "INSERT INTO assets VALUES (?,?,?,?) ON CONFLICT (path) DO UPDATE SET "
            "kind = excluded.kind, stage = excluded.stage, identification = excluded.identification"
        )
        await self._call(self._executemany, sql, rows)

    def _execute(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> list[Any]:
        return self._db.execute(sql, params).fetchall()

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with _transaction(self._db):
            self._db.executemany(sql, rows)

    # ----------------------------------------------------------------------- reads

    async def get_run(self, run_id: str) -> RunInfo | None:
        rows = await self._call(self._execute, _sql.GET_RUN, {"run": run_id})
        return _run(rows[0]) if rows else None

    async def list_runs(self) -> list[RunInfo]:
        rows = await self._call(self._execute, _sql.LIST_RUNS, ())
        return [_run(r) for r in rows]

    async def assets(self, prefix: str | None = None) -> list[AssetInfo]:
        sql, params = _sql.assets_sql(prefix)
        rows = await self._call(self._execute, sql, params)
        return [AssetInfo(r[0], r[1], r[2], orjson.loads(r[3])) for r in rows]

    async def events(
        self, run_id: str, start: float | None = None, end: float | None = None
    ) -> list[Event]:
        sql, params = _sql.events_sql(start, end, order="rowid")
        rows = await self._call(self._execute, sql, {"run": run_id, **params})
        return [Event(r[0], r[1], r[2], orjson.loads(r[3])) for r in rows]

    async def _kpi_totals(
        self, run_id: str, layout: Layout, start: float, end: float
    ) -> KpiTotals | None:
        return await self._read(self._kpi_totals_sync, run_id, layout, float(start), float(end))

    async def _stream_kpis(
        self, run_id: str, layout: Layout, start: float, end: float
    ) -> KpiReport:
        return await self._read(self._stream_kpis_sync, run_id, layout, start, end)

    def _stream_kpis_sync(
        self, db: sqlite3.Connection, run_id: str, layout: Layout, start: float, end: float
    ) -> KpiReport:
        acc = KpiAccumulator(layout, start=start, end=end)
        plan = _sql.iter_plan(_D, run_id, None, end)
        try:
            query, params, page = next(plan)
            while True:
                rows = db.execute(query, params).fetchall()
                if page:
                    acc.feed_many([_sql.row_to_sample(r, run_id) for r in rows])
                query, params, page = plan.send(rows)
        except StopIteration:
            pass
        return acc.report(end)

    def _kpi_totals_sync(
        self, db: sqlite3.Connection, run_id: str, layout: Layout, start: float, end: float
    ) -> KpiTotals | None:
        return self._drive(_sql.kpi_totals_plan(run_id, layout, start, end), db)


class _transaction:
    """BEGIN ... COMMIT (ROLLBACK on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN")

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _floor(x: float | None) -> float | None:
    return None if x is None else float(math.floor(x))


def _math_functions(db: sqlite3.Connection) -> None:
    try:
        db.execute("SELECT floor(1.5)")
    except sqlite3.OperationalError:  # built without math functions
        db.create_function("floor", 1, _floor, deterministic=True)


def _iso(d: dt.datetime | None) -> str | None:
    return None if d is None else d.isoformat()


def _run(r: Sequence[Any]) -> RunInfo:
    return RunInfo(
        run_id=r[0], scenario=r[1], scenario_file=r[2], scenario_hash=r[3], epoch=r[4],
        seed=r[5], replication=r[6], speed=r[7],
        started=None if r[8] is None else dt.datetime.fromisoformat(r[8]),
        ended=None if r[9] is None else dt.datetime.fromisoformat(r[9]),
        status=r[10], baseline_run_id=r[11], goal=r[12],
        answer_key=None if r[13] is None else orjson.loads(r[13]),
    )  # fmt: skip


_NONE: Final = b""  # the key value of a sample without one (a key column cannot be NULL)


def _build(
    samples: Sequence[Sample],
    ids: dict[str, dict[str, tuple[int, int, str | None]]],
    epoch: float,
    n: int,
) -> tuple[list[tuple[Any, ...]], dict[tuple[int, int], list[float]], float | None, float]:
    """Rows for ``samples`` and what the rollups need; KeyError on an unknown series."""
    # one pass, no calls but the counter fold: this loop is the ingest hot path
    rows: list[tuple[Any, ...]] = []
    append = rows.append
    counters: dict[tuple[int, int], list[float]] = {}
    add_counter = _rollup.add_counter
    dumps = orjson.dumps
    state_min = math.inf
    max_t = -math.inf
    for s in samples:
        sid, kind, unit = ids[s.asset][s.tag]
        v = s.value
        tv = type(v)
        x: Any
        if tv is float:
            x = v if v == v else _NONE  # NaN is no value
        elif tv is int:
            x = float(v)  # type: ignore[arg-type]
        elif v is None:
            x = _NONE
        elif tv is str:
            x = v
        else:
            x = float(v)
        t = s.t
        # sqlite3 binds exact ints, floats and strs directly; an IntEnum or None goes
        # through its adapter look-up, which costs more than the rest of the bind
        q = int(s.quality)
        n += 1
        # the usual sample has its series' unit and no gateway stamps: an empty x
        if s.unit == unit and s.gateway_ts is None and s.seq is None:
            append((sid, t, x, q, n, epoch + t, ""))
        else:
            append((sid, t, x, q, n, epoch + t, dumps((s.unit, s.gateway_ts, s.seq)).decode()))
        if kind:
            if kind == _rollup.STATE:
                if t < state_min:
                    state_min = t
            else:
                add_counter(counters, sid, t, x, q)
        if t > max_t:
            max_t = t
    return rows, counters, (None if state_min == math.inf else state_min), max_t
