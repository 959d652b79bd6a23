"""The dashboard's snapshot (``GET /api/live``): one answer with everything the page shows.

Every time in it is source (sim) time, never the receiving side's clock; KPIs and counters
come from the KPI engine as in the run's report (the live accumulator while a run goes, the
store over the answer key's window once it has ended), the state timeline from the engine's
own clocks (:mod:`iiotbed.platform.timeline`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from iiotbed._json import finite, finite_map
from iiotbed.platform.kpi import KpiReport
from iiotbed.platform.queries import answer_window, run_dict
from iiotbed.platform.store.base import Store, epoch_seconds
from iiotbed.telemetry import ItemState, OperationMode, Tag

if TYPE_CHECKING:
    from iiotbed.platform.queries import PlatformView

__all__ = ["column_width", "snapshot"]

_STATION_KPIS = ("oee", "availability", "performance", "quality", "apt_h", "pbt_h")


async def snapshot(view: PlatformView, run_id: str | None) -> dict[str, Any]:
    """Everything the dashboard shows, in one answer; every time is source (sim) time.

    ``t`` is the sim time the view has reached: an ended run's end (its answer key's
    window), else the newest sample's time. KPIs, counters, the timeline and the
    throughput come from the KPI engine and its rules, as in the run's report.
    """
    run = await view.run(run_id)
    live = view.live(run.run_id)
    scenario = await view.catalog.scenario(run.run_id)
    window = answer_window(run)
    if live is not None and window is not None and view.ingest is not None:
        view.ingest.settle(run.run_id)  # the run has ended: nothing held back is early
    since: Mapping[str, float] = {}
    if live is not None:
        latest = live.latest
        last_t = live.last_t
        since = live.state_since
    else:
        latest = {(s.asset, s.tag): s for s in await view.store.latest(run.run_id)}
        last_t = max((s.t for s in latest.values()), default=0.0)
    t = window[1] if window is not None else last_t
    report: KpiReport | None = None
    source = None
    if scenario is not None:
        report, source = await view.report(run)
    every = column_width(t)
    timeline = await view.timeline(run, live, window)

    def val(asset: str, tag: str) -> Any:
        s = latest.get((asset, tag))
        return None if s is None else finite(s.value)

    stations = []
    if scenario is not None:
        for stage, name, path in scenario.station_paths():
            state = val(path, Tag.ITEM_STATE)
            mode = val(path, Tag.OPERATION_MODE)
            k = report.stations.get(path, {}) if report is not None else {}
            entered = since.get(path)
            stations.append(
                {
                    "path": path,
                    "name": name,
                    "stage": stage.name,
                    "state": state,
                    "state_name": _enum_name(ItemState, state),
                    "since": entered,
                    "in_state_s": None if entered is None else max(0.0, t - entered),
                    "mode": _enum_name(OperationMode, mode),
                    "fault": val(path, Tag.FAULT),
                    "processed": finite(k.get("processed", math.nan)),
                    "kpis": finite_map({x: k.get(x, math.nan) for x in _STATION_KPIS}),
                    "timeline": timeline.columns(path, t, every) if timeline else [],
                }
            )
    prefix = scenario.line_path + "/" if scenario is not None else ""
    amrs: dict[str, dict[str, Any]] = {}
    buffers: dict[str, Any] = {}
    busy = None
    for (asset, tag), s in latest.items():
        name = asset.rsplit("/", 1)[-1]
        if tag in (Tag.BATTERY, Tag.POSITION_X, Tag.POSITION_Y) and name.startswith("amr"):
            amrs.setdefault(asset, {"path": asset, "name": name})[tag] = finite(s.value)
        elif tag == Tag.BUFFER_LEVEL:
            buffers[asset[len(prefix) :] if asset.startswith(prefix) else asset] = s.value
        elif tag == Tag.BUSY:
            busy = s.value
    line_path = scenario.line_path if scenario is not None else None
    line_kpis = report.line if report is not None else {}
    epoch = epoch_seconds(run.epoch)
    return {
        "run": run_dict(run),
        "source": source,
        "t": t,
        "time": dt.datetime.fromtimestamp(epoch + t, dt.UTC).isoformat(),
        "kpi_window": [report.start, report.end] if report is not None else None,
        "line": {
            "path": line_path,
            "planned_state": val(line_path, Tag.PLANNED_STATE) if line_path else None,
            "good": finite(line_kpis.get("good_count", math.nan)),
            "scrap": finite(line_kpis.get("scrap_count", math.nan)),
            "kpis": finite_map(line_kpis),
            "stages": {k: finite_map(v) for k, v in report.stages.items()} if report else {},
            "bottleneck": view.catalog.layout_of(scenario).bottleneck_stage
            if scenario is not None
            else None,
        },
        "stations": stations,
        "amrs": [
            {
                "path": a["path"],
                "name": a["name"],
                "x": a.get(Tag.POSITION_X),
                "y": a.get(Tag.POSITION_Y),
                "battery": a.get(Tag.BATTERY),
            }
            for a in sorted(amrs.values(), key=lambda a: str(a["name"]))
        ],
        "technicians": {
            "busy": busy,
            "count": scenario.technicians.count if scenario is not None else None,
        },
        "buffers": buffers,
        "every": every,
        "throughput": await _throughput(view.store, run.run_id, line_path, t, every),
        "goal": await view.progress(run, report),
        "ingest": view.ingest.metrics.to_dict() if view.ingest is not None else None,
    }


async def _throughput(
    store: Store, run_id: str, line: str | None, end: float, every: float
) -> list[dict[str, float]]:
    """Good units per column of ``every`` s over ``[0, end]``, from the line's GoodCount
    counter by the KPI engine's counter rule (largest Good value), so the units add up
    to the line's good count; the last column's rate is over the time it covers."""
    if line is None or end <= 0:
        return []
    n = math.ceil(end / every - 1e-9)
    top = [-math.inf] * n  # largest value per column
    for p in await store.query(run_id, line, Tag.GOOD, every=every, agg="max"):
        if isinstance(p.value, int | float) and p.t >= 0:
            k = min(n - 1, int(p.t // every))  # a sample at exactly ``end`` closes the last
            top[k] = max(top[k], float(p.value))
    out: list[dict[str, float]] = []
    prev = 0.0  # counters start at 0 (the engine's rule for a counter without a base)
    for k in range(n):
        t0 = k * every
        span = min(every, end - t0)
        units = max(0.0, top[k] - prev)
        prev = max(prev, top[k])
        out.append({"t": t0, "span": span, "units": units, "units_per_h": units * 3600.0 / span})
    return out


def column_width(t: float, columns: int = 60, step: float = 300.0) -> float:
    """Seconds per chart column: whole ``step``s, at most ``columns`` columns over ``[0, t]``."""
    return max(step, math.ceil(t / columns / step) * step)


def _enum_name(enum: Any, value: Any) -> str | None:
    if not isinstance(value, int | float):
        return None
    try:
        return str(enum(int(value)).name)
    except ValueError:
        return None
