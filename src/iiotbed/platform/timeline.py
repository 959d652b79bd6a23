"""A live state timeline: each station's KPI time elements per time bucket, and its state.

The dashboard's timeline strips come from here. It runs the KPI
engine's own station and line clocks (:mod:`iiotbed.platform._integrate`), so a strip's
Executing share over the planned time is the station's availability, by construction:

* ``apt`` — Executing within planned busy time (outside Setup and Maintenance);
* ``fault`` — planned busy time with the Fault flag set;
* ``pbt - apt - fault`` — planned, known, neither (starved, blocked, setup, ...);
* ``span - pbt`` — not planned, or the state not known.

Fed with samples in time order (the ingest feeds it beside the
:class:`~iiotbed.platform.kpi.KpiAccumulator`); a sample of another asset or tag is ignored.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from iiotbed.platform._integrate import LineClock, Rates, StationClock
from iiotbed.platform.layout import Layout
from iiotbed.telemetry import Quality, Sample, Tag

__all__ = ["TIMELINE_TAGS", "StateTimeline", "StationTimeline"]

#: the tags a timeline reads (of the stations, and the line's PlannedState)
TIMELINE_TAGS: tuple[str, ...] = (Tag.ITEM_STATE, Tag.OPERATION_MODE, Tag.FAULT, Tag.PLANNED_STATE)

_Handler = Callable[[float, Any], None]


class StationTimeline(StationClock):
    """One station: (PBT, APT, fault) seconds per bucket.

    Kept as one flat array of doubles, ``[pbt, apt, fault]`` of bucket ``i`` at ``3 i``:
    24 bytes per bucket rather than a dict entry and a list of three floats (about 250),
    so a run of a month at 1x holds a few MB for the dashboard's strips, not a few hundred.
    Time before t = 0 is never drawn (:meth:`StateTimeline.columns` starts at 0): not kept.
    """

    __slots__ = ("bucket_s", "buckets")

    def __init__(self, bucket_s: float) -> None:
        super().__init__()
        self.bucket_s = bucket_s
        self.buckets = array("d")  # [pbt, apt, fault] per bucket index, from bucket 0

    def credit(self, t0: float, t1: float, rates: Rates) -> None:
        _spread(self.buckets, self.bucket_s, t0, t1, rates)

    def items(self) -> Iterator[tuple[int, float, float, float]]:
        """``(index, pbt, apt, fault)`` of every bucket from 0 to the newest credited."""
        b = self.buckets
        for i in range(len(b) // 3):
            j = 3 * i
            yield i, b[j], b[j + 1], b[j + 2]


class _Line(LineClock):
    def credit(self, t0: float, t1: float) -> None:
        pass  # the line's own time is not drawn; its PlannedState moves the stations


class StateTimeline:
    """Every station of ``layout``, in buckets of ``bucket_s`` sim seconds from t = 0."""

    def __init__(self, layout: Layout, bucket_s: float = 300.0) -> None:
        if not bucket_s > 0:
            raise ValueError(f"bucket_s must be > 0, got {bucket_s}")
        self.bucket_s = float(bucket_s)
        self.stations = {s.path: StationTimeline(self.bucket_s) for s in layout.stations}
        self._line = _Line(self.stations.values())
        self._dispatch: dict[str, dict[str, _Handler]] = {
            path: {
                Tag.ITEM_STATE: st.set_item,
                Tag.OPERATION_MODE: st.set_mode,
                Tag.FAULT: st.set_fault,
            }
            for path, st in self.stations.items()
        }
        self._dispatch[layout.line] = {Tag.PLANNED_STATE: self._line.set_planned}

    def feed(self, s: Sample) -> None:
        """Take one sample (in time order, like the KPI engine)."""
        tags = self._dispatch.get(s.asset)
        if tags is None:
            return
        handler = tags.get(s.tag)
        if handler is None:
            return
        value = None if s.quality == Quality.Bad else s.value
        try:
            handler(s.t, value)
        except (TypeError, ValueError):  # no number: as good as Bad, as in the engine
            handler(s.t, None)

    def feed_many(self, samples: Iterable[Sample]) -> None:
        """:meth:`feed` each of ``samples`` (in time order)."""
        for s in samples:
            self.feed(s)

    def columns(self, path: str, end: float, every: float) -> list[list[float]]:
        """``[t, span, pbt, apt, fault]`` (s) per column of ``every`` s over ``[0, end]``.

        ``every`` is rounded up to a whole number of buckets; the open stretch counts to
        ``end``. Unknown ``path``: no columns.
        """
        st = self.stations.get(path)
        if st is None or end <= 0:
            return []
        per = max(1, math.ceil(every / self.bucket_s - 1e-9))
        width = per * self.bucket_s
        n = math.ceil(end / width - 1e-9)
        cols = [[k * width, min(width, end - k * width), 0.0, 0.0, 0.0] for k in range(n)]
        for i, pbt, apt, fault in st.items():
            k = i // per
            if 0 <= k < n:
                c = cols[k]
                c[2] += pbt
                c[3] += apt
                c[4] += fault
        if st.since < end:
            open_part = array("d")
            _spread(open_part, width, max(st.since, 0.0), end, st.rates)
            for k in range(min(n, len(open_part) // 3)):
                c = cols[k]
                c[2] += open_part[3 * k]
                c[3] += open_part[3 * k + 1]
                c[4] += open_part[3 * k + 2]
        return cols


def _spread(buckets: array[float], width: float, t0: float, t1: float, rates: Rates) -> None:
    """Credit ``[t0, t1)`` at ``rates`` to the buckets of ``width`` it overlaps (``buckets``:
    ``[pbt, apt, fault]`` per bucket index, grown as needed; time before 0 left out)."""
    pbt, apt, fault = rates
    if not (pbt or apt or fault):
        return
    t = t0
    while t < t1:
        i = math.floor(t / width)
        if (i + 1) * width <= t:  # float rounding put t at the next bucket's start
            i += 1
        hi = min(t1, (i + 1) * width)
        d = hi - t
        t = hi
        if i < 0:
            continue
        j = 3 * i
        if j >= len(buckets):
            buckets.extend([0.0] * (j + 3 - len(buckets)))
        buckets[j] += d * pbt
        buckets[j + 1] += d * apt
        buckets[j + 2] += d * fault
