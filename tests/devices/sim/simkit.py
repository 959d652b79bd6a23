"""Small scenarios and record helpers for the simulator tests."""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

from iiotbed.scenario import Scenario, scenario_from_dict
from iiotbed.telemetry import Event, Record, Sample

LINE = "t/lab/cell/line-1"

BASE: dict[str, Any] = {
    "name": "test",
    "plant": {
        "enterprise": "t", "site": "lab", "area": "cell", "line": "line-1",
        "epoch": "2026-01-05T00:00:00+08:00", "timezone": "Asia/Shanghai",
    },
    "run": {"duration": "1d", "seed": 7, "replications": 1},
    # one 24 h shift every day, no breaks: continuous production
    "calendar": {"shifts": [{"name": "all", "start": "00:00", "end": "00:00"}]},
    "products": [{"name": "panel", "ideal_cycle_time": {"work": 30}}],
    "line": {"stages": [{"name": "work", "station_prefix": "m", "buffer_capacity": 5}]},
    "technicians": {"count": 1},
}


def make(stages: list[dict[str, Any]] | None = None, **top: Any) -> Scenario:
    """A scenario from BASE with the given stages and top-level keys replaced."""
    data = copy.deepcopy(BASE)
    if stages is not None:
        data["line"]["stages"] = stages
        times = {s["name"]: s.pop("_ict", 30) for s in stages}
        data["products"] = [{"name": "panel", "ideal_cycle_time": times}]
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k] = {**data[k], **v}
        else:
            data[k] = v
    return scenario_from_dict(data)


def series(records: list[Record], asset: str, tag: str) -> list[tuple[float, Any]]:
    return [(r.t, r.value) for r in records
            if isinstance(r, Sample) and r.asset == asset and r.tag == tag]


def events(records: list[Record], name: str) -> list[Event]:
    return [r for r in records if isinstance(r, Event) and r.name == name]


def durations(points: list[tuple[float, Any]], end: float, start: float = 0.0) -> dict[Any, float]:
    """Time spent at each value of a piecewise-constant signal over [start, end]."""
    out: dict[Any, float] = defaultdict(float)
    for (t0, v), (t1, _) in zip(points, [*points[1:], (end, None)], strict=True):
        a, b = max(t0, start), min(t1, end)
        if b > a:
            out[v] += b - a
    return dict(out)


def time_average(points: list[tuple[float, Any]], end: float, start: float = 0.0) -> float:
    d = durations(points, end, start)
    return sum(float(v) * w for v, w in d.items()) / (end - start)


def last(points: list[tuple[float, Any]]) -> Any:
    return points[-1][1]
