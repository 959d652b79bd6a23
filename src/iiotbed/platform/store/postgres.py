"""The PostgreSQL store (``postgresql://user@host:5432/db[?schema=name]``), via psycopg 3.

A batch goes in by one binary COPY straight into ``samples``, packed and sent in chunks
(the server takes in one while the next is packed) as long as its samples cannot collide
with stored ones or each other; from the first chunk that may (or when that COPY meets a
duplicate), by COPY into a temporary staging table, then ``INSERT ... SELECT ... WHERE NOT
EXISTS`` moves the new rows: bulk speed with idempotent resends. Where the TimescaleDB
extension is available, ``samples`` becomes a hypertable on ``source_ts``. psycopg's async
connection keeps the event loop free.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import re
from collections.abc import Iterator, Sequence
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import psycopg
from psycopg import sql as pgsql
from psycopg.types.json import Jsonb

from iiotbed.errors import StorageError
from iiotbed.platform.layout import Layout
from iiotbed.platform.store import _rollup, _sql
from iiotbed.platform.store._pgcopy import COPY_HEAD, COPY_TAIL, Folded, build_payload, pack_rows
from iiotbed.platform.store._pgdraw import AheadDraw, draw
from iiotbed.platform.store.base import (
    AssetInfo,
    KpiTotals,
    RunInfo,
    epoch_seconds,
)
from iiotbed.protocols.uns import event_id
from iiotbed.telemetry import Event, Sample

__all__ = ["PostgresStore"]

_D = _sql.POSTGRES
_T = TypeVar("_T")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_TABLES: Final = """
CREATE TABLE IF NOT EXISTS run_keys (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY, run_id text NOT NULL UNIQUE,
    closed bigint
);
CREATE TABLE IF NOT EXISTS series (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY, run integer NOT NULL,
    asset text NOT NULL, tag text NOT NULL, kind smallint NOT NULL, UNIQUE (run, asset, tag)
);
CREATE TABLE IF NOT EXISTS samples (
    n bigint GENERATED ALWAYS AS IDENTITY,
    run integer NOT NULL, series integer NOT NULL, t double precision NOT NULL,
    value_num double precision, value_text text, unit text, quality smallint NOT NULL,
    source_ts timestamptz NOT NULL, gateway_ts double precision, seq bigint
);
CREATE TABLE IF NOT EXISTS state_buckets (
    run integer NOT NULL, bucket bigint NOT NULL, asset text NOT NULL, name text NOT NULL,
    seconds double precision NOT NULL, PRIMARY KEY (run, bucket, asset, name)
);
CREATE TABLE IF NOT EXISTS counter_buckets (
    series integer NOT NULL, bucket bigint NOT NULL, vmax double precision NOT NULL,
    texts smallint NOT NULL, PRIMARY KEY (series, bucket)
);
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

# the samples' one index: reads reach a run's samples through it; the writes keep samples
# unique on (series, t, value, quality) themselves, one writer of a run at a time (a key
# this narrow splits its leaves where a series grows, not in halves: a third of the size)
_SAMPLES_KEY: Final = "CREATE INDEX samples_key ON samples (series, t)"
# staging tables live per connection and empty themselves at commit
_STAGING: Final = """
CREATE TEMP TABLE IF NOT EXISTS stage_samples (
    n bigint, run integer, series integer, t double precision,
    value_num double precision, value_text text, unit text, quality smallint,
    gateway_ts double precision, seq bigint, source_ts timestamptz
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_events (
    ord bigint GENERATED ALWAYS AS IDENTITY, asset text, name text, t double precision,
    fields text, id text
) ON COMMIT DELETE ROWS;
"""
# COPY columns, in the order of the binary rows pack_rows writes: run and series (the same
# for all rows of a series), n (reserved from the identity's sequence in the batch's
# order), t, source_ts as binary timestamptz (int64 microseconds since 2000-01-01, the
# wire format of an int8), value_num, gateway_ts, seq, value_text, unit, quality
_SAMPLE_COLS: Final = (
    "run, series, n, t, source_ts, value_num, gateway_ts, seq, value_text, unit, quality"
)
# a batch's start: the run's key and rollup frontier (none yet: NULLs), and ``count``
# values of the insertion order, one range when no other writer drew some meanwhile
_BEGIN_BATCH: Final = """
    SELECT k.id, k.closed, r.lo, r.hi FROM (
        SELECT min(v) AS lo, max(v) AS hi
        FROM (SELECT nextval(%(seq)s::regclass) AS v FROM generate_series(1, %(count)s)) x
    ) r LEFT JOIN run_keys k ON k.run_id = %(run)s"""
_COPY_SAMPLES: Final = f"COPY samples ({_SAMPLE_COLS}) FROM STDIN (FORMAT BINARY)"
_COPY_STAGE: Final = f"COPY stage_samples ({_SAMPLE_COLS}) FROM STDIN (FORMAT BINARY)"
# the staged rows new to samples, in key order; of equal samples in one batch the first.
# "Equal": series, t, value and quality, NULLs equal (as a NULLS NOT DISTINCT key; an
# older schema has that unique key, hence ON CONFLICT)
_INSERT_STAGED: Final = f"""
    INSERT INTO samples ({_SAMPLE_COLS}) OVERRIDING SYSTEM VALUE
    SELECT {_SAMPLE_COLS} FROM (
        SELECT DISTINCT ON (series, t, value_num, value_text, quality) * FROM stage_samples
        ORDER BY series, t, value_num, value_text, quality, n
    ) st WHERE NOT EXISTS (
        SELECT 1 FROM samples x WHERE x.series = st.series AND x.t = st.t
          AND x.value_num IS NOT DISTINCT FROM st.value_num
          AND x.value_text IS NOT DISTINCT FROM st.value_text AND x.quality = st.quality
    ) ORDER BY series, t, n
    ON CONFLICT DO NOTHING"""
# per series of a batch: the largest t stored, by one key probe each
_STORED_MAX: Final = """
    SELECT s.id, (SELECT max(x.t) FROM samples x WHERE x.series = s.id)
    FROM unnest(%s::integer[]) AS s(id)"""
# a batch's rollups, one statement each (by arrays: one row per parameter set would cost
# a statement per row)
_UPSERT_COUNTERS: Final = """
    INSERT INTO counter_buckets
    SELECT * FROM unnest(%s::integer[], %s::bigint[], %s::float8[], %s::smallint[])
    ON CONFLICT (series, bucket) DO UPDATE SET
      vmax = greatest(counter_buckets.vmax, excluded.vmax),
      texts = greatest(counter_buckets.texts, excluded.texts)"""
_INSERT_STATE_BUCKETS: Final = """
    INSERT INTO state_buckets
    SELECT %s, * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::float8[])"""
# a batch's rollups: the run's frontier, its row locked until the batch's transaction ends
_LOCK_RUN: Final = "SELECT closed FROM run_keys WHERE id = %s FOR UPDATE"
# samples per COPY chunk: ~100 kB of rows, so the server has the first in hand early
_CHUNK: Final = 1000
_EVENT_TYPES: Final = ["text", "text", "float8", "text", "text"]


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


class PostgresStore(_sql.SqlStore):
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
        self._dialect = _D
        self._lock = asyncio.Lock()  # one transaction at a time on the one connection
        self._epochs: dict[str, float] = {}
        # run -> asset -> tag -> (series id, kind): resolved without SQL per sample
        self._series: dict[str, dict[str, dict[str, tuple[int, int]]]] = {}
        self._run_keys: dict[str, int] = {}  # run -> its key, once a batch of it committed
        # the next batch's values of samples.n, drawn while a batch ends
        self._ahead = AheadDraw(self._conninfo, self.schema)
        self._n_seq = "samples_n_seq"  # the sequence behind samples.n, read at open
        self._encoding = "utf-8"  # of text in COPY: the connection's, read at open
        self.timescale = False
        # an older schema's samples carry a unique key: its direct COPY may meet it
        self._unique_key = False

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
        async with conn.transaction():
            if exists:
                cur = await conn.execute(
                    "SELECT 1 FROM information_schema.columns WHERE table_name = 'samples'"
                    " AND column_name = 'id' AND table_schema = current_schema()"
                )
                if await cur.fetchone() is not None:
                    raise psycopg.errors.FeatureNotSupported(
                        "its samples table has the layout of iiotbed 0.1 (keyed by a text id);"
                        " use another schema (?schema=name) or load its runs into a new one"
                    )
            await conn.execute(_TABLES)
            if not exists:
                await conn.execute(_SAMPLES_KEY)
            if self.timescale and not exists:
                await conn.execute(
                    "SELECT create_hypertable('samples', 'source_ts', if_not_exists => TRUE)"
                )
        self._encoding = conn.info.encoding
        cur = await conn.execute("SELECT pg_get_serial_sequence('samples', 'n')")
        row = await cur.fetchone()
        if row is not None and row[0] is not None:
            self._n_seq = row[0]
        cur = await conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = 'samples'::regclass"
            " AND indisunique)"
        )
        row = await cur.fetchone()
        self._unique_key = bool(row and row[0])
        await conn.execute(_STAGING)

    async def _reopen_if_lost(self) -> None:
        """Connect again when the server ended the session (PostgreSQL restarted): a new
        session sets up its search path and staging table again; StorageError while the
        server is still away (the caller retries)."""
        conn = self._conn
        if conn is None or not conn.closed:
            return
        self._conn = None
        try:
            await self.open()
        except StorageError:
            self._conn = conn  # still closed: the next call tries again
            raise

    async def close(self) -> None:
        await self._ahead.aclose()
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
            await self._reopen_if_lost()
            try:
                cur = await self._db.execute(query, params)
                return await cur.fetchall() if cur.description is not None else []
            except psycopg.Error as exc:
                raise self._error("query failed", exc) from exc

    async def _rows(self, query: str, params: dict[str, Any]) -> list[Any]:
        return await self._fetch(query, params)

    # ----------------------------------------------------------------------- writes

    async def write_samples(self, samples: Sequence[Sample], run_id: str) -> int:
        if not samples:
            return 0
        epoch = await self._epoch(run_id)
        async with self._lock:
            await self._reopen_if_lost()
            try:
                return await self._write(samples, run_id, epoch)
            except BaseException as exc:
                # series (and a run key) made in a rolled-back transaction
                self._series.pop(run_id, None)
                self._run_keys.pop(run_id, None)
                if isinstance(exc, psycopg.Error):
                    raise self._error("cannot write samples", exc) from exc
                raise

    async def _write(self, samples: Sequence[Sample], run_id: str, epoch: float) -> int:
        """One batch in one transaction: streamed by COPY straight into samples while it
        cannot repeat a stored sample or one of its own, the rest (from the first chunk
        that may) by the staging table and NOT EXISTS."""
        db = self._db
        async with db.transaction():
            rk, ns = await self._begin_batch(run_id, len(samples))
            ids = self._series.get(run_id)
            if ids is None:
                ids = await self._load_series(run_id, rk)
            try:
                sids = {ids[s.asset][s.tag][0] for s in samples}
            except KeyError:  # a series seen for the first time
                await db.cursor().executemany(
                    "INSERT INTO series (run, asset, tag, kind) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT DO NOTHING",
                    [(rk, a, t, _rollup.series_kind(t)) for a, t in
                     sorted({(s.asset, s.tag) for s in samples})],
                )  # fmt: skip
                ids = await self._load_series(run_id, rk)
                sids = {ids[s.asset][s.tag][0] for s in samples}
            # one writer of a run at a time from here: the run's key row stays locked until
            # this transaction ends. Each statement below sees every earlier writer's
            # samples and rollups (committed before it let go), so the probe of stored
            # times and the rollups' re-reads miss nothing, and the frontier is read again
            # under the lock
            cur = await db.execute(_LOCK_RUN, (rk,))
            locked = await cur.fetchone()
            assert locked is not None
            closed = locked[0]
            folded = Folded()
            inserted = await self._copy_direct(samples, ids, sids, rk, epoch, ns, folded) or 0
            # the next batch's n values, drawn while this one ends: from here on one process
            # at a time is busy (the COPY kept both cores so)
            self._ahead.start(self._n_seq, len(samples))
            cur = db.cursor()
            if inserted < len(samples):
                rest, rest_ns = samples[inserted:], ns[inserted:]
                payload = build_payload(rest, ids, rk, epoch, rest_ns, folded, self._encoding)
                await self._copy(_COPY_STAGE, payload)
                await cur.execute(_INSERT_STAGED)
                inserted += max(cur.rowcount, 0)
            if folded.counters:
                keys = folded.counters.keys()
                await cur.execute(
                    _UPSERT_COUNTERS,
                    ([sid for sid, _ in keys], [k for _, k in keys],
                     [m[0] for m in folded.counters.values()],
                     [int(m[1]) for m in folded.counters.values()]),
                )  # fmt: skip
            lo, hi, closed_new = _rollup.roll_bounds(closed, folded.state_min_t, folded.max_t)
            if lo < hi:
                await self._roll(rk, lo, hi)
            if closed_new != closed:
                await db.execute("UPDATE run_keys SET closed = %s WHERE id = %s", (closed_new, rk))
            return inserted

    async def _copy(self, statement: str, payload: bytes) -> None:
        """COPY a batch's rows, already in the binary format (one write)."""
        async with self._db.cursor().copy(statement) as copy:
            await copy.write(payload)

    async def _begin_batch(self, run_id: str, count: int) -> tuple[int, Sequence[int]]:
        """The run's key and ``count`` new values of samples.n in increasing order (the
        batch's insertion order): drawn ahead while the previous batch ended when it drew
        enough and the key is known, else in one round trip."""
        db = self._db
        ns = await self._ahead.take(count)
        rk = self._run_keys.get(run_id)
        if ns is not None and rk is not None:
            return rk, ns
        cur = await db.execute(_BEGIN_BATCH, {"seq": self._n_seq, "count": count, "run": run_id})
        row = await cur.fetchone()
        assert row is not None
        rk, _, lo, hi = row
        if rk is None:
            cur = await db.execute(
                "INSERT INTO run_keys (run_id) VALUES (%s) ON CONFLICT (run_id)"
                " DO UPDATE SET run_id = excluded.run_id RETURNING id",
                (run_id,),
            )
            key = await cur.fetchone()
            assert key is not None
            rk = key[0]
        self._run_keys[run_id] = rk
        if ns is not None:  # drawn ahead after all (the key was not known yet)
            return rk, ns
        if hi - lo + 1 == count:
            return rk, range(lo, hi + 1)
        # another writer drew values meanwhile: a fresh set
        return rk, await draw(db, self._n_seq, count)

    async def _copy_direct(
        self,
        samples: Sequence[Sample],
        ids: dict[str, dict[str, tuple[int, int]]],
        sids: set[int],
        rk: int,
        epoch: float,
        ns: Sequence[int],
        folded: Folded,
    ) -> int | None:
        """COPY the batch's leading samples straight into samples, packed and sent chunk
        by chunk, as long as none can equal another or a stored sample (see pack_rows);
        how many went, None for none. The caller holds the run's lock, so no writer of the
        store adds samples between the probe and the COPY. A unique key (an older schema)
        that the COPY meets undoes it: none went."""
        # the server takes in each chunk while the next is packed here: the wall time of
        # a batch is about the longer of the two, not their sum
        cur = await self._db.execute(_STORED_MAX, (sorted(sids),))
        after = {sid: (-math.inf if t is None else t) for sid, t in await cur.fetchall()}
        chunks = pack_rows(samples, ids, rk, epoch, ns, folded, self._encoding, after, _CHUNK)
        if not self._unique_key:  # nothing but this writer adds samples of the run now
            return await self._stream(chunks) or None
        try:
            async with self._db.transaction():  # a savepoint: a duplicate undoes only this
                return await self._stream(chunks) or None
        except psycopg.errors.UniqueViolation:
            return None

    async def _stream(self, chunks: Iterator[tuple[int, bytes]]) -> int:
        """COPY the chunks into samples until they end; how many samples went."""
        sent = 0
        async with self._db.cursor().copy(_COPY_SAMPLES) as copy:
            await copy.write(COPY_HEAD)
            for end, data in chunks:
                await copy.write(data)
                sent = end
            await copy.write(COPY_TAIL)
        return sent

    async def _load_series(self, run_id: str, rk: int) -> dict[str, dict[str, tuple[int, int]]]:
        ids: dict[str, dict[str, tuple[int, int]]] = {}
        cur = await self._db.execute(
            "SELECT id, asset, tag, kind FROM series WHERE run = %s", (rk,)
        )
        for sid, asset, tag, kind in await cur.fetchall():
            ids.setdefault(asset, {})[tag] = (sid, kind)
        self._series[run_id] = ids
        return ids

    async def _roll(self, rk: int, lo: int, hi: int) -> None:
        """Recompute the state buckets ``[lo, hi)`` of a run from its samples."""
        b = _rollup.BUCKET_S
        seconds = await self._integrate(rk, lo * b, hi * b, b)
        cur = self._db.cursor()
        await cur.execute(_D.sql(_sql.DELETE_BUCKETS), {"rk": rk, "lo": lo, "hi": hi})
        if seconds:
            await cur.execute(
                _INSERT_STATE_BUCKETS,
                (rk, [k for k, _, _ in seconds], [a for _, a, _ in seconds],
                 [n for _, _, n in seconds], list(seconds.values())),
            )  # fmt: skip

    async def _integrate(
        self, rk: int, lo: float, hi: float, size: float | None
    ) -> dict[tuple[int, str, str], float]:
        return await self._drive(_sql.integrate_plan(rk, lo, hi, size))

    async def _drive(self, plan: _sql.Plan[_T]) -> _T:
        """Run a plan's queries on the connection; the caller holds the lock."""
        try:
            query, params = next(plan)
            while True:
                cur = await self._db.execute(_D.sql(query), params)
                query, params = plan.send(await cur.fetchall())
        except StopIteration as stop:
            result: _T = stop.value
            return result

    async def write_events(self, events: Sequence[Event], run_id: str) -> int:
        if not events:
            return 0
        async with self._lock:
            await self._reopen_if_lost()
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
        params = _sql.run_params(run)
        if run.answer_key is not None:
            params["answer_key"] = Jsonb(dict(run.answer_key))
        await self._fetch(_D.sql(_sql.UPSERT_RUN), params)
        self._epochs[run.run_id] = epoch_seconds(run.epoch)

    async def upsert_assets(self, assets: Sequence[AssetInfo]) -> None:
        if not assets:
            return
        async with self._lock:
            await self._reopen_if_lost()
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

    # ----------------------------------------------------------------------- reads

    async def get_run(self, run_id: str) -> RunInfo | None:
        rows = await self._fetch(_D.sql(_sql.GET_RUN), {"run": run_id})
        return _run(rows[0]) if rows else None

    async def list_runs(self) -> list[RunInfo]:
        rows = await self._fetch(_sql.LIST_RUNS)
        return [_run(r) for r in rows]

    async def assets(self, prefix: str | None = None) -> list[AssetInfo]:
        query, params = _sql.assets_sql(prefix)
        rows = await self._fetch(_D.sql(query), params)
        return [AssetInfo(r[0], r[1], r[2], r[3]) for r in rows]

    async def events(
        self, run_id: str, start: float | None = None, end: float | None = None
    ) -> list[Event]:
        query, params = _sql.events_sql(start, end, order="n")
        rows = await self._fetch(_D.sql(query), {"run": run_id, **params})
        return [Event(r[0], r[1], r[2], r[3]) for r in rows]

    async def _kpi_totals(
        self, run_id: str, layout: Layout, start: float, end: float
    ) -> KpiTotals | None:
        start, end = float(start), float(end)
        async with self._lock:
            await self._reopen_if_lost()
            try:
                return await self._kpi_totals_locked(run_id, layout, start, end)
            except psycopg.Error as exc:
                raise self._error("KPI query failed", exc) from exc

    async def _kpi_totals_locked(
        self, run_id: str, layout: Layout, start: float, end: float
    ) -> KpiTotals | None:
        return await self._drive(_sql.kpi_totals_plan(run_id, layout, start, end))


def _run(r: Sequence[Any]) -> RunInfo:
    started: dt.datetime | None = r[8]
    ended: dt.datetime | None = r[9]
    return RunInfo(
        run_id=r[0], scenario=r[1], scenario_file=r[2], scenario_hash=r[3], epoch=r[4],
        seed=r[5], replication=r[6], speed=r[7], started=started, ended=ended,
        status=r[10], baseline_run_id=r[11], goal=r[12], answer_key=r[13],
    )  # fmt: skip
