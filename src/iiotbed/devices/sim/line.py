"""The line asset: the unit source, the calendar's planned state, output counters, headcount.

GoodCount counts units leaving the line that passed every inspection (an undetected
defective unit among them is also counted in ``EscapedDefects``); ScrapCount counts units
scrapped anywhere on the line; OutputCount counts every unit leaving the end of the line
(equal to GoodCount in this model, since escaped defects leave as good units).
``ReleasedCount`` counts units entered into the first buffer. On a line without inspection
a defective unit is scrapped at the last station.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Generator, Sequence
from itertools import accumulate
from typing import Any, Protocol

import simpy

from iiotbed.devices.sim._round import round6
from iiotbed.devices.sim._signals import Context, Counter, Signal
from iiotbed.devices.sim._simpy import now_of
from iiotbed.devices.sim.calendar import EPS
from iiotbed.devices.sim.units import Buffer, Unit
from iiotbed.telemetry import EventName, PlannedState, Tag

__all__ = ["LineModel", "Planned", "headcount_roles"]

_Proc = Generator[simpy.Event, Any, None]


class Planned(Protocol):
    """What the calendar tells of each change of planned state (a station)."""

    def set_planned(self, planned: PlannedState) -> None: ...


def headcount_roles(ctx: Context) -> dict[str, int]:
    """People per shift by role (see ``scenario.Labour``)."""
    sc = ctx.scenario
    roles = {
        "operators": sum(s.operators_per_station * len(s.station_names) for s in sc.line.stages),
        "inspectors": sum(
            s.inspection.inspectors_per_station * len(s.station_names)
            for s in sc.line.stages
            if s.inspection is not None and s.inspection.method == "manual"
        ),
        "handlers": sc.supply.manual.handlers
        if sc.supply is not None and sc.supply.mode == "manual" and sc.supply.manual else 0,
        "technicians": sc.technicians.count,
        "amr_supervisors": sc.supply.amr.supervisors
        if sc.supply is not None and sc.supply.mode == "amr" and sc.supply.amr else 0,
    }
    roles.update(sc.labour.other)
    return roles


class LineModel:
    """Line-level tags and processes (source and calendar)."""

    def __init__(self, ctx: Context, first: Buffer) -> None:
        sc = ctx.scenario
        self.ctx, self.env, self.first = ctx, ctx.env, first
        self.path = path = sc.line_path
        self.prefix = sc.plant.id_prefix
        self.has_inspection = any(s.inspection is not None for s in sc.line.stages)
        seg = ctx.calendar.segment_at(0.0)
        self.planned = Signal(ctx, path, Tag.PLANNED_STATE, int(seg[2]))
        self.good = Counter(ctx, path, Tag.GOOD)
        self.scrap = Counter(ctx, path, Tag.SCRAP)
        self.output = Counter(ctx, path, Tag.LINE_OUTPUT)
        self.escaped = Counter(ctx, path, "EscapedDefects")
        self.released = Counter(ctx, path, "ReleasedCount")
        # what a unit leaving the line counts, good (False) or an escaped defect (True)
        self._exit_counters = {False: (self.good, self.output),
                               True: (self.good, self.output, self.escaped)}
        self.roles = headcount_roles(ctx)
        self.headcount = {
            r: Signal(ctx, path, Tag.HEADCOUNT_PREFIX + r, n if seg[3] else 0, "C62")
            for r, n in self.roles.items()
        }
        self.stations: Sequence[Planned] = ()  # told of calendar changes, in line order
        self.names = [p.name for p in sc.products]
        self._cum = list(accumulate(p.mix for p in sc.products))
        self._serial = [0] * len(sc.products)
        self._mix = ctx.uniforms("source/product")
        ia = sc.line.source.interarrival
        self._interarrival = ctx.sampler("source/interarrival", ia) if ia is not None else None
        self.env.process(self._calendar())
        self.env.process(self._source())

    # ------------------------------------------------------------------ exits

    def produced(self, unit: Unit) -> None:
        now, emit = now_of(self.env), self.ctx.emit
        for c in self._exit_counters[unit.defective]:  # Counter.inc inlined
            c.value = n = c.value + 1  # type: ignore[operator]  # a counter holds an int
            emit((now, c, n))
        self.ctx.event(self.path, EventName.UNIT_PRODUCED, {
            "unit": unit.id, "product": self.names[unit.product], "stations": unit.stations,
            "released": round6(unit.released), "waits": list(map(round6, unit.waits)),
            "escaped_defect": unit.defective})

    def scrapped(self, unit: Unit, at: str, origin: str) -> None:
        """``unit`` scrapped at the station at path ``at``; ``origin`` names its culprit."""
        self.scrap.inc()
        self.ctx.event(at, EventName.UNIT_SCRAPPED, {
            "unit": unit.id, "product": self.names[unit.product], "origin": origin,
            "stations": unit.stations, "released": round6(unit.released)})

    # ------------------------------------------------------------------ processes

    def _calendar(self) -> _Proc:
        env, cal = self.env, self.ctx.calendar
        while True:
            _, end, state, on_shift = cal.segment_at(env.now)
            self.planned.set(int(state))
            for r, n in self.roles.items():
                self.headcount[r].set(n if on_shift else 0)
            for s in self.stations:
                s.set_planned(state)
            yield env.timeout(end - env.now)

    def _new_unit(self) -> Unit:
        k = bisect_right(self._cum, self._mix.draw() * self._cum[-1]) if len(self._cum) > 1 else 0
        k = min(k, len(self._cum) - 1)
        self._serial[k] += 1
        return Unit(f"{self.prefix}/{self.names[k]}-{self._serial[k]}", k, self.env.now)

    def _source(self) -> _Proc:
        env, buf, cal = self.env, self.first, self.ctx.calendar
        emit, released = self.ctx.emit, self.released
        while True:
            if self._interarrival is not None:
                # interarrival times run in production time: no arrivals off shift or on breaks
                left = self._interarrival()
                while left > EPS:
                    end = cal.production_end(env.now)
                    if end is None:
                        yield env.timeout(cal.next_production(env.now) - env.now)
                        continue
                    h = min(left, end - env.now)
                    yield env.timeout(h)
                    left -= h
            unit = self._new_unit()
            yield buf.store.put(unit)
            unit.released = unit.t_in = now = now_of(env)
            level, v = buf.level, len(buf.items)  # buf.level.set(len(buf.items)) inlined
            if v != level.value:
                level.value = v
                emit((now, level, v))
            released.value = n = released.value + 1  # type: ignore[operator]  # .inc()
            emit((now, released, n))
