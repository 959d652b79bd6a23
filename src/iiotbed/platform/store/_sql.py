"""SQL shared by the SQLite and PostgreSQL stores, so both answer queries the same way.

Statements use ``:name`` placeholders (SQLite's style); :func:`Dialect.sql` rewrites them
for psycopg. The insertion-order column is ``rowid`` in SQLite and ``n`` in PostgreSQL.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from iiotbed.platform.layout import Layout
from iiotbed.platform.store.base import KpiTotals, Point
from iiotbed.telemetry import Quality, Sample, Tag

_NAMED = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")
_BAD = int(Quality.Bad)

SAMPLE_COLS = "asset, tag, t, value_num, value_text, unit, quality, gateway_ts, seq"

_STATE_TAGS = (Tag.ITEM_STATE, Tag.OPERATION_MODE, Tag.FAULT)
_STATION_COUNTERS = (
    Tag.PROCESSED,
    Tag.DEFECTIVE,
    Tag.FAILURES,
    Tag.ENERGY,
    Tag.INSPECTED,
    Tag.PASSED_FIRST,
)
_LINE_COUNTERS = (Tag.GOOD, Tag.SCRAP, Tag.LINE_OUTPUT)


@dataclass(frozen=True)
class Dialect:
    """What differs between the two SQL dialects we speak."""

    ins: str  # insertion-order column
    least: str
    greatest: str
    pyformat: bool  # psycopg: %(name)s placeholders

    def sql(self, text: str) -> str:
        text = text.replace("{ins}", self.ins)
        text = text.replace("{least}", self.least).replace("{greatest}", self.greatest)
        if self.pyformat:
            return _NAMED.sub(r"%(\1)s", text)
        return text


SQLITE = Dialect(ins="rowid", least="min", greatest="max", pyformat=False)
POSTGRES = Dialect(ins="n", least="least", greatest="greatest", pyformat=True)


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
    """A Sample from the columns ``SAMPLE_COLS``."""
    asset, tag, t, num, text, unit, quality, gateway_ts, seq = row[:9]
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


def latest_sql(prefix: str | None) -> tuple[str, dict[str, Any]]:
    where = ""
    params: dict[str, Any] = {}
    if prefix is not None:
        prefix = prefix.rstrip("/")
        where = "AND (asset = :prefix OR substr(asset, 1, :plen) = :prefix_slash)"
        params = {"prefix": prefix, "plen": len(prefix) + 1, "prefix_slash": prefix + "/"}
    text = f"""
        SELECT {SAMPLE_COLS} FROM (
            SELECT {SAMPLE_COLS},
                   row_number() OVER (PARTITION BY asset, tag ORDER BY t DESC, {{ins}} DESC) AS k
            FROM samples WHERE run_id = :run {where}
        ) x WHERE k = 1 ORDER BY asset, tag"""
    return text, params


def query_sql(
    start: float | None, end: float | None, every: float | None, agg: str
) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {}
    where = "run_id = :run AND asset = :asset AND tag = :tag"
    if start is not None:
        where += " AND t >= :start"
        params["start"] = float(start)
    if end is not None:
        where += " AND t < :end"
        params["end"] = float(end)
    if every is None:
        return (
            f"SELECT t, value_num, value_text FROM samples WHERE {where} ORDER BY t, {{ins}}",
            params,
        )
    params["every"] = float(every)
    bucket = "floor(t / :every) * :every"
    if agg == "last":
        text = f"""
            SELECT b, value_num, value_text FROM (
                SELECT {bucket} AS b, value_num, value_text,
                       row_number() OVER (PARTITION BY floor(t / :every)
                                          ORDER BY t DESC, {{ins}} DESC) AS k
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


def iter_sql(end: float | None) -> str:
    # keyset pages over the (run_id, t) index: no open cursor between pages
    upper = "AND t <= :end" if end is not None else ""
    return f"""
        SELECT {SAMPLE_COLS}, {{ins}} FROM samples
        WHERE run_id = :run AND t >= :after_t AND (t > :after_t OR {{ins}} > :after_ins) {upper}
        ORDER BY t, {{ins}} LIMIT :limit"""


def to_points(rows: Sequence[Sequence[Any]], agg: str) -> list[Point]:
    """Points from rows of :func:`query_sql`: (t, value_num or aggregate, value_text)."""
    if agg == "count":
        return [Point(r[0], float(r[1])) for r in rows]
    return [Point(r[0], r[1] if r[1] is not None else r[2]) for r in rows]


# --------------------------------------------------------------------------- KPIs in SQL


def kpi_state_sql(layout: Layout) -> tuple[str, dict[str, Any]]:
    """Per station PBT, APT and fault seconds, per line PBT and person-seconds, in SQL.

    The state of each kind (calendar, item state, mode, fault) is carried forward with a
    running max of ``row_number * 4 + code`` (the latest code wins); each row's state lasts
    until the next row's time, clipped to the window, exactly as ``KpiAccumulator`` does.
    """
    params: dict[str, Any] = {"line": layout.line}
    ents = []
    for i, st in enumerate(layout.stations):
        ents.append(f"(:e{i}, :a{i})")
        params[f"e{i}"] = i
        params[f"a{i}"] = st.path
    v = f"CASE WHEN s.quality = {_BAD} THEN NULL ELSE s.value_num END"
    txt = f"CASE WHEN s.value_text IS NOT NULL AND s.quality <> {_BAD} THEN 1 ELSE 0 END"
    item, mode = Tag.ITEM_STATE, Tag.OPERATION_MODE
    parts = []
    if ents:
        parts.append(f"""
            SELECT ent.e AS e, s.t AS t, s.{{ins}} AS ins,
                   CASE s.tag WHEN '{item}' THEN 1 WHEN '{mode}' THEN 2 ELSE 3 END AS kind,
                   CASE s.tag
                     WHEN '{item}' THEN (CASE WHEN ({v}) IS NULL THEN 0
                                              WHEN ({v}) >= 3 AND ({v}) < 4 THEN 2 ELSE 1 END)
                     WHEN '{mode}' THEN (CASE WHEN ({v}) >= 1 AND ({v}) < 3 THEN 1 ELSE 0 END)
                     ELSE (CASE WHEN ({v}) >= 1 OR ({v}) <= -1 THEN 1 ELSE 0 END)
                   END AS code,
                   0.0 AS hv, '' AS role, {txt} AS txt
            FROM samples s JOIN ent ON s.asset = ent.asset
            WHERE s.run_id = :run AND s.t <= :end
              AND s.tag IN ('{item}', '{mode}', '{Tag.FAULT}')""")
    # the line calendar is seen by the line (e = -1) and by every station
    all_e = "SELECT -1 AS e" + "".join(f" UNION ALL SELECT :e{i}" for i in range(len(ents)))
    parts.append(f"""
        SELECT x.e, s.t, s.{{ins}}, 0,
               CASE WHEN {v} >= 1 AND {v} < 2 THEN 1 ELSE 0 END, 0.0, '', {txt}
        FROM samples s CROSS JOIN ({all_e}) x
        WHERE s.run_id = :run AND s.asset = :line AND s.t <= :end
          AND s.tag = '{Tag.PLANNED_STATE}'""")
    roles = sorted(layout.counted_roles)
    if roles:
        names = ", ".join(f":r{i}" for i in range(len(roles)))
        params.update({f"r{i}": Tag.HEADCOUNT_PREFIX + r for i, r in enumerate(roles)})
        parts.append(f"""
            SELECT -1, s.t, s.{{ins}}, 4, 0, coalesce({v}, 0.0), s.tag, {txt}
            FROM samples s
            WHERE s.run_id = :run AND s.asset = :line AND s.t <= :end AND s.tag IN ({names})""")
    ent_cte = f"ent(e, asset) AS (VALUES {', '.join(ents)})," if ents else ""
    union = " UNION ALL ".join(parts)
    code = "{0} - ({0} / 4) * 4"
    text = f"""
        WITH {ent_cte}
        ev AS ({union}),
        r AS (
            SELECT e, t, kind, code, txt,
                   row_number() OVER (PARTITION BY e ORDER BY t, ins) AS rn,
                   CASE WHEN kind = 4
                        THEN hv - coalesce(lag(hv) OVER (PARTITION BY e, role ORDER BY t, ins), 0.0)
                        ELSE 0.0 END AS dh
            FROM ev),
        w AS (
            SELECT e, t, txt,
                   max(CASE WHEN kind = 0 THEN rn * 4 + code END) OVER win AS p4,
                   max(CASE WHEN kind = 1 THEN rn * 4 + code END) OVER win AS i4,
                   max(CASE WHEN kind = 2 THEN rn * 4 + code END) OVER win AS m4,
                   max(CASE WHEN kind = 3 THEN rn * 4 + code END) OVER win AS f4,
                   sum(dh) OVER win AS heads,
                   lead(t) OVER win AS next_t
            FROM r
            WINDOW win AS (PARTITION BY e ORDER BY rn ROWS UNBOUNDED PRECEDING)),
        d AS (
            SELECT e, txt, heads,
                   {code.format("p4")} AS p, {code.format("i4")} AS i,
                   {code.format("m4")} AS m, {code.format("f4")} AS f,
                   {{greatest}}(0.0, {{least}}(coalesce(next_t, :end), :end)
                                     - {{greatest}}(t, :start)) AS d
            FROM w)
        SELECT e,
               sum(CASE WHEN p = 1 AND i >= 1 THEN d ELSE 0.0 END),
               sum(CASE WHEN p = 1 AND i = 2 AND coalesce(m, 0) = 0 THEN d ELSE 0.0 END),
               sum(CASE WHEN p = 1 AND i >= 1 AND f = 1 THEN d ELSE 0.0 END),
               sum(CASE WHEN p = 1 THEN d ELSE 0.0 END),
               sum(d * heads),
               sum(txt)
        FROM d GROUP BY e"""
    return text, params


def kpi_counter_sql(layout: Layout) -> tuple[str, dict[str, Any]]:
    """Per counter the max value at or before the window start and at or before its end."""
    pairs: list[tuple[str, str]] = []
    for st in layout.stations:
        pairs += [(st.path, tag) for tag in _STATION_COUNTERS]
        pairs += [(st.path, f"{Tag.PROCESSED}/{p}") for p in st.ideal_cycle_time]
    pairs += [(layout.line, tag) for tag in _LINE_COUNTERS]
    params: dict[str, Any] = {}
    values = []
    for i, (asset, tag) in enumerate(pairs):
        values.append(f"(:ca{i}, :ct{i})")
        params[f"ca{i}"] = asset
        params[f"ct{i}"] = tag
    good = f"CASE WHEN s.quality <> {_BAD} THEN s.value_num END"
    text = f"""
        WITH ctr(asset, tag) AS (VALUES {", ".join(values)})
        SELECT s.asset, s.tag,
               max(CASE WHEN s.t <= :start THEN {good} END),
               max({good}),
               sum(CASE WHEN s.value_text IS NOT NULL AND s.quality <> {_BAD} THEN 1 ELSE 0 END)
        FROM samples s JOIN ctr ON s.asset = ctr.asset AND s.tag = ctr.tag
        WHERE s.run_id = :run AND s.t <= :end
        GROUP BY s.asset, s.tag"""
    return text, params


def kpi_totals(
    layout: Layout, state_rows: Sequence[Sequence[Any]], counter_rows: Sequence[Sequence[Any]]
) -> KpiTotals | None:
    """Totals from the rows of the two KPI queries; None when a text value needs parsing."""
    totals = KpiTotals()
    for e, pbt, apt, fault, line_pbt, person_s, txt in state_rows:
        if txt:
            return None  # numbers sent as text: the streaming path parses them like the engine
        if e == -1:
            totals.line_pbt, totals.line_person_s = float(line_pbt), float(person_s or 0.0)
        else:
            path = layout.stations[int(e)].path
            totals.station_times[path] = (float(pbt), float(apt), float(fault))
    for asset, tag, base, last, txt in counter_rows:
        if txt:
            return None
        # as in the engine's counters: no value (or only negative ones) counts as zero
        b = max(0.0, float(base)) if base is not None else 0.0
        la = max(0.0, float(last)) if last is not None else 0.0
        totals.counters[(asset, tag)] = (b, la)
    return totals
