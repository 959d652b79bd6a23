"""The production calendar of a scenario: shifts, daily breaks, weekly planned maintenance."""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from iiotbed.scenario._base import Model, Name
from iiotbed.scenario.durations import PosSeconds

__all__ = ["Break", "Calendar", "MaintenanceWindow", "Shift", "Weekday"]

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY = 86400.0
_WEEK = 7 * _DAY
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


def _clock(value: str) -> float:
    m = _HHMM.match(value)
    if m is None:
        raise ValueError(f"expected a time of day HH:MM (00:00-23:59), got {value!r}")
    return int(m.group(1)) * 3600.0 + int(m.group(2)) * 60.0


def _valid_clock(value: str) -> str:
    _clock(value)
    return value


TimeOfDay = Annotated[str, AfterValidator(_valid_clock)]
"""A local time of day ``HH:MM`` (00:00-23:59), kept as written."""


class Shift(Model):
    name: Name
    start: TimeOfDay
    end: TimeOfDay

    @property
    def start_s(self) -> float:
        return _clock(self.start)

    @property
    def length_s(self) -> float:
        """Length in seconds; a shift whose end is not after its start crosses midnight."""
        s, e = _clock(self.start), _clock(self.end)
        return e - s if e > s else e + 86400.0 - s


class Break(Model):
    """A daily break at a local time of day (planned downtime)."""

    start: TimeOfDay
    duration: PosSeconds

    @property
    def start_s(self) -> float:
        return _clock(self.start)


class MaintenanceWindow(Model):
    """A weekly planned-maintenance window (planned downtime), the line stopped."""

    day: Weekday
    start: TimeOfDay
    duration: PosSeconds

    @property
    def weekday(self) -> int:
        return _WEEKDAYS.index(self.day)

    @property
    def start_s(self) -> float:
        return _clock(self.start)


class Calendar(Model):
    """Shifts (planned operation time), daily breaks and weekly planned maintenance.

    A shift runs on the listed workdays, by the day it starts on. A calendar must leave
    some production time: shifts that breaks and maintenance cover entirely are refused.
    """

    shifts: list[Shift] = Field(min_length=1)
    breaks: list[Break] = Field(default_factory=list)
    workdays: list[Weekday] = Field(default_factory=lambda: list(_WEEKDAYS), min_length=1)
    planned_maintenance: list[MaintenanceWindow] = Field(default_factory=list)

    @model_validator(mode="after")
    def _no_overlap(self) -> Self:
        spans = sorted((s.start_s, s.start_s + s.length_s, s.name) for s in self.shifts)
        wrapped = [*spans, (spans[0][0] + 86400.0, spans[0][1] + 86400.0, spans[0][2])]
        for (_s0, e0, n0), (s1, _e1, n1) in itertools.pairwise(wrapped):
            if e0 > s1 + 1e-9 and n0 != n1:
                raise ValueError(f"shifts {n0!r} and {n1!r} overlap; shifts must not overlap")
        return self

    @model_validator(mode="after")
    def _has_production(self) -> Self:
        # every KPI divides by planned time: a calendar without any would make them all
        # undefined (or 0.0) and leave the simulated line waiting forever for a shift
        if self.production_per_week() > 1e-6:  # float sums of covered spans
            return self
        cause = (
            "daily breaks cover every shift"
            if not self.planned_maintenance or _uncovered(self._shifts(), self._breaks()) == 0
            else "daily breaks and planned maintenance cover every shift"
        )
        raise ValueError(
            f"no production time: {cause}; expected at least part of a "
            f"shift on a workday ({', '.join(self.workdays)}) outside breaks and maintenance"
        )

    def production_per_week(self) -> float:
        """Seconds of production (shift time outside breaks and maintenance) in a week.

        Counted on the local clock, Monday 00:00 = 0; a DST change shifts it by its hour.
        """
        return _uncovered(self._shifts(), self._breaks() + self._maintenance())

    def _shifts(self) -> list[tuple[float, float]]:
        return [
            (_WEEKDAYS.index(day) * _DAY + s.start_s, s.length_s)
            for day in dict.fromkeys(self.workdays)
            for s in self.shifts
        ]

    def _breaks(self) -> list[tuple[float, float]]:
        return [(k * _DAY + b.start_s, b.duration) for k in range(7) for b in self.breaks]

    def _maintenance(self) -> list[tuple[float, float]]:
        return [(pm.weekday * _DAY + pm.start_s, pm.duration) for pm in self.planned_maintenance]


def _on_week(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(start, length) spans as [a, b) intervals of one week, wrapped at its end, merged."""
    out: list[tuple[float, float]] = []
    for start, length in spans:
        if length >= _WEEK:
            return [(0.0, _WEEK)]
        a = start % _WEEK
        b = a + length
        out += [(a, min(b, _WEEK))] + ([(0.0, b - _WEEK)] if b > _WEEK else [])
    merged: list[tuple[float, float]] = []
    for a, b in sorted(out):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def _uncovered(spans: list[tuple[float, float]], cover: list[tuple[float, float]]) -> float:
    """Seconds of a week inside ``spans`` and outside ``cover`` (both (start, length))."""
    holes = _on_week(cover)
    total = 0.0
    for a, b in _on_week(spans):
        covered = sum(max(0.0, min(b, hb) - max(a, ha)) for ha, hb in holes)
        total += (b - a) - covered
    return total
