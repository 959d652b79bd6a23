"""ISO 22400-2 KPIs of a line, computed from telemetry records.

The engine reads :mod:`iiotbed.telemetry` Samples only (Events are ignored): station state
tags give the time elements (APT, PBT, fault time), monotonic counters give quantities by
their deltas over the window, by the rules of :mod:`iiotbed.platform._integrate` (which
the store's rollups run too). It keeps O(1) state per tag, so it serves batch runs
(``compute_kpis``) and live dashboards (``KpiAccumulator.report`` while feeding) alike.
Definitions and edge-case rules are written down in ``docs/kpis.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from iiotbed._json import finite_map
from iiotbed.platform._integrate import (
    IDLE,
    LINE_COUNTERS,
    STATION_COUNTERS,
    UNKNOWN,
    Counter,
    LineClock,
    Rates,
    StationClock,
)
from iiotbed.platform.layout import Layout, StationLayout
from iiotbed.telemetry import Quality, Record, Sample, Tag

__all__ = ["KPI_INFO", "KpiAccumulator", "KpiInfo", "KpiReport", "SampleNames", "compute_kpis",
           "compute_kpis_columns"]

NAN = math.nan


class KpiInfo(NamedTuple):
    """Unit (UNECE-style text), one-line description, and which direction is better."""

    unit: str
    description: str
    higher_is_better: bool


KPI_INFO: Mapping[str, KpiInfo] = {
    "oee": KpiInfo("1", "overall equipment effectiveness, availability x perf. x quality", True),
    "availability": KpiInfo("1", "APT / PBT (ISO 22400-2 availability)", True),
    "performance": KpiInfo("1", "ideal cycle time x produced / APT (ISO 22400-2 effect.)", True),
    "quality": KpiInfo("1", "good / produced (ISO 22400-2 quality ratio)", True),
    "throughput": KpiInfo("units/h", "good units per hour of the window", True),
    "mtbf": KpiInfo("s", "mean operating time between failures, APT / failures", True),
    "mttr": KpiInfo("s", "mean time to repair, fault time within PBT / failures", False),
    "scrap_ratio": KpiInfo("1", "scrap / (output + scrap) (ISO 22400-2 SQ/PQ)", False),
    "first_pass_yield": KpiInfo("1", "units passing inspection first time / units inspected", True),
    "energy_per_good_unit": KpiInfo("kWh/unit", "station energy / good units", False),
    "labour_productivity": KpiInfo("units/h", "good units per labour hour (counted roles)", True),
    "good_count": KpiInfo("units", "good units leaving the line (GQ)", True),
    "scrap_count": KpiInfo("units", "units scrapped on the line (SQ)", False),
    "labour_hours": KpiInfo("h", "attendance of counted roles, person-hours", False),
    "energy_kwh": KpiInfo("kWh", "electrical energy used by stations", False),
    "pbt_h": KpiInfo("h", "planned busy time (PlannedState Production, state known)", True),
    "apt_h": KpiInfo("h", "actual production time (Executing within PBT)", True),
    "failures": KpiInfo("1", "breakdowns started in the window", False),
    "processed": KpiInfo("units", "units finished by the station (PQ)", True),
    "unknown_h": KpiInfo(
        "h", "time not observed: planned with the state Bad or no number (not in PBT)", False
    ),
}

_BAD = Quality.Bad
_Handler = Callable[[float, Any], None]
#: what a column key stands for: a sample's ``(asset, tag)``, or None (not a sample)
SampleNames = Callable[[Any], "tuple[str, str] | None"]


@dataclass(frozen=True)
class KpiReport:
    """KPIs of one window ``[start, end]`` (s): line, per stage, per station; nan = undefined."""

    start: float
    end: float
    line: Mapping[str, float]
    stages: Mapping[str, Mapping[str, float]]
    stations: Mapping[str, Mapping[str, float]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: plain dicts, nan and infinities as None."""
        return {
            "start": self.start,
            "end": self.end,
            "line": finite_map(self.line),
            "stages": {k: finite_map(v) for k, v in self.stages.items()},
            "stations": {k: finite_map(v) for k, v in self.stations.items()},
        }


# --------------------------------------------------------------------------- per-tag state


class _Station(StationClock):
    """Time elements of one station over the window, integrated on every state change."""

    __slots__ = (
        "apt", "counters", "end", "fault_s", "layout", "pbt", "products", "start", "unknown_s",
    )  # fmt: skip

    def __init__(self, layout: StationLayout, start: float, end: float) -> None:
        super().__init__()
        self.layout = layout
        self.start = start
        self.end = end
        self.apt = 0.0
        self.pbt = 0.0
        self.fault_s = 0.0
        self.unknown_s = 0.0  # planned, the item state unknown (a Bad sample): not PBT
        self.counters = {tag: Counter(start) for tag in STATION_COUNTERS}
        self.products = {p: Counter(start) for p in layout.ideal_cycle_time}

    def credit(self, t0: float, t1: float, rates: Rates) -> None:
        lo = t0 if t0 > self.start else self.start
        hi = t1 if t1 < self.end else self.end
        if hi > lo:
            d = hi - lo
            if rates is UNKNOWN:
                self.unknown_s += d
                return
            pbt, apt, fault = rates
            self.pbt += d * pbt
            if apt:
                self.apt += d * apt
            if fault:
                self.fault_s += d * fault

    def open_segment(self, t: float) -> tuple[float, float, float, float]:
        """(PBT, APT, fault, unknown) seconds of the open stretch up to ``t``, clipped to the
        window."""
        lo = self.since if self.since > self.start else self.start
        hi = t if t < self.end else self.end
        if hi <= lo or self.rates is IDLE:
            return 0.0, 0.0, 0.0, 0.0
        d = hi - lo
        if self.rates is UNKNOWN:
            return 0.0, 0.0, 0.0, d
        pbt, apt, fault = self.rates
        return d * pbt, d * apt, d * fault, 0.0


class _Line(LineClock):
    """Line calendar state (PBT) and attendance of counted roles (person-seconds)."""

    __slots__ = ("end", "pbt", "people_s", "start", "unknown_s")

    def __init__(self, stations: list[_Station], start: float, end: float) -> None:
        super().__init__(stations)
        self.start = start
        self.end = end
        self.pbt = 0.0
        self.people_s = 0.0
        self.unknown_s = 0.0  # the PlannedState unknown (a Bad sample): not PBT

    def credit(self, t0: float, t1: float) -> None:
        pbt, people, unknown = self._stretch(t0, t1)
        self.pbt += pbt
        self.people_s += people
        self.unknown_s += unknown

    def open_segment(self, t: float) -> tuple[float, float, float]:
        """(PBT, person-seconds, unknown) of the open stretch up to ``t``, clipped to the
        window."""
        return self._stretch(self.since, t)

    def _stretch(self, t0: float, t1: float) -> tuple[float, float, float]:
        lo = t0 if t0 > self.start else self.start
        hi = t1 if t1 < self.end else self.end
        if hi <= lo:
            return 0.0, 0.0, 0.0
        d = hi - lo
        return (d if self.planned else 0.0), d * self.heads, (d if self.unknown else 0.0)

    def headcount(self, role: str) -> _Handler:
        def set_heads(t: float, value: Any) -> None:
            self.set_heads(t, role, value)

        return set_heads


# --------------------------------------------------------------------------- the engine


class KpiAccumulator:
    """Feeds records of one line in time order; ``report(end)`` gives the KPIs so far.

    Records after ``end`` (when given) are ignored; records before ``start`` only set the
    state and counter baselines the window starts from.
    """

    def __init__(self, layout: Layout, *, start: float, end: float | None = None) -> None:
        if end is not None and end < start:
            raise ValueError(f"KPI window end ({end:g} s) must not precede its start ({start:g} s)")
        self.layout = layout
        self.start = float(start)
        self.end = math.inf if end is None else float(end)
        self._last_t = -math.inf
        self._stations = [_Station(s, self.start, self.end) for s in layout.stations]
        self._line = _Line(self._stations, self.start, self.end)
        self._line_counters = {tag: Counter(self.start) for tag in LINE_COUNTERS}
        # asset -> tag -> handler: two dict lookups and no allocation per record
        self._dispatch: dict[str, dict[str, _Handler]] = {}
        for st in self._stations:
            tags: dict[str, _Handler] = {
                Tag.ITEM_STATE: st.set_item,
                Tag.OPERATION_MODE: st.set_mode,
                Tag.FAULT: st.set_fault,
            }
            for tag, c in st.counters.items():
                tags[tag] = c.update
            for product, c in st.products.items():
                tags[f"{Tag.PROCESSED}/{product}"] = c.update
            self._dispatch[st.layout.path] = tags
        line_tags: dict[str, _Handler] = {Tag.PLANNED_STATE: self._line.set_planned}
        for tag, c in self._line_counters.items():
            line_tags[tag] = c.update
        for role in layout.counted_roles:
            line_tags[Tag.HEADCOUNT_PREFIX + role] = self._line.headcount(role)
        self._dispatch[layout.line] = line_tags

    def feed(self, record: Record) -> None:
        """Take one record (Samples of unknown assets or tags, and Events, are ignored)."""
        if type(record) is not Sample:
            return
        tags = self._dispatch.get(record.asset)
        if tags is None:
            return
        handler = tags.get(record.tag)
        t = record.t
        if handler is None or t > self.end:
            return
        if t > self._last_t:
            self._last_t = t
        self._apply(handler, t, None if record.quality == _BAD else record.value)

    def feed_many(self, records: Iterable[Record]) -> None:
        """Take records in time order; the same as calling :meth:`feed` on each."""
        # feed() inlined with locals: this loop is the hot path of batch runs
        dispatch_get = self._dispatch.get
        end = self.end
        last_t = self._last_t
        try:
            for record in records:
                if type(record) is not Sample:
                    continue
                tags = dispatch_get(record.asset)
                if tags is None:
                    continue
                handler = tags.get(record.tag)
                t = record.t
                if handler is None or t > end:
                    continue
                if t > last_t:
                    last_t = t
                try:
                    handler(t, None if record.quality == _BAD else record.value)
                except (TypeError, ValueError):  # a value that is no number: as good as Bad
                    handler(t, None)
        finally:
            self._last_t = last_t

    def feed_columns(self, times: Sequence[float], keys: Sequence[Hashable],
                     values: Sequence[Any], names: SampleNames) -> None:
        """Take Good-quality samples given as columns, in time order: sample ``i`` is at
        ``times[i]``, of the ``(asset, tag)`` that ``names(keys[i])`` gives, worth ``values[i]``;
        a key that ``names`` maps to None (an event, say) is skipped.

        The same as :meth:`feed_many` over the Samples the columns stand for, without
        building them (a simulator run keeps its rows so): ``names`` is asked once per
        distinct key.
        """
        dispatch_get = self._dispatch.get
        handlers: dict[Hashable, _Handler | None] = {}
        end = self.end
        last_t = self._last_t
        try:
            for t, key, value in zip(times, keys, values, strict=True):
                try:
                    handler = handlers[key]
                except KeyError:
                    handler = None
                    at = names(key)
                    if at is not None:
                        tags = dispatch_get(at[0])
                        if tags is not None:
                            handler = tags.get(at[1])
                    handlers[key] = handler
                if handler is None or t > end:
                    continue
                if t > last_t:
                    last_t = t
                try:
                    handler(t, value)
                except (TypeError, ValueError):  # a value that is no number: as good as Bad
                    handler(t, None)
        finally:
            self._last_t = last_t

    @staticmethod
    def _apply(handler: _Handler, t: float, value: Any) -> None:
        try:
            handler(t, value)
        except (TypeError, ValueError):  # a value that is no number: as good as Bad
            handler(t, None)

    def report(self, end: float) -> KpiReport:
        """KPIs of ``[start, end]``; ``end`` must not precede the last record fed."""
        if end < self._last_t:
            raise ValueError(
                f"report end {end:g} s precedes the last record fed ({self._last_t:g} s); "
                f"ask for a report at or after the latest record"
            )
        if end < self.start:
            raise ValueError(f"report end {end:g} s precedes the window start {self.start:g} s")
        end = min(end, self.end)
        return _derive(self, end)


def compute_kpis(
    records: Iterable[Record], layout: Layout, *, start: float = 0.0, end: float
) -> KpiReport:
    """KPIs of the window ``[start, end]`` from records in time order."""
    acc = KpiAccumulator(layout, start=start, end=end)
    acc.feed_many(records)
    return acc.report(end)


def compute_kpis_columns(
    times: Sequence[float], keys: Sequence[Hashable], values: Sequence[Any], names: SampleNames,
    layout: Layout, *, start: float = 0.0, end: float,
) -> KpiReport:
    """``compute_kpis`` of Good-quality samples given as columns (see
    :meth:`KpiAccumulator.feed_columns`): equal to it over the Samples they stand for."""
    acc = KpiAccumulator(layout, start=start, end=end)
    acc.feed_columns(times, keys, values, names)
    return acc.report(end)


# --------------------------------------------------------------------------- derivation


class _Sums:
    """Additive quantities of a station or a pool of stations."""

    __slots__ = (
        "apt", "defective", "energy", "failures", "fault_s", "ideal_s", "pbt", "processed",
        "unknown_s",
    )  # fmt: skip

    def __init__(self) -> None:
        self.pbt = self.apt = self.fault_s = self.ideal_s = self.unknown_s = 0.0
        self.processed = self.defective = self.failures = self.energy = 0.0

    def add(self, other: _Sums) -> None:
        self.pbt += other.pbt
        self.apt += other.apt
        self.fault_s += other.fault_s
        self.unknown_s += other.unknown_s
        self.ideal_s += other.ideal_s
        self.processed += other.processed
        self.defective += other.defective
        self.failures += other.failures
        self.energy += other.energy


def _div(num: float, den: float) -> float:
    return num / den if den > 0 else NAN


def _oee(a: float, p: float, q: float) -> float:
    # no APT in planned time means no output in it: OEE is 0, not undefined
    return 0.0 if a == 0.0 else a * p * q


def _station_sums(st: _Station, end: float, mix: Mapping[str, float]) -> _Sums:
    s = _Sums()
    pbt, apt, fault, unknown = st.open_segment(end)
    s.pbt, s.apt, s.fault_s = st.pbt + pbt, st.apt + apt, st.fault_s + fault
    s.unknown_s = st.unknown_s + unknown
    c = st.counters
    ict = st.layout.ideal_cycle_time
    attributed = attributed_gap = 0.0
    for product, counter in st.products.items():
        n = counter.delta
        attributed += n
        attributed_gap += counter.gap
        # units made in unknown time (counted across a Bad gap) have no APT: not in P
        s.ideal_s += ict[product] * (n - counter.gap)
    processed = c[Tag.PROCESSED]
    s.processed = max(processed.delta, attributed)
    # units without a per-product count take the mix-weighted ideal cycle time
    rest = s.processed - attributed
    rest -= min(rest, max(0.0, processed.gap - attributed_gap))
    if rest > 0 and ict:
        weights = {p: mix.get(p, 0.0) for p in ict}
        total = sum(weights.values())
        if total <= 0:
            weights, total = dict.fromkeys(ict, 1.0), float(len(ict))
        s.ideal_s += rest * sum(ict[p] * w for p, w in weights.items()) / total
    s.defective = c[Tag.DEFECTIVE].delta
    s.failures = c[Tag.FAILURES].delta
    s.energy = c[Tag.ENERGY].delta
    return s


def _kpis(s: _Sums) -> dict[str, float]:
    timed = s.pbt > 0  # a window without PBT leaves every time-based KPI undefined
    a = _div(s.apt, s.pbt)
    p = _div(s.ideal_s, s.apt) if timed else NAN
    q = max(0.0, _div(s.processed - s.defective, s.processed)) if s.processed > 0 else NAN
    return {
        "availability": a,
        "performance": p,
        "quality": q,
        "oee": _oee(a, p, q),
        "mtbf": _div(s.apt, s.failures) if timed else NAN,
        "mttr": _div(s.fault_s, s.failures) if timed else NAN,
        "failures": s.failures,
        "processed": s.processed,
        "energy_kwh": s.energy,
        "apt_h": s.apt / 3600.0,
        "pbt_h": s.pbt / 3600.0,
        "unknown_h": s.unknown_s / 3600.0,
    }


def _derive(acc: KpiAccumulator, end: float) -> KpiReport:
    layout = acc.layout
    stations: dict[str, dict[str, float]] = {}
    pools: dict[str, _Sums] = {stage: _Sums() for stage in layout.stage_order}
    everything = _Sums()
    inspected = passed = 0.0
    for st in acc._stations:
        sums = _station_sums(st, end, layout.mix)
        stations[st.layout.path] = _kpis(sums)
        pools.setdefault(st.layout.stage, _Sums()).add(sums)
        everything.add(sums)
        inspected += st.counters[Tag.INSPECTED].delta
        passed += st.counters[Tag.PASSED_FIRST].delta
    stages = {stage: _kpis(sums) for stage, sums in pools.items()}

    line = acc._line
    pbt_open, people_open, unknown_open = line.open_segment(end)
    pbt = line.pbt + pbt_open
    labour_h = (line.people_s + people_open) / 3600.0
    good = acc._line_counters[Tag.GOOD].delta
    scrap = acc._line_counters[Tag.SCRAP].delta
    output = acc._line_counters[Tag.LINE_OUTPUT].delta
    bottleneck = stages.get(layout.bottleneck_stage)
    timed = pbt > 0
    a = bottleneck["availability"] if bottleneck is not None and timed else NAN
    p = bottleneck["performance"] if bottleneck is not None and timed else NAN
    q = _div(good, good + scrap)
    window_h = (end - acc.start) / 3600.0
    return KpiReport(
        start=acc.start,
        end=end,
        line={
            "oee": _oee(a, p, q),
            "availability": a,
            "performance": p,
            "quality": q,
            "throughput": _div(good, window_h),
            "mtbf": _div(everything.apt, everything.failures) if timed else NAN,
            "mttr": _div(everything.fault_s, everything.failures) if timed else NAN,
            "scrap_ratio": _div(scrap, output + scrap),
            "first_pass_yield": _div(passed, inspected),
            "energy_per_good_unit": _div(everything.energy, good),
            "labour_productivity": _div(good, labour_h),
            "good_count": good,
            "scrap_count": scrap,
            "labour_hours": labour_h,
            "energy_kwh": everything.energy,
            "pbt_h": pbt / 3600.0,
            "unknown_h": (line.unknown_s + unknown_open) / 3600.0,
        },
        stages=stages,
        stations=stations,
    )
