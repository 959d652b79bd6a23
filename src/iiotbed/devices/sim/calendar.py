"""Production calendar: shifts, breaks and planned maintenance as time segments.

Segments are computed in the plant's time zone (``zoneinfo``) and expressed in seconds
since the scenario epoch. They are generated a week at a time on demand, so a live run can
go on past ``run.duration``.
"""

from __future__ import annotations

import datetime as dt
import math
from bisect import bisect_right
from itertools import pairwise
from zoneinfo import ZoneInfo

from iiotbed.scenario import Scenario
from iiotbed.telemetry import PlannedState

__all__ = ["EPS", "ProductionCalendar", "Segment"]

EPS = 1e-9  # a boundary reached up to this much early counts as reached (float sums)
_WEEK = 7 * 86400.0
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

Segment = tuple[float, float, PlannedState, bool]  # start, end, state, people on shift


class ProductionCalendar:
    """Planned state of the line at any time: ``segment_at(t)`` and the next production start."""

    def __init__(self, scenario: Scenario) -> None:
        self._cal = scenario.calendar
        self._zone = ZoneInfo(scenario.plant.timezone)
        self._epoch = scenario.plant.epoch.astimezone(dt.UTC)
        self._starts: list[float] = []
        self.segments: list[Segment] = []
        self._until = 0.0
        # the last segment found: most queries fall in it (a station asks once per stretch)
        self._last: Segment = (math.inf, math.inf, PlannedState.OffShift, False)

    # ------------------------------------------------------------------ queries

    def segment_at(self, t: float) -> Segment:
        """The segment holding time ``t`` (a boundary belongs to the later segment)."""
        t += EPS
        last = self._last
        if last[0] <= t < last[1]:
            return last
        while t >= self._until:
            self._extend()
        self._last = last = self.segments[bisect_right(self._starts, t) - 1]
        return last

    def production_end(self, t: float) -> float | None:
        """End of the production window holding ``t``; None if ``t`` is not in production."""
        _, end, state, _ = self.segment_at(t)
        return end if state is PlannedState.Production else None

    def next_production(self, t: float) -> float:
        """Start of the first production window at or after ``t`` (``t`` if in one)."""
        for _ in range(10_000):
            start, end, state, _ = self.segment_at(t)
            if state is PlannedState.Production:
                return max(t, start)
            t = end
        raise ValueError("the calendar has no production time; add a shift on a workday")

    # ------------------------------------------------------------------ construction

    def _abs(self, day: dt.date, seconds: float) -> float:
        local = dt.datetime.combine(day, dt.time(), tzinfo=self._zone) + dt.timedelta(
            seconds=seconds
        )
        # subtract in UTC: same-zone subtraction of aware datetimes ignores DST changes
        return (local.astimezone(dt.UTC) - self._epoch).total_seconds()

    def _extend(self) -> None:
        self._last = (math.inf, math.inf, PlannedState.OffShift, False)  # the last segment may grow
        a, b = self._until, self._until + _WEEK
        first = (self._epoch + dt.timedelta(seconds=a)).astimezone(self._zone).date()
        days = [first + dt.timedelta(days=k) for k in range(-2, 10)]
        shifts: list[tuple[float, float]] = []
        for day in days:
            if _WEEKDAYS[day.weekday()] not in self._cal.workdays:
                continue
            for s in self._cal.shifts:
                start = self._abs(day, s.start_s)
                shifts.append((start, start + s.length_s))
        breaks = [
            (self._abs(day, br.start_s), self._abs(day, br.start_s) + br.duration)
            for day in days
            for br in self._cal.breaks
        ]
        pms = [
            (self._abs(day, pm.start_s), self._abs(day, pm.start_s) + pm.duration)
            for day in days
            for pm in self._cal.planned_maintenance
            if day.weekday() == pm.weekday
        ]
        cuts = {a, b}
        for lo_, hi_ in shifts + breaks + pms:
            cuts.update(x for x in (lo_, hi_) if a < x < b)
        points = sorted(cuts)

        def inside(spans: list[tuple[float, float]], t: float) -> bool:
            return any(s <= t < e for s, e in spans)

        for lo, hi in pairwise(points):
            mid = (lo + hi) / 2
            on_shift = inside(shifts, mid)
            if inside(pms, mid):
                state = PlannedState.PlannedMaintenance
            elif not on_shift:
                state = PlannedState.OffShift
            elif inside(breaks, mid):
                state = PlannedState.Break
            else:
                state = PlannedState.Production
            last = self.segments[-1] if self.segments else None
            if last is not None and last[2] is state and last[3] == on_shift:
                self.segments[-1] = (last[0], hi, state, on_shift)
            else:
                self.segments.append((lo, hi, state, on_shift))
                self._starts.append(lo)
        self._until = b
