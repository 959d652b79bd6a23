"""How telemetry integrates into KPI quantities: the rules, written once.

The KPI engine (:mod:`iiotbed.platform.kpi`: one window, in memory) and the store's
rollups (:mod:`iiotbed.platform.store._rollup`: hour buckets, at ingest) both run the
clocks below; they differ only in where a closed stretch of time is credited.

* A state value is ``int(value)``; Bad, or a value that is no number, is *unknown*.
* A station's time is PBT while the line's PlannedState is Production and its ItemState is
  known; APT while moreover Executing, outside the Setup and Maintenance modes; fault time
  while moreover its Fault is set; *unknown* time while the line is in Production and a
  sample has made its ItemState unknown (counted apart, never as PBT).
* The line's time is planned (PBT) while its PlannedState is Production, unknown while a
  sample has made its PlannedState unknown; person-seconds are the headcount (Bad or no
  number: nobody) times the seconds.
* A state record closes the stretch before it; a record older than the open stretch (out
  of order) takes effect at the stretch's start.
* A counter's base is its largest Good value at or before the window start (0 when none),
  its last the largest Good value up to the end; its quantity is ``last - base``. What the
  first Good value after a Bad mark adds was made in unknown time: it counts in the
  quantity but not in performance, whose APT leaves that time out too.

``docs/kpis.md`` explains each rule with its reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Final, cast

from iiotbed.telemetry import ItemState, OperationMode, PlannedState, Tag

__all__ = [
    "LINE_COUNTERS",
    "STATION_COUNTERS",
    "UNKNOWN",
    "Counter",
    "LineClock",
    "Rates",
    "StationClock",
    "headcount",
    "state_value",
]

EXECUTING: Final = int(ItemState.Executing)
PRODUCTION: Final = int(PlannedState.Production)
NOT_APT_MODES: Final = frozenset({int(OperationMode.Setup), int(OperationMode.Maintenance)})

STATION_COUNTERS: Final = (
    Tag.PROCESSED,
    Tag.DEFECTIVE,
    Tag.FAILURES,
    Tag.ENERGY,
    Tag.INSPECTED,
    Tag.PASSED_FIRST,
)
"""The counters a station's KPIs take their quantities from."""
LINE_COUNTERS: Final = (Tag.GOOD, Tag.SCRAP, Tag.LINE_OUTPUT)
"""The counters the line's KPIs take their quantities from."""

Rates = tuple[float, float, float]
"""(PBT, APT, fault) seconds per second of a station's open stretch."""

IDLE: Final[Rates] = (0.0, 0.0, 0.0)
# Planned time with the ItemState unknown: no PBT, APT or fault, like IDLE, but credited so
# that a clock may count it apart. A distinct object told from IDLE by identity: clocks
# that do not count unknown time (the timeline) take it as zeros and need no change.
UNKNOWN: Final[Rates] = cast("Rates", tuple([0.0, 0.0, 0.0]))  # a new object, not IDLE
# indexed by (APT, fault): one shared tuple per state, no allocation per state change
_RATES: Final[tuple[tuple[Rates, Rates], tuple[Rates, Rates]]] = (
    ((1.0, 0.0, 0.0), (1.0, 0.0, 1.0)),
    ((1.0, 1.0, 0.0), (1.0, 1.0, 1.0)),
)


def state_value(value: Any) -> int | None:
    """A state tag's value: ``int(value)``, None when Bad (None) or no number."""
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def headcount(value: Any) -> float:
    """People present by a Headcount value; Bad or no number counts as nobody."""
    if value is None:
        return 0.0
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


class StationClock:
    """One station's state as the time elements see it.

    Subclasses implement :meth:`credit`, called with each closed stretch that counts.
    """

    __slots__ = ("bad", "blocked", "fault", "item", "planned", "rates", "since")

    def __init__(self) -> None:
        self.since = -math.inf  # start of the open stretch
        self.planned = False  # the line in Production
        self.item: int | None = None  # unknown until a Good sample says otherwise
        self.bad = False  # a sample made the item state unknown (not merely none yet)
        self.blocked = False  # Setup or Maintenance mode: Executing is not APT
        self.fault = False
        self.rates = IDLE

    def credit(self, t0: float, t1: float, rates: Rates) -> None:
        """Take ``[t0, t1)`` spent at ``rates`` (never :data:`IDLE`; :data:`UNKNOWN` when
        planned with the item state unknown)."""
        raise NotImplementedError

    def advance(self, t: float) -> None:
        """Close the open stretch at ``t`` (a time before its start changes nothing)."""
        since = self.since
        if t > since:
            rates = self.rates
            if rates is not IDLE:
                self.credit(since, t, rates)
            self.since = t

    # The setters below inline state_value(), advance() and the choice of rates: they run
    # once per state record, in batch KPIs and at every ingest, and calls cost more there
    # than the rest. Each ends in the same rule: rates are IDLE unless planned and known
    # (UNKNOWN when planned and a sample made the item state unknown).

    def set_item(self, t: float, value: Any) -> None:
        try:
            item = None if value is None else int(value)
        except (TypeError, ValueError, OverflowError):
            item = None
        since = self.since
        if t > since:
            if self.rates is not IDLE:
                self.credit(since, t, self.rates)
            self.since = t
        self.item = item
        self.bad = item is None
        self.rates = (
            (_RATES[item == EXECUTING and not self.blocked][self.fault] if item is not None
             else UNKNOWN)
            if self.planned and (item is not None or self.bad)
            else IDLE
        )  # fmt: skip

    def set_mode(self, t: float, value: Any) -> None:
        try:
            blocked = value is not None and int(value) in NOT_APT_MODES
        except (TypeError, ValueError, OverflowError):
            blocked = False
        since = self.since
        if t > since:
            if self.rates is not IDLE:
                self.credit(since, t, self.rates)
            self.since = t
        self.blocked = blocked
        item = self.item
        self.rates = (
            (_RATES[item == EXECUTING and not blocked][self.fault] if item is not None
             else UNKNOWN)
            if self.planned and (item is not None or self.bad)
            else IDLE
        )  # fmt: skip

    def set_fault(self, t: float, value: Any) -> None:
        try:
            fault = value is not None and int(value) != 0
        except (TypeError, ValueError, OverflowError):
            fault = False
        since = self.since
        if t > since:
            if self.rates is not IDLE:
                self.credit(since, t, self.rates)
            self.since = t
        self.fault = fault
        item = self.item
        self.rates = (
            (_RATES[item == EXECUTING and not self.blocked][fault] if item is not None
             else UNKNOWN)
            if self.planned and (item is not None or self.bad)
            else IDLE
        )  # fmt: skip

    def set_planned(self, t: float, planned: bool) -> None:
        self.advance(t)
        self.planned = planned
        self._rerate()

    def _rerate(self) -> None:
        item = self.item
        self.rates = (
            (_RATES[item == EXECUTING and not self.blocked][self.fault] if item is not None
             else UNKNOWN)
            if self.planned and (item is not None or self.bad)
            else IDLE
        )  # fmt: skip


class LineClock:
    """The line's planned state and headcount; a PlannedState change moves its stations.

    Subclasses implement :meth:`credit`, called with every closed stretch.
    """

    __slots__ = ("heads", "planned", "roles", "since", "stations", "unknown")

    def __init__(self, stations: Iterable[StationClock]) -> None:
        self.stations = stations
        self.since = -math.inf
        self.planned = False
        self.unknown = False  # a sample made the PlannedState unknown (not merely none yet)
        self.roles: dict[str, float] = {}  # role -> people present
        self.heads = 0.0  # sum of roles

    def credit(self, t0: float, t1: float) -> None:
        """Take ``[t0, t1)``, spent with ``planned``, ``unknown`` and ``roles`` as they are."""
        raise NotImplementedError

    def advance(self, t: float) -> None:
        """Close the open stretch at ``t`` (a time before its start changes nothing)."""
        if t > self.since:
            self.credit(self.since, t)
            self.since = t

    def set_planned(self, t: float, value: Any) -> None:
        state = state_value(value)
        planned = state == PRODUCTION
        self.advance(t)
        self.unknown = state is None
        if planned != self.planned:
            for s in self.stations:
                s.set_planned(t, planned)
            self.planned = planned

    def set_heads(self, t: float, role: str, value: Any) -> None:
        n = headcount(value)
        self.advance(t)
        self.heads += n - self.roles.get(role, 0.0)
        self.roles[role] = n


class Counter:
    """A monotonic counter: largest Good value at or before the window start, and latest.

    Units counted across a Bad gap were made partly while nothing was known: the first Good
    value after a Bad mark adds ``v - last``, made between the last Good value and ``v``;
    the share of that stretch under the Bad mark goes to ``gap`` (inside the window), so
    performance can leave those units out as APT leaves out the unknown time.
    """

    __slots__ = ("bad_t", "base", "gap", "good_t", "last", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.base = 0.0  # no value before the start: the counter is taken as zero
        self.last = 0.0
        self.good_t = -math.inf  # time of the newest Good value
        self.gap = 0.0  # units counted across Bad gaps, the share made under the mark
        self.bad_t: float | None = None  # time of the open Bad mark

    def update(self, t: float, value: Any) -> None:
        if value is None:  # Bad: the counter did not move as far as we know
            if self.bad_t is None or t > self.bad_t:
                self.bad_t = t
            return
        v = float(value)  # no number: ValueError, which the engine takes as Bad
        bad_t = self.bad_t
        if bad_t is not None and t > bad_t:  # (a value dated before the mark was in transit)
            self.bad_t = None
            if t > self.start and v > self.last:
                span = t - self.good_t  # inf without a Good value before: all under the mark
                share = 1.0 if span == math.inf else min(1.0, (t - bad_t) / span)
                self.gap += (v - self.last) * share
        if t > self.good_t:
            self.good_t = t
        # max(): a resent older value (same t, ties in any order) cannot move a counter back
        if v > self.last:
            self.last = v
        if t <= self.start and v > self.base:
            self.base = v

    @property
    def delta(self) -> float:
        return self.last - self.base
