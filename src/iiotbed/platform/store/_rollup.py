"""KPI rollups kept at ingest, shared by both stores.

Two tables, maintained in the transaction that writes the samples:

* ``state_buckets (run, bucket, asset, name, seconds)``: per hour bucket, the seconds each
  asset spent in the states the KPI engine integrates — ``pbt``/``apt``/``fault`` of a
  station (its own item state, mode and fault, inside the run's PlannedState Production)
  and ``unknown`` (Production with its item state Bad), ``planned`` and ``unknown`` of the
  asset that sends PlannedState, ``heads/<role>`` person-seconds of a
  Headcount tag. A batch recomputes the buckets it closes, and every bucket from the
  oldest one it touches when it brings late state samples, so arrival order never matters.
* ``counter_buckets (series, bucket, vmax, texts)``: per hour bucket, the largest Good
  value of a counter (at least 0, as the engine's counters start at 0), and ``texts`` set
  when a value came as text, Bad or without a number: a window up to such a bucket replays
  that counter's samples through the engine's :class:`Counter` (a number sent as text, or
  a gap in the telemetry: every counter of an edge node that went away), the others' come
  from the maxima.

A KPI window then sums whole buckets and replays only its two partial edges from the
samples. The stretches are integrated by the KPI engine's own rules and clocks
(:mod:`iiotbed.platform._integrate`); only where they are credited (hour buckets) is ours.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from iiotbed.platform._integrate import (
    LINE_COUNTERS,
    STATION_COUNTERS,
    UNKNOWN,
    Counter,
    LineClock,
    Rates,
    StationClock,
)
from iiotbed.platform.layout import Layout
from iiotbed.platform.store.base import KpiTotals
from iiotbed.telemetry import Quality, Tag

BUCKET_S: Final = 3600.0
OTHER, STATE, COUNTER = 0, 1, 2

_BAD: Final = int(Quality.Bad)
_STATE_TAGS: Final = frozenset({Tag.ITEM_STATE, Tag.OPERATION_MODE, Tag.FAULT, Tag.PLANNED_STATE})
_COUNTER_TAGS: Final = frozenset(STATION_COUNTERS + LINE_COUNTERS)
_HEADS: Final = "heads/"


def series_kind(tag: str) -> int:
    """STATE for tags whose durations KPIs integrate, COUNTER for KPI counters, else OTHER."""
    if tag in _STATE_TAGS or tag.startswith(Tag.HEADCOUNT_PREFIX):
        return STATE
    if tag in _COUNTER_TAGS or tag.startswith(Tag.PROCESSED + "/"):
        return COUNTER
    return OTHER


def bucket_of(t: float) -> int:
    return math.floor(t / BUCKET_S)


class StateRow(NamedTuple):
    """A state sample as read back: asset, tag, t, value (None when Bad or no value)."""

    asset: str
    tag: str
    t: float
    value: float | str | None


def state_row(asset: str, tag: str, t: float, num: Any, text: Any, quality: int) -> StateRow:
    return StateRow(asset, tag, t, None if quality == _BAD else (num if num is not None else text))


class _Station(StationClock):
    """A station's stretches credited to its ``pbt``/``apt``/``fault``/``unknown`` buckets."""

    __slots__ = ("asset", "integ")

    def __init__(self, integ: Integrator, asset: str) -> None:
        super().__init__()
        self.integ = integ
        self.asset = asset

    def credit(self, t0: float, t1: float, rates: Rates) -> None:
        # one pass over the buckets for the three names: this runs once per station state
        # change of every batch's recomputed buckets, on the ingest path
        integ = self.integ
        a = t0 if t0 > integ.lo else integ.lo
        b = t1 if t1 < integ.hi else integ.hi
        if b <= a:
            return
        out, size, asset = integ.out, integ.size, self.asset
        k = 0 if size is None else math.floor(a / size)
        if rates is UNKNOWN:
            integ.add(asset, "unknown", a, b)
            return
        pbt, apt, fault = rates
        while a < b:
            edge = b if size is None else (k + 1) * size
            if edge > b:
                edge = b
            d = edge - a
            key = (k, asset, "pbt")
            out[key] = out.get(key, 0.0) + d * pbt
            if apt:
                key = (k, asset, "apt")
                out[key] = out.get(key, 0.0) + d * apt
            if fault:
                key = (k, asset, "fault")
                out[key] = out.get(key, 0.0) + d * fault
            a = edge
            k += 1


class _Line(LineClock):
    """An asset sending PlannedState or Headcount: ``planned``, ``unknown`` and
    ``heads/<role>`` buckets."""

    __slots__ = ("asset", "integ")

    def __init__(self, integ: Integrator, asset: str) -> None:
        super().__init__(integ.stations.values())
        self.integ = integ
        self.asset = asset

    def credit(self, t0: float, t1: float) -> None:
        add, asset = self.integ.add, self.asset
        if self.planned:
            add(asset, "planned", t0, t1)
        elif self.unknown:
            add(asset, "unknown", t0, t1)
        for role, n in self.roles.items():
            add(asset, _HEADS + role, t0, t1, n)


class Integrator:
    """Seconds per (bucket, asset, name) over ``[lo, hi)``; ``size`` None: one bucket 0.

    Feed rows in (t, insertion) order, the seed rows (the last ones before ``lo``) first.
    The stretches come from the KPI engine's own clocks (:mod:`iiotbed.platform._integrate`).
    """

    def __init__(self, lo: float, hi: float, size: float | None = BUCKET_S) -> None:
        self.lo, self.hi, self.size = lo, hi, size
        self.out: dict[tuple[int, str, str], float] = {}
        self.stations: dict[str, _Station] = {}
        self._lines: dict[str, _Line] = {}

    def add(self, asset: str, name: str, t0: float, t1: float, w: float = 1.0) -> None:
        """Credit ``w`` x the seconds of ``[t0, t1)`` inside ``[lo, hi)``, bucket by bucket."""
        a = t0 if t0 > self.lo else self.lo
        b = t1 if t1 < self.hi else self.hi
        out = self.out
        if b <= a or w == 0.0:
            return
        size = self.size
        if size is None:
            key = (0, asset, name)
            out[key] = out.get(key, 0.0) + (b - a) * w
            return
        k = math.floor(a / size)
        while a < b:
            edge = (k + 1) * size
            if edge > b:
                edge = b
            key = (k, asset, name)
            out[key] = out.get(key, 0.0) + (edge - a) * w
            a = edge
            k += 1

    def _line(self, asset: str) -> _Line:
        line = self._lines.get(asset)
        if line is None:
            line = self._lines[asset] = _Line(self, asset)
        return line

    def feed(self, rows: Iterable[StateRow]) -> None:
        stations = self.stations
        for asset, tag, t, value in rows:
            if tag == Tag.PLANNED_STATE:
                self._line(asset).set_planned(t, value)
            elif tag.startswith(Tag.HEADCOUNT_PREFIX):
                self._line(asset).set_heads(t, tag[len(Tag.HEADCOUNT_PREFIX) :], value)
            else:
                st = stations.get(asset)
                if st is None:
                    st = stations[asset] = _Station(self, asset)
                    # a station first heard of now is as planned as the line already is
                    st.planned = any(line.planned for line in self._lines.values())
                if tag == Tag.ITEM_STATE:
                    st.set_item(t, value)
                elif tag == Tag.OPERATION_MODE:
                    st.set_mode(t, value)
                else:
                    st.set_fault(t, value)

    def finish(self) -> dict[tuple[int, str, str], float]:
        """Close every open stretch at ``hi``; the seconds, zeros left out."""
        hi = self.hi
        for st in self.stations.values():
            st.advance(hi)
        for line in self._lines.values():
            line.advance(hi)
        return {k: v for k, v in self.out.items() if v != 0.0}


@dataclass
class Window:
    """How a KPI window ``[start, end]`` splits: whole buckets ``[k0, k1)`` and edges."""

    k0: int
    k1: int
    edges: list[tuple[float, float]]


def split_window(start: float, end: float, closed: int | None) -> Window:
    """Whole rolled-up buckets inside the window (below ``closed``), the rest as edges."""
    k0 = math.ceil(start / BUCKET_S)
    k1 = math.floor(end / BUCKET_S)
    if closed is not None:
        k1 = min(k1, closed)
    if closed is None or k1 <= k0:
        return Window(0, 0, [(start, end)] if end > start else [])
    edges = [(start, k0 * BUCKET_S), (k1 * BUCKET_S, end)]
    return Window(k0, k1, [(a, b) for a, b in edges if b > a])


def counter_pairs(layout: Layout) -> list[tuple[str, str]]:
    """(asset, tag) of every counter the layout's KPIs read."""
    pairs: list[tuple[str, str]] = []
    for st in layout.stations:
        pairs += [(st.path, tag) for tag in STATION_COUNTERS]
        pairs += [(st.path, f"{Tag.PROCESSED}/{p}") for p in st.ideal_cycle_time]
    pairs += [(layout.line, tag) for tag in LINE_COUNTERS]
    return pairs


def totals(
    layout: Layout,
    seconds: Mapping[tuple[str, str], float],
    counters: Mapping[tuple[str, str], tuple[float, float]],
    gaps: Mapping[tuple[str, str], float] | None = None,
) -> KpiTotals:
    """KpiTotals from summed seconds per (asset, name), counter (base, last) values and
    the units counted across Bad gaps (:attr:`Counter.gap`) of the replayed counters."""
    out = KpiTotals()
    for st in layout.stations:
        p = st.path
        out.station_times[p] = (
            seconds.get((p, "pbt"), 0.0),
            seconds.get((p, "apt"), 0.0),
            seconds.get((p, "fault"), 0.0),
        )
        out.station_unknown[p] = seconds.get((p, "unknown"), 0.0)
    out.line_pbt = seconds.get((layout.line, "planned"), 0.0)
    out.line_unknown = seconds.get((layout.line, "unknown"), 0.0)
    out.line_person_s = sum(
        seconds.get((layout.line, _HEADS + r), 0.0) for r in sorted(layout.counted_roles)
    )
    out.counters.update(counters)
    out.counter_gaps.update(gaps or {})
    return out


def roll_bounds(
    closed: int | None, state_min_t: float | None, max_t: float
) -> tuple[int, int, int]:
    """After a batch: (lo, hi, closed) — recompute buckets ``[lo, hi)``, then all below
    ``closed`` are rolled up. The bucket holding the newest sample stays open."""
    new = bucket_of(max_t)
    if closed is not None and closed > new:
        new = closed
    lo = closed if closed is not None else new
    if state_min_t is not None:
        lo = min(lo, bucket_of(state_min_t))
    return lo, new, new


def add_counter(
    maxima: dict[tuple[int, int], list[float]], sid: int, t: float, value: Any, quality: int
) -> None:
    """Fold one counter sample into its bucket's [max Good value (>= 0), replay flag]: the
    flag is set by a number sent as text, a Bad mark or a sample without a number (the
    engine parses the one and tells the units counted across the others' gaps apart; the
    counter is replayed)."""
    key = (sid, math.floor(t / BUCKET_S))
    m = maxima.get(key)
    if m is None:
        m = maxima[key] = [0.0, 0.0]
    if quality == _BAD:
        m[1] = 1.0
    elif type(value) is float:
        if value > m[0]:
            m[0] = value
    else:  # text, or no value (an Uncertain stale mark): the engine's Counter decides
        m[1] = 1.0


def counter_values(
    pairs: Sequence[tuple[str, str]],
    ids: Mapping[tuple[str, str], int],
    at_start: tuple[Sequence[Sequence[Any]], Sequence[Sequence[Any]]],
    at_end: tuple[Sequence[Sequence[Any]], Sequence[Sequence[Any]]],
) -> tuple[dict[tuple[str, str], tuple[float, float]], set[int]]:
    """(base, last) per counter from (bucket rows, edge rows) at the window start and end,
    and the series flagged up to the end (a number sent as text, a Bad mark): their values
    here are not theirs, :func:`replay_counter` gives them."""
    marked: set[int] = set()

    def maxima(rows: tuple[Sequence[Sequence[Any]], Sequence[Sequence[Any]]]) -> dict[int, float]:
        out: dict[int, float] = {}
        for part in rows:
            for sid, v, texts in part:
                if texts:
                    marked.add(sid)
                if v is not None and v > out.get(sid, 0.0):
                    out[sid] = float(v)
        return out

    base, last = maxima(at_start), maxima(at_end)
    result: dict[tuple[str, str], tuple[float, float]] = {}
    for pair in pairs:
        sid = ids.get(pair)
        if sid is not None:
            result[pair] = (base.get(sid, 0.0), last.get(sid, 0.0))
    return result, marked


def replay_counter(rows: Iterable[Sequence[Any]], start: float) -> Counter:
    """One counter's samples (t, value_num, value_text, quality) in (t, insertion) order up
    to the window end, through the engine's own :class:`Counter` as the engine feeds it."""
    c = Counter(start)
    for t, num, text, quality in rows:
        value = None if quality == _BAD else (num if num is not None else text)
        try:
            c.update(t, value)
        except (TypeError, ValueError):  # a value that is no number: as good as Bad
            c.update(t, None)
    return c
