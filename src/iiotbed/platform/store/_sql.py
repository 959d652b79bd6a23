"""SQL shared by the SQLite and PostgreSQL stores, so both answer queries the same way.

Statements use ``:name`` placeholders (SQLite's style); :func:`Dialect.sql` rewrites them
for psycopg. Both schemas keep samples under an integer series id (``series``: run, asset,
tag) and an integer run key (``run_keys``); ``n`` is the insertion order. Reads reach a
run's samples through its series and the ``(series, t, ...)`` key, so no other index on
``samples`` is needed.
"""

from __future__ import annotations

import math
import re
from abc import abstractmethod
from collections.abc import AsyncIterator, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import orjson

from iiotbed.platform.layout import Layout
from iiotbed.platform.store import _rollup
from iiotbed.platform.store.base import (
    Agg,
    Counts,
    KpiTotals,
    Point,
    RunInfo,
    Store,
    check_query,
    epoch_seconds,
)
from iiotbed.telemetry import Quality, Sample, Tag

_T = TypeVar("_T")
# a database conversation without I/O: yields (``:name`` query, params), is sent the rows
Plan = Generator[tuple[str, dict[str, Any]], list[Any], _T]

_NAMED = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")
_BAD = int(Quality.Bad)

RUN_KEY = "(SELECT id FROM run_keys WHERE run_id = :run)"
SERIES_KEY = f"(SELECT id FROM series WHERE run = {RUN_KEY} AND asset = :asset AND tag = :tag)"


@dataclass(frozen=True)
class Dialect:
    """What differs between the two SQL dialects we speak."""

    greatest: str
    pyformat: bool  # psycopg: %(name)s placeholders
    # asset, tag, t, value_num, value_text, unit, quality, gateway_ts, seq of ``se``/``s``
    sample_cols: str

    def sql(self, text: str) -> str:
        text = text.replace("{greatest}", self.greatest)
        if self.pyformat:
            return _NAMED.sub(r"%(\1)s", text)
        return text


# SQLite keeps the unit in the series and a sample's own unit, gateway_ts and seq, when
# it has any, as one JSON column ``x``, else "" (see :func:`row_to_sample`)
SQLITE = Dialect(
    greatest="max",
    pyformat=False,
    sample_cols="se.asset, se.tag, s.t, s.value_num, s.value_text, se.unit, s.quality,"
    " s.x AS gateway_ts, NULL AS seq",
)
POSTGRES = Dialect(
    greatest="greatest",
    pyformat=True,
    sample_cols="se.asset, se.tag, s.t, s.value_num, s.value_text, s.unit, s.quality,"
    " s.gateway_ts, s.seq",
)

_PAGE: Final = 10_000

RUN_COLS: Final = (
    "run_id, scenario, scenario_file, scenario_hash, epoch, seed, replication, speed, "
    "started, ended, status, baseline_run_id, goal, answer_key"
)
UPSERT_RUN: Final = (
    f"INSERT INTO runs ({RUN_COLS}) VALUES ({', '.join(':' + c for c in RUN_COLS.split(', '))}) "
    f"ON CONFLICT (run_id) DO UPDATE SET "
    f"{', '.join(f'{c} = excluded.{c}' for c in RUN_COLS.split(', ')[1:])}"
)


def run_params(run: RunInfo) -> dict[str, Any]:
    """The columns ``RUN_COLS`` of a run as :data:`UPSERT_RUN` parameters, unconverted."""
    return {c: getattr(run, c) for c in RUN_COLS.split(", ")}


class SqlStore(Store):
    """What the SQLite and PostgreSQL stores share: run epochs and the reads of this module."""

    _dialect: Dialect
    _epochs: dict[str, float]

    @abstractmethod
    async def _rows(self, query: str, params: dict[str, Any]) -> list[Any]:
        """The rows of ``query`` (``:name`` placeholders, already in the dialect)."""

    async def _epoch(self, run_id: str) -> float:
        epoch = self._epochs.get(run_id)
        if epoch is None:
            run = await self.get_run(run_id)
            epoch = self._epochs[run_id] = epoch_seconds(run.epoch if run else None)
        return epoch

    async def latest(self, run_id: str, asset_prefix: str | None = None) -> list[Sample]:
        query, params = latest_sql(self._dialect.sample_cols, asset_prefix)
        rows = await self._rows(self._dialect.sql(query), {"run": run_id, **params})
        return [row_to_sample(r, run_id) for r in rows]

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
        query, params = query_sql(start, end, every, agg)
        params.update(run=run_id, asset=asset, tag=tag)
        rows = await self._rows(self._dialect.sql(query), params)
        return to_points(rows, agg if every is not None else "last")

    async def iter_samples(
        self,
        run_id: str,
        start: float | None = None,
        end: float | None = None,
        tags: Sequence[str] | None = None,
    ) -> AsyncIterator[Sample]:
        plan = iter_plan(self._dialect, run_id, start, end, tags)
        try:
            query, params, page = next(plan)
            while True:
                rows = await self._rows(query, params)
                if page:
                    for r in rows:
                        yield row_to_sample(r, run_id)
                query, params, page = plan.send(rows)
        except StopIteration:
            return

    async def counts(self, run_id: str) -> Counts:
        rows = await self._rows(self._dialect.sql(counts_sql()), {"run": run_id})
        n, e, lo, hi = rows[0]
        return Counts(n, e, lo, hi)


# --------------------------------------------------------------------------- rows


def split_value(value: object) -> tuple[float | None, str | None]:
    """(value_num, value_text) columns of a sample value; NaN is stored as NULL."""
    if value is None:
        return None, None
    if isinstance(value, str):
        return None, value
    v = float(value)  # type: ignore[arg-type]
    return (None if math.isnan(v) else v), None


def row_to_sample(row: Sequence[Any], run_id: str) -> Sample:
    """A Sample from the columns :attr:`Dialect.sample_cols`."""
    asset, tag, t, num, text, unit, quality, gateway_ts, seq = row[:9]
    if type(gateway_ts) is str:  # SQLite's x: [unit, gateway_ts, seq] of the sample, or ""
        if gateway_ts:
            unit, gateway_ts, seq = orjson.loads(gateway_ts)
        else:
            gateway_ts = None
    return Sample(
        t=t,
        asset=asset,
        tag=tag,
        value=num if num is not None else text,
        unit=unit,
        quality=Quality(quality),
        gateway_ts=gateway_ts,
        seq=seq,
        run_id=run_id,
    )


# --------------------------------------------------------------------------- reads


GET_RUN: Final = f"SELECT {RUN_COLS} FROM runs WHERE run_id = :run"
LIST_RUNS: Final = f"SELECT {RUN_COLS} FROM runs ORDER BY started, run_id"


def assets_sql(prefix: str | None) -> tuple[str, dict[str, Any]]:
    """The assets at or under ``prefix`` (all without one): path, kind, stage, identification."""
    text = "SELECT path, kind, stage, identification FROM assets"
    params: dict[str, Any] = {}
    if prefix is not None:
        p = prefix.rstrip("/")
        text += " WHERE path = :path OR substr(path, 1, :plen) = :path_slash"
        params = {"path": p, "plen": len(p) + 1, "path_slash": p + "/"}
    return text + " ORDER BY path", params


def events_sql(start: float | None, end: float | None, order: str) -> tuple[str, dict[str, Any]]:
    """A run's (``:run``) events in [start, end], by t then ``order``: t, asset, name, fields."""
    text = "SELECT t, asset, name, fields FROM events WHERE run_id = :run"
    params: dict[str, Any] = {}
    if start is not None:
        text += " AND t >= :start"
        params["start"] = start
    if end is not None:
        text += " AND t <= :end"
        params["end"] = end
    return text + f" ORDER BY t, {order}", params


def latest_sql(cols: str, prefix: str | None) -> tuple[str, dict[str, Any]]:
    where = ""
    params: dict[str, Any] = {}
    if prefix is not None:
        prefix = prefix.rstrip("/")
        where = "AND (se.asset = :prefix OR substr(se.asset, 1, :plen) = :prefix_slash)"
        params = {"prefix": prefix, "plen": len(prefix) + 1, "prefix_slash": prefix + "/"}
    # one index probe per series for its largest t; ties at that t go to the last inserted
    text = f"""
        SELECT asset, tag, t, value_num, value_text, unit, quality, gateway_ts, seq FROM (
            SELECT {cols},
                   row_number() OVER (PARTITION BY se.id ORDER BY s.n DESC) AS k
            FROM series se JOIN samples s ON s.series = se.id
             AND s.t = (SELECT max(x.t) FROM samples x WHERE x.series = se.id)
            WHERE se.run = {RUN_KEY} {where}
        ) y WHERE k = 1 ORDER BY asset, tag"""
    return text, params


def query_sql(
    start: float | None, end: float | None, every: float | None, agg: str
) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {}
    where = f"series = {SERIES_KEY}"
    if start is not None:
        where += " AND t >= :start"
        params["start"] = float(start)
    if end is not None:
        where += " AND t < :end"
        params["end"] = float(end)
    if every is None:
        return f"SELECT t, value_num, value_text FROM samples WHERE {where} ORDER BY t, n", params
    params["every"] = float(every)
    bucket = "floor(t / :every) * :every"
    if agg == "last":
        text = f"""
            SELECT b, value_num, value_text FROM (
                SELECT {bucket} AS b, value_num, value_text,
                       row_number() OVER (PARTITION BY floor(t / :every)
                                          ORDER BY t DESC, n DESC) AS k
                FROM samples WHERE {where}
            ) x WHERE k = 1 ORDER BY b"""
        return text, params
    good = f"CASE WHEN quality <> {_BAD} THEN value_num END"
    expr = {"mean": f"avg({good})", "min": f"min({good})", "max": f"max({good})"}.get(
        agg, "count(*)"
    )
    text = f"""
        SELECT {bucket} AS b, {expr}, NULL FROM samples WHERE {where}
        GROUP BY floor(t / :every) ORDER BY floor(t / :every)"""
    return text, params


def iter_sql(cols: str, tags: int = 0) -> str:
    """One page of a run's samples in ``[after, below)``, ``t <= :end``, in (t, n) order;
    with ``tags`` > 0, only the series whose tag is one of ``:tag0`` .. ``:tag<tags-1>``."""
    only = ""
    if tags:
        only = f"AND se.tag IN ({', '.join(f':tag{i}' for i in range(tags))})"
    return f"""
        SELECT {cols}, s.n FROM series se JOIN samples s ON s.series = se.id
        WHERE se.run = {RUN_KEY} {only}
          AND s.t >= :after_t AND (s.t > :after_t OR s.n > :after_ins)
          AND s.t < :below AND s.t <= :end
        ORDER BY s.t, s.n LIMIT :limit"""


# the queries of SqlStore.iter_samples: yields (query in the dialect, params, whether its
# rows are samples), is sent each query's rows
Pages = Generator[tuple[str, dict[str, Any], bool], list[Any], None]


def iter_plan(
    d: Dialect,
    run_id: str,
    start: float | None,
    end: float | None,
    tags: Sequence[str] | None = None,
) -> Pages:
    """A run's samples in ``[start, end]`` in (t, n) order (of ``tags`` only, when given),
    as the pages to read."""
    # keyset pages over time windows: each window reads its range of every series of the
    # run by the key and sorts only that range; its width follows the samples' density
    only = {f"tag{i}": tag for i, tag in enumerate(tags or ())}
    query = d.sql(iter_sql(d.sample_cols, len(only)))
    span = d.sql(SPAN_SQL)
    lo, hi = (yield span, {"run": run_id}, False)[0]
    if lo is None:
        return
    a = lo if start is None else max(float(start), lo)
    width = 600.0
    while True:
        stop = hi if end is None else min(float(end), hi)
        while a <= stop:
            b = a + width
            if b <= a:
                b = math.nextafter(a, math.inf)
            params: dict[str, Any] = {
                "run": run_id, "after_t": a, "after_ins": -(2**62), "below": b,
                "end": stop, "limit": _PAGE, **only,
            }  # fmt: skip
            got = 0
            while True:
                rows = yield query, dict(params), True
                got += len(rows)
                if len(rows) < _PAGE:
                    break
                params["after_t"], params["after_ins"] = rows[-1][2], rows[-1][-1]
            width *= min(4.0, max(0.25, _PAGE / (2 * got) if got else 4.0))
            a = b
        if end is not None and end <= hi:
            return
        # samples written meanwhile past the span: go on with them
        new_hi = (yield span, {"run": run_id}, False)[0][1]
        if new_hi is None or new_hi <= hi:
            return
        hi = new_hi


# first and last t of a run: two key probes per series
SPAN_SQL: Final = f"""
    SELECT min((SELECT min(x.t) FROM samples x WHERE x.series = se.id)),
           max((SELECT max(x.t) FROM samples x WHERE x.series = se.id))
    FROM series se WHERE se.run = {RUN_KEY}"""


def counts_sql() -> str:
    return f"""
        SELECT (SELECT count(*) FROM series se JOIN samples s ON s.series = se.id
                WHERE se.run = {RUN_KEY}),
               (SELECT count(*) FROM events WHERE run_id = :run), span.*
        FROM ({SPAN_SQL}) span"""


def to_points(rows: Sequence[Sequence[Any]], agg: str) -> list[Point]:
    """Points from rows of :func:`query_sql`: (t, value_num or aggregate, value_text)."""
    if agg == "count":
        return [Point(r[0], float(r[1])) for r in rows]
    return [Point(r[0], r[1] if r[1] is not None else r[2]) for r in rows]


# --------------------------------------------------------------------------- KPI rollups

_STATE_COLS = "se.asset, se.tag, s.t, s.value_num, s.value_text, s.quality"

# state samples of a run in [lo, hi), in (t, insertion) order
STATE_ROWS = f"""
    SELECT {_STATE_COLS} FROM series se JOIN samples s ON s.series = se.id
    WHERE se.run = :rk AND se.kind = 1 AND s.t >= :lo AND s.t < :hi ORDER BY s.t, s.n"""

# the last state samples before lo: every series' state at lo
STATE_SEED = f"""
    SELECT {_STATE_COLS} FROM series se JOIN samples s ON s.series = se.id
     AND s.t = (SELECT max(x.t) FROM samples x WHERE x.series = se.id AND x.t < :lo)
    WHERE se.run = :rk AND se.kind = 1 ORDER BY s.t, s.n"""

STATE_SUMS = """
    SELECT asset, name, sum(seconds) FROM state_buckets
    WHERE run = :rk AND bucket >= :k0 AND bucket < :k1 GROUP BY asset, name"""

DELETE_BUCKETS = "DELETE FROM state_buckets WHERE run = :rk AND bucket >= :lo AND bucket < :hi"

# one counter's samples up to the window end, replayed when the rollups flagged it
COUNTER_ROWS = """
    SELECT t, value_num, value_text, quality FROM samples
    WHERE series = :sid AND t <= :end ORDER BY t, n"""


def counter_bucket_sql(ids: Sequence[int]) -> str:
    """Per series: the largest bucket maximum below bucket ``:k``, and any text value."""
    return f"""
        SELECT series, max(vmax), max(texts) FROM counter_buckets
        WHERE series IN ({", ".join(str(int(i)) for i in ids)}) AND bucket < :k
        GROUP BY series"""


def counter_edge_sql(ids: Sequence[int]) -> str:
    """Per series: the largest Good value in ``[lo, x]``, and whether a text value or a Bad
    mark is there (either makes the window stream)."""
    return f"""
        SELECT series, max(CASE WHEN quality <> {_BAD} THEN value_num END),
               max(CASE WHEN value_text IS NOT NULL OR quality = {_BAD} THEN 1 ELSE 0 END)
        FROM samples WHERE series IN ({", ".join(str(int(i)) for i in ids)})
          AND t >= :lo AND t <= :x
        GROUP BY series"""


def integrate_plan(
    rk: int, lo: float, hi: float, size: float | None
) -> Plan[dict[tuple[int, str, str], float]]:
    """Seconds per (bucket, asset, state name) of a run's state samples in ``[lo, hi)``."""
    integ = _rollup.Integrator(lo, hi, size)
    row = _rollup.state_row
    rows = yield STATE_SEED, {"rk": rk, "lo": lo}
    integ.feed(row(*r) for r in rows)
    rows = yield STATE_ROWS, {"rk": rk, "lo": lo, "hi": hi}
    integ.feed(row(*r) for r in rows)
    return integ.finish()


def kpi_totals_plan(
    run_id: str, layout: Layout, start: float, end: float
) -> Plan[KpiTotals | None]:
    """The totals of :meth:`Store.kpis` from the rollups; None to fall back to streaming
    (only when another asset than the layout's line sends a PlannedState)."""
    keys = yield "SELECT id, closed FROM run_keys WHERE run_id = :run", {"run": run_id}
    if not keys:
        return _rollup.totals(layout, {}, {})
    rk, closed = keys[0]
    ids: dict[tuple[str, str], int] = {}
    for sid, asset, tag in (yield "SELECT id, asset, tag FROM series WHERE run = :rk", {"rk": rk}):
        ids[(asset, tag)] = sid
        if tag == Tag.PLANNED_STATE and asset != layout.line:
            return None  # another calendar than the layout's: the engine decides
    win = _rollup.split_window(start, end, closed)
    seconds: dict[tuple[str, str], float] = {}
    if win.k1 > win.k0:
        for asset, name, v in (yield STATE_SUMS, {"rk": rk, "k0": win.k0, "k1": win.k1}):
            seconds[(asset, name)] = v
    for a, b in win.edges:
        for (_, asset, name), v in (yield from integrate_plan(rk, a, b, None)).items():
            seconds[(asset, name)] = seconds.get((asset, name), 0.0) + v
    pairs = _rollup.counter_pairs(layout)
    wanted = [ids[p] for p in pairs if p in ids]
    at: list[tuple[list[Any], list[Any]]] = []
    for x in (start, end):
        k = _rollup.bucket_of(x)
        if not wanted:
            at.append(([], []))
            continue
        below = yield counter_bucket_sql(wanted), {"k": k}
        edge = yield counter_edge_sql(wanted), {"lo": k * _rollup.BUCKET_S, "x": x}
        at.append((below, edge))
    counters, marked = _rollup.counter_values(pairs, ids, at[0], at[1])
    gaps: dict[tuple[str, str], float] = {}
    for pair in pairs:  # a flagged counter: its own samples, not the whole run's
        sid = ids.get(pair)
        if sid is not None and sid in marked:
            rows = yield COUNTER_ROWS, {"sid": sid, "end": end}
            c = _rollup.replay_counter(rows, start)
            counters[pair] = (c.base, c.last)
            gaps[pair] = c.gap
    return _rollup.totals(layout, seconds, counters, gaps)
