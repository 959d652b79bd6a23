"""The store contract: records of runs kept in a database, the same API on every backend.

Samples are deduplicated on their identity (run, asset, tag, t, value, quality), the
fields :func:`iiotbed.protocols.uns.sample_id` hashes, so a resend, a replayed buffer or an
overlapping batch is stored once.
Times ``t`` are seconds since the scenario epoch, as in :mod:`iiotbed.telemetry`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from abc import abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from iiotbed._aio import AsyncClosing
from iiotbed.platform.kpi import KpiAccumulator, KpiReport
from iiotbed.platform.layout import Layout
from iiotbed.telemetry import Event, Sample

__all__ = ["Agg", "AssetInfo", "Counts", "Point", "RunInfo", "Store", "epoch_seconds"]

Agg = Literal["last", "mean", "min", "max", "count"]
AGGS: frozenset[str] = frozenset({"last", "mean", "min", "max", "count"})


@dataclass(frozen=True)
class RunInfo:
    """One run of a scenario: what was run, when, and what it is compared against.

    ``epoch`` is the scenario epoch (ISO 8601 with offset); stored samples get an absolute
    ``source_ts = epoch + t``. ``speed`` None means as fast as possible (batch).
    ``answer_key`` holds the simulator's own KPIs (``KpiReport.to_dict()``).
    """

    run_id: str
    scenario: str
    scenario_file: str | None = None
    scenario_hash: str | None = None
    epoch: str | None = None
    seed: int | None = None
    replication: int = 0
    speed: float | None = None
    started: dt.datetime | None = None
    ended: dt.datetime | None = None
    status: str = "running"
    baseline_run_id: str | None = None
    goal: float | None = None
    answer_key: Mapping[str, Any] | None = field(default=None, hash=False)


@dataclass(frozen=True)
class AssetInfo:
    """One asset of the plant: ISA-95 path, kind (station, line, buffer, amr...), stage."""

    path: str
    kind: str
    stage: str | None = None
    identification: Mapping[str, Any] = field(default_factory=dict, hash=False)


class Point(NamedTuple):
    """One point of a time series: time (bucket start when downsampled) and value."""

    t: float
    value: float | str | None


class Counts(NamedTuple):
    """How much a run holds; ``first_t``/``last_t`` are None when it holds no samples."""

    samples: int
    events: int
    first_t: float | None
    last_t: float | None


def epoch_seconds(epoch: str | None) -> float:
    """Unix seconds of an ISO 8601 epoch with offset; 0.0 when unknown."""
    if not epoch:
        return 0.0
    d = dt.datetime.fromisoformat(epoch)
    if d.tzinfo is None:
        raise ValueError(
            f"run epoch {epoch!r} has no UTC offset; write it like 2026-01-05T00:00:00+08:00"
        )
    return d.timestamp()


def check_query(every: float | None, agg: str) -> None:
    if agg not in AGGS:
        raise ValueError(f"agg must be one of {sorted(AGGS)}, got {agg!r}")
    if every is not None and not (every > 0 and math.isfinite(every)):
        raise ValueError(f"every must be a positive number of seconds, got {every!r}")


class Store(AsyncClosing):
    """A store of samples, events, runs and assets; open and close it with ``async with``."""

    url: str

    @abstractmethod
    async def open(self) -> None:
        """Connect and create the schema if it is missing."""

    @abstractmethod
    async def close(self) -> None:
        """Flush and disconnect; safe to call twice."""

    @abstractmethod
    async def write_samples(self, samples: Sequence[Sample], run_id: str) -> int:
        """Store samples of one run in one transaction; returns rows newly inserted."""

    @abstractmethod
    async def write_events(self, events: Sequence[Event], run_id: str) -> int:
        """Store events of one run; returns rows newly inserted."""

    @abstractmethod
    async def upsert_run(self, run: RunInfo) -> None:
        """Insert a run or replace every field of the stored one."""

    @abstractmethod
    async def get_run(self, run_id: str) -> RunInfo | None:
        """The run, or None when unknown."""

    @abstractmethod
    async def list_runs(self) -> list[RunInfo]:
        """Every run, oldest start first."""

    @abstractmethod
    async def upsert_assets(self, assets: Sequence[AssetInfo]) -> None:
        """Insert assets or replace the stored ones with the same path."""

    @abstractmethod
    async def assets(self, prefix: str | None = None) -> list[AssetInfo]:
        """Assets at or below ``prefix`` (every asset when None), by path."""

    @abstractmethod
    async def latest(self, run_id: str, asset_prefix: str | None = None) -> list[Sample]:
        """The latest sample (largest t, then last inserted) of every asset/tag of a run."""

    @abstractmethod
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
        """A time series in ``[start, end)``; with ``every``, one point per bucket.

        Buckets are aligned on multiples of ``every`` from the epoch (``t = 0``) and carry
        their start time; empty buckets are left out. ``mean``/``min``/``max`` use the
        numeric values of non-Bad samples; ``count`` counts samples; ``last`` is the
        value of the latest sample.
        """

    @abstractmethod
    def iter_samples(
        self,
        run_id: str,
        start: float | None = None,
        end: float | None = None,
        tags: Sequence[str] | None = None,
    ) -> AsyncIterator[Sample]:
        """Samples of a run in ``[start, end]`` in (t, insertion) order, fetched in pages;
        with ``tags``, only the samples of those tags."""

    @abstractmethod
    async def events(
        self, run_id: str, start: float | None = None, end: float | None = None
    ) -> list[Event]:
        """Events of a run in ``[start, end]`` in (t, insertion) order."""

    @abstractmethod
    async def counts(self, run_id: str) -> Counts:
        """Samples and events stored for a run, and its time span."""

    @abstractmethod
    async def _kpi_totals(
        self, run_id: str, layout: Layout, start: float, end: float
    ) -> KpiTotals | None:
        """Totals for :meth:`kpis` aggregated in the database; None to fall back to streaming."""

    async def kpis(
        self,
        run_id: str,
        layout: Layout,
        start: float = 0.0,
        end: float | None = None,
        *,
        streaming: bool = False,
    ) -> KpiReport:
        """KPIs of ``[start, end]`` from the stored samples (``end`` None: the last sample).

        The default path aggregates state durations and counter deltas in SQL; the
        result equals :func:`~iiotbed.platform.kpi.compute_kpis` over :meth:`iter_samples`
        (``streaming=True`` does exactly that) up to float rounding.
        """
        if end is None:
            last = (await self.counts(run_id)).last_t
            end = start if last is None or last < start else last
        if end < start:
            raise ValueError(f"KPI window end ({end:g} s) must not precede its start ({start:g} s)")
        totals = None if streaming else await self._kpi_totals(run_id, layout, start, end)
        if totals is not None:
            return totals.report(layout, start, end)
        return await self._stream_kpis(run_id, layout, start, end)

    async def _stream_kpis(
        self, run_id: str, layout: Layout, start: float, end: float
    ) -> KpiReport:
        """:func:`~iiotbed.platform.kpi.compute_kpis` over :meth:`iter_samples` up to ``end``:
        every sample of the run, seconds of work on a long one. The engine runs in a worker
        thread, batch by batch, so the event loop only fetches."""
        acc = KpiAccumulator(layout, start=start, end=end)
        batch: list[Sample] = []
        async for s in self.iter_samples(run_id, None, end):
            batch.append(s)
            if len(batch) >= 10_000:
                await asyncio.to_thread(acc.feed_many, batch)
                batch = []
        await asyncio.to_thread(acc.feed_many, batch)
        return acc.report(end)


@dataclass
class KpiTotals:
    """Time elements and counter values aggregated by the database for one window."""

    # station path -> (PBT s, APT s, fault s)
    station_times: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    # (asset, tag) -> (max value at or before start, max value at or before end)
    counters: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    line_pbt: float = 0.0
    line_person_s: float = 0.0
    # station path -> seconds planned with the item state unknown; the line's PlannedState
    station_unknown: dict[str, float] = field(default_factory=dict)
    line_unknown: float = 0.0
    # (asset, tag) -> units counted across Bad gaps (``Counter.gap``), of replayed counters
    counter_gaps: dict[tuple[str, str], float] = field(default_factory=dict)

    def report(self, layout: Layout, start: float, end: float) -> KpiReport:
        # the engine's own derivation (not a copy of it) turns totals into KPIs, so every
        # KPI keeps one definition; the totals take the place of its integrated state
        acc = KpiAccumulator(layout, start=start, end=end)
        for st in acc._stations:
            pbt, apt, fault = self.station_times.get(st.layout.path, (0.0, 0.0, 0.0))
            st.pbt, st.apt, st.fault_s = pbt, apt, fault
            st.unknown_s = self.station_unknown.get(st.layout.path, 0.0)
            path = st.layout.path
            for tag, c in st.counters.items():
                c.base, c.last = self.counters.get((path, tag), (0.0, 0.0))
                c.gap = self.counter_gaps.get((path, tag), 0.0)
            for product, c in st.products.items():
                key = (path, f"ProcessedCount/{product}")
                c.base, c.last = self.counters.get(key, (0.0, 0.0))
                c.gap = self.counter_gaps.get(key, 0.0)
        for tag, c in acc._line_counters.items():
            c.base, c.last = self.counters.get((layout.line, tag), (0.0, 0.0))
            c.gap = self.counter_gaps.get((layout.line, tag), 0.0)
        acc._line.pbt = self.line_pbt
        acc._line.people_s = self.line_person_s
        acc._line.unknown_s = self.line_unknown
        return acc.report(end)
