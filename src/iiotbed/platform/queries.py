"""The platform's read side: runs, KPIs, comparisons, identifier resolution, live snapshot.

Plain async functions over a store, a run catalog and (optionally) the live ingest; the
HTTP API is a thin layer over them. They raise :class:`NotFound` for unknown things and
:class:`QueryError` for queries that cannot be answered, each with a message saying the fix.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from iiotbed._json import finite, finite_map
from iiotbed.errors import NotFound, QueryError
from iiotbed.platform.catalog import RunCatalog, shift_windows
from iiotbed.platform.ingest import Ingest, LiveRun
from iiotbed.platform.kpi import KPI_INFO, KpiReport
from iiotbed.platform.stats import Summary, compare_paired
from iiotbed.platform.store.base import AssetInfo, RunInfo, Store, epoch_seconds
from iiotbed.platform.timeline import TIMELINE_TAGS, StateTimeline
from iiotbed.telemetry import Event, EventName, Sample

__all__ = [
    "UNIT_EVENTS",
    "PlatformView",
    "asset_dict",
    "run_dict",
    "sample_json",
]

UNIT_EVENTS = (
    EventName.UNIT_PRODUCED,
    EventName.UNIT_SCRAPPED,
    EventName.DEFECT_INTRODUCED,
    EventName.UNIT_REWORKED,
)
By = Literal["station", "stage", "line", "shift"]
_MAX_SHIFTS = 400


def _iso(d: dt.datetime | None) -> str | None:
    return d.isoformat() if d is not None else None


def run_dict(run: RunInfo) -> dict[str, Any]:
    """A run as JSON (the answer key's presence, not its body)."""
    return {
        "run_id": run.run_id,
        "scenario": run.scenario,
        "scenario_file": run.scenario_file,
        "scenario_hash": run.scenario_hash,
        "epoch": run.epoch,
        "seed": run.seed,
        "replication": run.replication,
        "speed": run.speed,
        "started": _iso(run.started),
        "ended": _iso(run.ended),
        "status": run.status,
        "baseline_run_id": run.baseline_run_id,
        "goal": run.goal,
        "has_answer_key": run.answer_key is not None,
    }


def asset_dict(a: AssetInfo) -> dict[str, Any]:
    return {
        "path": a.path,
        "kind": a.kind,
        "stage": a.stage,
        "name": a.path.rsplit("/", 1)[-1],
        "identification": dict(a.identification),
    }


def sample_json(s: Sample) -> dict[str, Any]:
    return {
        "asset": s.asset,
        "tag": s.tag,
        "value": finite(s.value),
        "unit": s.unit,
        "quality": s.quality.name,
        "t": s.t,
    }


def _summary(s: Summary) -> dict[str, Any]:
    return {
        "mean": finite(s.mean),
        "ci95": [finite(s.ci95[0]), finite(s.ci95[1])],
        "sd": finite(s.sd),
        "n": s.n,
    }


@dataclass
class _UnitIndex:
    events: int = -1
    units: dict[str, list[Event]] = field(default_factory=dict)


class PlatformView:
    """Read access to runs in a store, with the live ingest's view where it has one."""

    def __init__(self, store: Store, catalog: RunCatalog, ingest: Ingest | None = None) -> None:
        self.store = store
        self.catalog = catalog
        self.ingest = ingest
        self._units: dict[str, _UnitIndex] = {}
        # an ended run's KPIs over its answer key's window (they do not change any more)
        self._ended: dict[str, tuple[tuple[float, float], KpiReport]] = {}
        # an ended run's state timeline from the store: (window, late samples then, timeline)
        self._timelines: dict[str, tuple[tuple[float, float], int, StateTimeline]] = {}
        self._timeline_locks: dict[str, asyncio.Lock] = {}

    # ------------------------------------------------------------------ runs

    async def run(self, run_id: str | None) -> RunInfo:
        """The run asked for; without an id, the run being ingested, else the newest."""
        if run_id is not None:
            run = await self.store.get_run(run_id)
            if run is None:
                raise NotFound(f"no run {run_id!r} in the store; GET /api/runs lists the runs")
            return run
        if self.ingest is not None and self.ingest.runs:
            newest = next(reversed(self.ingest.runs))
            run = await self.store.get_run(newest)
            if run is not None:
                return run
        runs = await self.store.list_runs()
        if not runs:
            raise NotFound("the store holds no runs yet; start a run or ingest one")
        return runs[-1]

    def live(self, run_id: str) -> LiveRun | None:
        return self.ingest.live(run_id) if self.ingest is not None else None

    async def timeline(
        self, run: RunInfo, live: LiveRun | None, window: tuple[float, float] | None
    ) -> StateTimeline | None:
        """The state timeline the dashboard draws.

        While a run goes: the live view's (a sample that arrives after the view has moved
        past it is stored but not drawn). Once the run has ended (``window``): rebuilt from
        the store's state samples, the source of the run's KPIs, so that its executing
        share is the availability the page shows, whatever arrived late or before this
        platform was up; built once, again only if a sample arrives late afterwards.
        """
        if window is None:
            return live.timeline if live is not None else None
        layout = await self.catalog.layout(run.run_id)
        if layout is None:
            return None
        lock = self._timeline_locks.setdefault(run.run_id, asyncio.Lock())
        async with lock:  # one rebuild at a time; the others wait for it
            late = live.late if live is not None else 0
            cached = self._timelines.get(run.run_id)
            if cached is not None and cached[:2] == (window, late):
                return cached[2]
            timeline = StateTimeline(layout)
            batch: list[Sample] = []
            async for s in self.store.iter_samples(run.run_id, None, window[1], TIMELINE_TAGS):
                batch.append(s)
                if len(batch) >= 10_000:
                    await asyncio.to_thread(timeline.feed_many, batch)
                    batch = []
            timeline.feed_many(batch)
            self._timelines[run.run_id] = (window, late, timeline)
            return timeline

    async def run_detail(self, run_id: str) -> dict[str, Any]:
        run = await self.run(run_id)
        counts = await self.store.counts(run.run_id)
        live = self.live(run.run_id)
        return {
            **run_dict(run),
            "samples": counts.samples,
            "events": counts.events,
            "first_t": counts.first_t,
            "last_t": counts.last_t,
            "live": live is not None,
            "answer_key": run.answer_key,
        }

    # ------------------------------------------------------------------ KPIs

    async def _report(
        self, run: RunInfo, start: float | None, end: float | None
    ) -> tuple[KpiReport, str]:
        layout = await self.catalog.layout(run.run_id)
        if layout is None:
            raise QueryError(
                f"run {run.run_id!r} has no known scenario (scenario_file "
                f"{run.scenario_file!r}); start the platform with --scenario FILE"
            )
        live = self.live(run.run_id)
        if start is None and end is None:
            window = answer_window(run)
            if window is not None:
                # the run has ended: its report's own window and numbers, from the store
                return await self._ended_report(run, window), "store"
            if live is not None and live.accumulator is not None:
                report = live.report()
                if report is not None:
                    return report, "live"
        lo = 0.0 if start is None else start
        if end is not None and end < lo:
            raise QueryError(f"end ({end:g} s) must not precede start ({lo:g} s)")
        return await self.store.kpis(run.run_id, layout, lo, end), "store"

    async def report(self, run: RunInfo) -> tuple[KpiReport, str]:
        """The run's KPIs as the dashboard shows them, and their source (live or store)."""
        return await self._report(run, None, None)

    async def _ended_report(self, run: RunInfo, window: tuple[float, float]) -> KpiReport:
        cached = self._ended.get(run.run_id)
        if cached is not None and cached[0] == window:
            return cached[1]
        layout = await self.catalog.layout(run.run_id)
        assert layout is not None  # checked by the caller
        report = await self.store.kpis(run.run_id, layout, *window)
        self._ended[run.run_id] = (window, report)
        return report

    async def kpis(
        self, run_id: str | None, start: float | None, end: float | None, by: By
    ) -> dict[str, Any]:
        run = await self.run(run_id)
        units = {k: v.unit for k, v in KPI_INFO.items()}
        if by == "shift":
            return await self._kpis_by_shift(run, start, end, units)
        report, source = await self._report(run, start, end)
        body: dict[str, Any] = {
            "run_id": run.run_id,
            "source": source,
            "by": by,
            "start": report.start,
            "end": report.end,
            "units": units,
        }
        if by == "line":
            body["line"] = finite_map(report.line)
        elif by == "stage":
            body["stages"] = {k: finite_map(v) for k, v in report.stages.items()}
        else:
            body["stations"] = {k: finite_map(v) for k, v in report.stations.items()}
        return body

    async def _kpis_by_shift(
        self, run: RunInfo, start: float | None, end: float | None, units: dict[str, str]
    ) -> dict[str, Any]:
        scenario = await self.catalog.scenario(run.run_id)
        if scenario is None:
            raise QueryError(f"run {run.run_id!r} has no known scenario: its shifts are unknown")
        layout = self.catalog.layout_of(scenario)
        lo = 0.0 if start is None else start
        if end is None:
            last = (await self.store.counts(run.run_id)).last_t
            end = lo if last is None or last < lo else last
        if end < lo:
            raise QueryError(f"end ({end:g} s) must not precede start ({lo:g} s)")
        # a shift is at most a day: a longer window cannot hold few enough shifts, and far
        # outside the epoch's era the calendar's dates do not exist
        if end - lo > _MAX_SHIFTS * 86400.0:
            raise QueryError(
                f"[{lo:g}, {end:g}] s spans more than {_MAX_SHIFTS} days; "
                f"narrow the window to at most {_MAX_SHIFTS} shifts"
            )
        try:
            windows = shift_windows(scenario, lo, end)
        except (OverflowError, ValueError) as exc:
            raise QueryError(
                f"[{lo:g}, {end:g}] s is outside the calendar's dates: {exc}"
            ) from None
        if len(windows) > _MAX_SHIFTS:
            raise QueryError(
                f"{len(windows)} shifts in [{lo:g}, {end:g}] s; ask for at most {_MAX_SHIFTS} "
                f"(narrow start/end)"
            )
        shifts = []
        for w in windows:
            rep = await self.store.kpis(run.run_id, layout, w.start, w.end)
            shifts.append(
                {"shift": w.label, "start": w.start, "end": w.end, "line": finite_map(rep.line)}
            )
        return {
            "run_id": run.run_id,
            "source": "store",
            "by": "shift",
            "start": lo,
            "end": end,
            "units": units,
            "shifts": shifts,
        }

    # ------------------------------------------------------------------ comparison

    async def _metric_of(self, run: RunInfo, metric: str) -> tuple[float, str]:
        key = run.answer_key
        if key is not None:
            line = key.get("line", {})
            v = line.get(metric) if isinstance(line, Mapping) else None
            return (math.nan if v is None else float(v)), "answer key"
        layout = await self.catalog.layout(run.run_id)
        if layout is None:
            return math.nan, "unknown"
        report = await self.store.kpis(run.run_id, layout)
        return report.line.get(metric, math.nan), "store"

    async def compare(self, run_id: str | None, metric: str, goal: float | None) -> dict[str, Any]:
        if metric not in KPI_INFO:
            raise QueryError(f"unknown KPI {metric!r}; choose one of {', '.join(sorted(KPI_INFO))}")
        target = await self.run(run_id) if run_id is not None else None
        if target is not None and target.answer_key is not None:
            stored = target.answer_key.get("comparison")
            if isinstance(stored, Mapping):
                return {"source": "stored comparison", "run_id": target.run_id, **stored}
        runs = await self.store.list_runs()
        by_id = {r.run_id: r for r in runs}
        pairs = [r for r in runs if r.baseline_run_id is not None and r.baseline_run_id in by_id]
        if target is not None:
            if target.baseline_run_id is not None:
                pairs = [r for r in pairs if r.scenario == target.scenario]
            else:  # the target is a baseline: the upgrades measured against its scenario
                pairs = [
                    r for r in pairs if by_id[r.baseline_run_id or ""].scenario == target.scenario
                ]
        if not pairs:
            raise NotFound(
                "no run names a baseline run (RunInfo.baseline_run_id): store baseline and "
                "upgrade runs with answer keys, or a run whose answer key holds a 'comparison'"
            )
        info = KPI_INFO[metric]
        base_v: list[float] = []
        upg_v: list[float] = []
        rows = []
        sources: set[str] = set()
        for r in pairs:
            b = by_id[r.baseline_run_id or ""]
            bv, bs = await self._metric_of(b, metric)
            uv, us = await self._metric_of(r, metric)
            sources.update((bs, us))
            base_v.append(bv)
            upg_v.append(uv)
            rows.append(
                {
                    "run_id": r.run_id,
                    "baseline_run_id": b.run_id,
                    "baseline": finite(bv),
                    "upgrade": finite(uv),
                }
            )
        g = goal if goal is not None else (pairs[-1].goal if pairs[-1].goal is not None else 0.20)
        cmp = compare_paired(metric, base_v, upg_v, g, higher_is_better=info.higher_is_better)
        for row, ratio in zip(rows, cmp.ratios, strict=True):
            row["improvement"] = finite(ratio)
        return {
            "source": " + ".join(sorted(sources)),
            "metric": metric,
            "unit": info.unit,
            "goal": g,
            "higher_is_better": info.higher_is_better,
            "baseline": {
                "scenario": by_id[pairs[0].baseline_run_id or ""].scenario,
                **_summary(cmp.baseline),
            },
            "upgrade": {"scenario": pairs[0].scenario, **_summary(cmp.upgrade)},
            "improvement": _summary(cmp.improvement),
            "verdict": cmp.verdict.value,
            "pairs": rows,
        }

    async def progress(self, run: RunInfo, report: KpiReport | None) -> dict[str, Any]:
        """A run's progress toward the goal: its metric now against its baseline run's."""
        metric = "labour_productivity"
        goal = run.goal if run.goal is not None else 0.20
        out: dict[str, Any] = {"metric": metric, "goal": goal, "available": False}
        value = report.line.get(metric, math.nan) if report is not None else math.nan
        out["value"] = finite(value)
        if run.baseline_run_id is None:
            out["reason"] = "this run names no baseline run"
            return out
        base = await self.store.get_run(run.baseline_run_id)
        if base is None:
            out["reason"] = f"baseline run {run.baseline_run_id!r} is not in the store"
            return out
        bv, source = await self._metric_of(base, metric)
        out.update(baseline=finite(bv), baseline_source=source)
        if math.isfinite(bv) and bv > 0 and math.isfinite(value):
            out.update(available=True, improvement=value / bv - 1)
        else:
            out["reason"] = "no defined value yet"
        return out

    # ------------------------------------------------------------------ identifiers

    async def _unit_index(self, run_id: str) -> dict[str, list[Event]]:
        idx = self._units.setdefault(run_id, _UnitIndex())
        n = (await self.store.counts(run_id)).events
        if n != idx.events:
            units: dict[str, list[Event]] = {}
            for e in await self.store.events(run_id):
                if e.name in UNIT_EVENTS:
                    unit = e.fields.get("unit")
                    if isinstance(unit, str):
                        units.setdefault(unit, []).append(e)
            idx.events, idx.units = n, units
        return idx.units

    async def resolve(self, identifier: str, run_id: str | None) -> dict[str, Any]:
        """An asset path or identifier → its record; a unit id → its record and genealogy."""
        for a in await self.store.assets():
            ident = a.identification
            if identifier in (a.path, ident.get("identifier"), ident.get("ProductInstanceUri")):
                return {"identifier": identifier, "type": "asset", "record": asset_dict(a)}
        if run_id is not None:
            runs = [await self.run(run_id)]
        else:
            runs = list(reversed(await self.store.list_runs()))
        for run in runs:
            events = (await self._unit_index(run.run_id)).get(identifier)
            if events:
                return await self._genealogy(identifier, run, events)
        raise NotFound(
            f"{identifier!r} is neither an asset path, an asset identifier nor a unit id "
            f"of {'run ' + repr(run_id) if run_id else 'any stored run'}; unit ids look like "
            f"<id_prefix>/<product>-<n>, e.g. 88.999.1/panel-17"
        )

    async def _genealogy(self, unit: str, run: RunInfo, events: Sequence[Event]) -> dict[str, Any]:
        epoch = epoch_seconds(run.epoch)
        layout = await self.catalog.layout(run.run_id)
        paths = {s.name: s.path for s in layout.stations} if layout is not None else {}

        def when(t: float) -> str:
            return dt.datetime.fromtimestamp(epoch + t, dt.UTC).isoformat()

        record: dict[str, Any] = {"unit": unit, "run_id": run.run_id, "status": "in process"}
        stations: list[str] = []
        for e in events:
            f = e.fields
            if e.name in (EventName.UNIT_PRODUCED, EventName.UNIT_SCRAPPED):
                record["product"] = f.get("product")
                record["released_t"] = f.get("released")
                stations = [str(s) for s in f.get("stations", [])]
                record["status"] = "produced" if e.name == EventName.UNIT_PRODUCED else "scrapped"
                record["finished_t"] = e.t
                record["finished"] = when(e.t)
                if e.name == EventName.UNIT_PRODUCED:
                    record["escaped_defect"] = bool(f.get("escaped_defect", False))
                    record["waits"] = f.get("waits")
        if isinstance(record.get("released_t"), int | float):
            record["released"] = when(float(record["released_t"]))
            if "finished_t" in record:
                record["lead_time_s"] = record["finished_t"] - record["released_t"]
        genealogy = {
            "stations": [{"name": s, "path": paths.get(s)} for s in stations],
            "defects": [
                {"t": e.t, "at": e.asset} for e in events if e.name == EventName.DEFECT_INTRODUCED
            ],
            "rework": [
                {"t": e.t, "at": e.asset, "origin": e.fields.get("origin")}
                for e in events
                if e.name == EventName.UNIT_REWORKED
            ],
            "scrap": [
                {"t": e.t, "at": e.asset, "origin": e.fields.get("origin")}
                for e in events
                if e.name == EventName.UNIT_SCRAPPED
            ],
        }
        return {
            "identifier": unit,
            "type": "unit",
            "record": record,
            "genealogy": genealogy,
            "events": [
                {"t": e.t, "time": when(e.t), "asset": e.asset, "event": e.name, "fields": e.fields}
                for e in events
            ],
        }

    # ------------------------------------------------------------------ assets

    async def latest(self, path: str, run_id: str | None, subtree: bool) -> dict[str, Any]:
        run = await self.run(run_id)
        live = self.live(run.run_id)
        if live is not None:
            samples = [
                s
                for (asset, _), s in live.latest.items()
                if asset == path or (subtree and asset.startswith(path + "/"))
            ]
            samples.sort(key=lambda s: (s.asset, s.tag))
        else:
            samples = [
                s for s in await self.store.latest(run.run_id, path) if subtree or s.asset == path
            ]
        if not samples and not await self.store.assets(path):
            raise NotFound(
                f"asset {path!r} is unknown and has no samples in run {run.run_id!r}; "
                f"GET /api/assets lists the assets"
            )
        return {"asset": path, "run_id": run.run_id, "samples": [sample_json(s) for s in samples]}

    # ------------------------------------------------------------------ dashboard

    async def snapshot(self, run_id: str | None) -> dict[str, Any]:
        """Everything the dashboard shows (:func:`iiotbed.platform.snapshot.snapshot`)."""
        from iiotbed.platform.snapshot import snapshot

        return await snapshot(self, run_id)


def answer_window(run: RunInfo) -> tuple[float, float] | None:
    """An ended run's KPI window ``(start, end)`` from its answer key, else None."""
    key = run.answer_key
    if key is None or run.status == "running":
        return None
    start, end = key.get("start"), key.get("end")
    if not isinstance(start, int | float) or not isinstance(end, int | float) or end < start:
        return None
    return float(start), float(end)
