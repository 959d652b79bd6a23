"""The PostgreSQL store (``postgresql://user@host:5432/db[?schema=name]``), via psycopg 3.

Batches go in by binary COPY into a temporary staging table, then one
``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` moves the new rows: bulk speed with
idempotent resends. Where the TimescaleDB extension is available, ``samples`` becomes a
hypertable on ``source_ts``. psycopg's async connection keeps the event loop free.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import psycopg
from psycopg import sql as pgsql
from psycopg.types.json import Jsonb

from iiotbed.errors import StorageError
from iiotbed.platform.layout import Layout
from iiotbed.platform.store import _sql
from iiotbed.platform.store.base import (
    Agg,
    AssetInfo,
    Counts,
    KpiTotals,
    Point,
    RunInfo,
    Store,
    check_query,
    epoch_seconds,
)
from iiotbed.telemetry import Event, Sample
from iiotbed.uns import event_id, sample_id

__all__ = ["PostgresStore"]

_PAGE: Final = 10_000
_D = _sql.POSTGRES
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_TABLES: Final = """
CREATE TABLE IF NOT EXISTS samples (
    n bigint GENERATED ALWAYS AS IDENTITY,
    run_id text NOT NULL, asset text NOT NULL, tag text NOT NULL, t double precision NOT NULL,
    value_num double precision, value_text text, unit text, quality smallint NOT NULL,
    source_ts timestamptz NOT NULL, gateway_ts double precision, seq bigint, id text NOT NULL,
    PRIMARY KEY ({pk})
);
CREATE INDEX IF NOT EXISTS samples_series ON samples (run_id, asset, tag, t);
CREATE INDEX IF NOT EXISTS samples_time ON samples (run_id, t, n);
CREATE TABLE IF NOT EXISTS events (
    n bigint GENERATED ALWAYS AS IDENTITY,
    run_id text NOT NULL, asset text NOT NULL, name text NOT NULL, t double precision NOT NULL,
    fields jsonb NOT NULL, id text PRIMARY KEY
);
CREATE INDEX IF NOT EXISTS events_time ON events (run_id, t, n);
CREATE TABLE IF NOT EXISTS runs (
    run_id text PRIMARY KEY, scenario text NOT NULL, scenario_file text, scenario_hash text,
    epoch text, seed bigint, replication integer NOT NULL, speed double precision,
    started timestamptz, ended timestamptz, status text NOT NULL, baseline_run_id text,
    goal double precision, answer_key jsonb
);
CREATE TABLE IF NOT EXISTS assets (
    path text PRIMARY KEY, kind text NOT NULL, stage text, identification jsonb NOT NULL
);
"""

# staging tables live per connection and empty themselves at commit
_STAGING: Final = """
CREATE TEMP TABLE IF NOT EXISTS stage_samples (
    ord bigint GENERATED ALWAYS AS IDENTITY, asset text, tag text, t double precision,
    value_num double precision, value_text text, unit text, quality smallint,
    gateway_ts double precision, seq bigint, id text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_events (
    ord bigint GENERATED ALWAYS AS IDENTITY, asset text, name text, t double precision,
    fields text, id text
) ON COMMIT DELETE ROWS;
"""
_SAMPLE_TYPES: Final = [
    "text", "text", "float8", "float8", "text", "text", "int2", "float8", "int8", "text"
]  # fmt: skip
_EVENT_TYPES: Final = ["text", "text", "float8", "text", "text"]

_RUN_COLS: Final = (
    "run_id, scenario, scenario_file, scenario_hash, epoch, seed, replication, speed, "
    "started, ended, status, baseline_run_id, goal, answer_key"
)


def _redact(url: str) -> str:
    """The URL without its password, fit for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _split_url(url: str) -> tuple[str, str | None]:
    """(libpq conninfo URL, schema): ``schema=`` is ours, the rest goes to libpq."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    rest = [(k, v) for k, v in query if k != "schema"]
    if not any(k == "connect_timeout" for k, _ in rest):
        rest.append(("connect_timeout", "5"))  # an unreachable host fails fast
    return urlunsplit(parts._replace(query=urlencode(rest))), schema


class PostgresStore(Store):
    """Samples, events, runs and assets in PostgreSQL (TimescaleDB when available)."""

    def __init__(self, url: str) -> None:
        self.url = _redact(url)
        self._conninfo, self.schema = _split_url(url)
        if self.schema is not None and not _SCHEMA_NAME.match(self.schema):
            raise StorageError(
                f"schema name {self.schema!r} in {self.url} must be lower-case letters, "
                f"digits and '_', starting with a letter",
                url=self.url,
            )
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()  # one transaction at a time on the one connection
        self._epochs: dict[str, float] = {}
        self.timescale = False

    # ----------------------------------------------------------------------- lifecycle

    def _error(self, what: str, exc: Exception) -> StorageError:
        # libpq's first line says what failed; the rest is hints we phrase ourselves
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StorageError(f"PostgreSQL store {self.url}: {what}: {first}", url=self.url)

    async def open(self) -> None:
        if self._conn is not None:
            return
        try:
            self._conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            err = self._error("cannot connect", exc)
            raise StorageError(
                f"{err}; check that the server runs and the host, port, database and user "
                f"in the URL are right",
                url=self.url,
            ) from exc
        try:
            await self._create_schema(self._conn)
        except psycopg.Error as exc:
            await self.close()
            raise self._error("cannot create the tables", exc) from exc

    async def _create_schema(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if self.schema is not None:
            await conn.execute(
                pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(pgsql.Identifier(self.schema))
            )
            await conn.execute(
                pgsql.SQL("SET search_path TO {}").format(pgsql.Identifier(self.schema))
            )
        cur = await conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
        if await cur.fetchone() is not None:
            try:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                self.timescale = True
            except psycopg.Error:  # available but not preloaded or not permitted: plain tables
                self.timescale = False
        cur = await conn.execute("SELECT to_regclass('samples') IS NOT NULL")
        row = await cur.fetchone()
        exists = bool(row and row[0])
        # a hypertable's unique keys must hold its time column; id already implies it
        pk = "id, source_ts" if self.timescale else "id"
        async with conn.transaction():
            await conn.execute(_TABLES.format(pk=pk))
            if self.timescale and not exists:
                await conn.execute(
                    "SELECT create_hypertable('samples', 'source_ts', if_not_exists => TRUE)"
                )
        if exists:  # an existing table keeps its key: dedup on what it has
            cur = await conn.execute(
                "SELECT count(*) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
                " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'samples'::regclass"
                " AND i.indisprimary"
            )
            row = await cur.fetchone()
            self.timescale = bool(row and row[0] == 2)
        await conn.execute(_STAGING)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    @property
    def _db(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None:
            raise StorageError(f"store {self.url} is not open; use `async with`", url=self.url)
        return self._conn

    async def _fetch(self, query: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        async with self._lock:
            try:
                cur = await self._db.execute(query, params)
                return await cur.fetchall() if cur.description is not None else []
            except psycopg.Error as exc:
                raise self._error("query failed", exc) from exc

    # ----------------------------------------------------------------------- writes

    async def write_samples(self, samples: Sequence[Sample], run_id: str) -> int:
        if not samples:
            return 0
        epoch = await self._epoch(run_id)
        conflict = "(id, source_ts)" if self.timescale else "(id)"
        insert = f"""
            INSERT INTO samples (run_id, asset, tag, t, value_num, value_text, unit, quality,
                                 source_ts, gateway_ts, seq, id)
            SELECT %s, asset, tag, t, value_num, value_text, unit, quality,
                   to_timestamp(%s + t), gateway_ts, seq, id
            FROM stage_samples ORDER BY ord ON CONFLICT {conflict} DO NOTHING"""
        split = _sql.split_value
        async with self._lock:
            db = self._db
            try:
                async with db.transaction():
                    cur = db.cursor()
                    async with cur.copy(
                        "COPY stage_samples (asset, tag, t, value_num, value_text, unit,"
                        " quality, gateway_ts, seq, id) FROM STDIN (FORMAT BINARY)"
                    ) as copy:
                        copy.set_types(_SAMPLE_TYPES)
                        for s in samples:
                            num, text = split(s.value)
                            await copy.write_row(
                                (s.asset, s.tag, s.t, num, text, s.unit, int(s.quality),
                                 s.gateway_ts, s.seq,
                                 sample_id(run_id, s.asset, s.tag, s.t, s.value, s.quality))
                            )  # fmt: skip
                    await cur.execute(insert, (run_id, epoch))
                    return max(cur.rowcount, 0)
            except psycopg.Error as exc:
                raise self._error("cannot write samples", exc) from exc

    async def write_events(self, events: Sequence[Event], run_id: str) -> int:
        if not events:
            return 0
        async with self._lock:
            db = self._db
            try:
                async with db.transaction():
                    cur = db.cursor()
                    async with cur.copy(
                        "COPY stage_events (asset, name, t, fields, id) FROM STDIN (FORMAT BINARY)"
                    ) as copy:
                        copy.set_types(_EVENT_TYPES)
                        for e in events:
                            await copy.write_row(
                                (e.asset, e.name, e.t, orjson.dumps(e.fields).decode(),
                                 event_id(run_id, e.asset, e.name, e.t, e.fields))
                            )  # fmt: skip
                    await cur.execute(
                        "INSERT INTO events (run_id, asset, name, t, fields, id)"
                        " SELECT %s, asset, name, t, CAST(fields AS jsonb), id FROM stage_events"
                        " ORDER BY ord ON CONFLICT (id) DO NOTHING",
                        (run_id,),
                    )
                    return max(cur.rowcount, 0)
            except psycopg.Error as exc:
                raise self._error("cannot write events", exc) from exc

    async def upsert_run(self, run: RunInfo) -> None:
        updates = ", ".join(f"{c} = excluded.{c}" for c in _RUN_COLS.split(", ")[1:])
        await self._fetch(
            f"INSERT INTO runs ({_RUN_COLS}) VALUES ({', '.join(['%s'] * 14)}) "
            f"ON CONFLICT (run_id) DO UPDATE SET {updates}",
            (
                run.run_id, run.scenario, run.scenario_file, run.scenario_hash, run.epoch,
                run.seed, run.replication, run.speed, run.started, run.ended, run.status,
                run.baseline_run_id, run.goal,
                None if run.answer_key is None else Jsonb(dict(run.answer_key)),
            ),
        )  # fmt: skip
        self._epochs[run.run_id] = epoch_seconds(run.epoch)

    async def upsert_assets(self, assets: Sequence[AssetInfo]) -> None:
        if not assets:
            return
        async with self._lock:
            db = self._db
            try:
                async with db.transaction():
                    await db.cursor().executemany(
                        "INSERT INTO assets VALUES (%s, %s, %s, %s) ON CONFLICT (path) DO UPDATE"
                        " SET kind = excluded.kind, stage = excluded.stage,"
                        " identification = excluded.identification",
                        [(a.path, a.kind, a.stage, Jsonb(dict(a.identification))) for a in assets],
                    )
            except psycopg.Error as exc:
                raise self._error("cannot write assets", exc) from exc

    async def _epoch(self, run_id: str) -> float:
        epoch = self._epochs.get(run_id)
        if epoch is None:
            run = await self.get_run(run_id)
            epoch = self._epochs[run_id] = epoch_seconds(run.epoch if run else None)
        return epoch

    # ----------------------------------------------------------------------- reads

    async def get_run(self, run_id: str) -> RunInfo | None:
        rows = await self._fetch(f"SELECT {_RUN_COLS} FROM runs WHERE run_id = %s", (run_id,))
        return _run(rows[0]) if rows else None

    async def list_runs(self) -> list[RunInfo]:
        rows = await self._fetch(f"SELECT {_RUN_COLS} FROM runs ORDER BY started, run_id")
        return [_run(r) for r in rows]

    async def assets(self, prefix: str | None = None) -> list[AssetInfo]:
        query = "SELECT path, kind, stage, identification FROM assets"
        params: tuple[Any, ...] = ()
        if prefix is not None:
            p = prefix.rstrip("/")
            query += " WHERE path = %s OR substr(path, 1, %s) = %s"
            params = (p, len(p) + 1, p + "/")
        rows = await self._fetch(query + " ORDER BY path", params)
        return [AssetInfo(r[0], r[1], r[2], r[3]) for r in rows]

    async def latest(self, run_id: str, asset_prefix: str | None = None) -> list[Sample]:
        query, params = _sql.latest_sql(asset_prefix)
        rows = await self._fetch(_D.sql(query), {"run": run_id, **params})
        return [_sql.row_to_sample(r, run_id) for r in rows]

    async def query(
        self,
        run_id: str,
        asset: str,
        tag: str,
        start: float | None = None,
        end: float | None = None,
        every: float | None = None,
        agg: Agg = "last",
    ) -> list[Point]:
        check_query(every, agg)
        query, params = _sql.query_sql(start, end, every, agg)
        params.update(run=run_id, asset=asset, tag=tag)
        rows = await self._fetch(_D.sql(query), params)
        return _sql.to_points(rows, agg if every is not None else "last")

    async def iter_samples(
        self, run_id: str, start: float | None = None, end: float | None = None
    ) -> AsyncIterator[Sample]:
        query = _D.sql(_sql.iter_sql(end))
        params: dict[str, Any] = {
            "run": run_id,
            "after_t": float("-inf") if start is None else float(start),
            "after_ins": -(2**62),  # the first page includes rows at exactly ``start``
            "limit": _PAGE,
        }
        if end is not None:
            params["end"] = float(end)
        while True:
            rows = await self._fetch(query, params)
            for r in rows:
                yield _sql.row_to_sample(r, run_id)
            if len(rows) < _PAGE:
                return
            params["after_t"], params["after_ins"] = rows[-1][2], rows[-1][-1]

    async def events(
        self, run_id: str, start: float | None = None, end: float | None = None
    ) -> list[Event]:
        query = "SELECT t, asset, name, fields FROM events WHERE run_id = %s"
        params: list[Any] = [run_id]
        if start is not None:
            query += " AND t >= %s"
            params.append(start)
        if end is not None:
            query += " AND t <= %s"
            params.append(end)
        rows = await self._fetch(query + " ORDER BY t, n", params)
        return [Event(r[0], r[1], r[2], r[3]) for r in rows]

    async def counts(self, run_id: str) -> Counts:
        rows = await self._fetch(
            "SELECT (SELECT count(*) FROM samples WHERE run_id = %(r)s),"
            " (SELECT count(*) FROM events WHERE run_id = %(r)s),"
            " (SELECT min(t) FROM samples WHERE run_id = %(r)s),"
            " (SELECT max(t) FROM samples WHERE run_id = %(r)s)",
            {"r": run_id},
        )
        n, e, lo, hi = rows[0]
        return Counts(n, e, lo, hi)

    async def _kpi_totals(
        self, run_id: str, layout: Layout, start: float, end: float
    ) -> KpiTotals | None:
        window = {"run": run_id, "start": float(start), "end": float(end)}
        state_sql, sp = _sql.kpi_state_sql(layout)
        counter_sql, cp = _sql.kpi_counter_sql(layout)
        async with self._lock:
            db = self._db
            try:
                async with db.transaction():
                    # the state timeline is sorted three times: keep the sorts in memory
                    await db.execute("SET LOCAL work_mem = '256MB'")
                    cur = await db.execute(_D.sql(state_sql), {**window, **sp})
                    states = await cur.fetchall()
                    cur = await db.execute(_D.sql(counter_sql), {**window, **cp})
                    counters = await cur.fetchall()
            except psycopg.Error as exc:
                raise self._error("KPI query failed", exc) from exc
        return _sql.kpi_totals(layout, states, counters)


def _run(r: Sequence[Any]) -> RunInfo:
    started: dt.datetime | None = r[8]
    ended: dt.datetime | None = r[9]
    return RunInfo(
        run_id=r[0], scenario=r[1], scenario_file=r[2], scenario_hash=r[3], epoch=r[4],
        seed=r[5], replication=r[6], speed=r[7], started=started, ended=ended,
        status=r[10], baseline_run_id=r[11], goal=r[12], answer_key=r[13],
    )  # fmt: skip
