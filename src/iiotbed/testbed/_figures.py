"""What the HTML report draws that the JSON reports lack: per-station KPIs and throughput
over time, computed by the KPI engine from one replication's records.

A run report names its event log (``run_dir/events.jsonl``): :func:`run_figures` reads it.
A compare report holds summaries of N replications only: :func:`compare_figures` simulates
replication 0 of each side again (same seed and duration: the same records as the compare's
replication 0, by common random numbers) and says so in ``source``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iiotbed.telemetry import Record

if TYPE_CHECKING:
    from iiotbed.platform.layout import Layout
    from iiotbed.scenario import Scenario

__all__ = ["Figures", "bucket_seconds", "compare_figures", "figures_from_records", "run_figures"]

_BUCKETS = (900.0, 1800.0, 3600.0, 7200.0, 10800.0, 21600.0, 43200.0, 86400.0)
MAX_POINTS = 100


@dataclass(frozen=True, slots=True)
class Figures:
    """One replication's KPIs over ``[start, end]`` (s) and its throughput over time."""

    source: str  # where the records came from, in words
    start: float
    end: float
    line: Mapping[str, float]
    stations: Mapping[str, Mapping[str, float]]  # station name ("stage/station") -> KPIs
    throughput: tuple[tuple[float, float, float], ...]  # (t0, t1, good units per hour)


def bucket_seconds(span: float) -> float:
    """The throughput chart's bucket: the shortest of 15 min .. 1 day giving at most
    ``MAX_POINTS`` buckets."""
    for b in _BUCKETS:
        if span / b <= MAX_POINTS:
            return b
    return math.ceil(span / MAX_POINTS / 86400.0) * 86400.0


def figures_from_records(
    records: Iterable[Record], layout: Layout, start: float, end: float, source: str
) -> Figures:
    """Station KPIs of ``[start, end]`` and good units per hour in buckets, one pass of the
    KPI engine (records in time order): a bucket's throughput is the difference of the
    engine's ``good_count`` at its two ends."""
    from iiotbed.platform.kpi import KpiAccumulator

    acc = KpiAccumulator(layout, start=start, end=end)
    step = bucket_seconds(max(end - start, 0.0))
    edges = [start + i * step for i in range(1, math.ceil((end - start) / step))] + [end]
    edges = [e for e in edges if e > start]
    points: list[tuple[float, float, float]] = []
    prev_t, prev_good, k = start, 0.0, 0

    def close(t1: float) -> None:
        nonlocal prev_t, prev_good
        good = acc.report(t1).line["good_count"]
        points.append((prev_t, t1, (good - prev_good) * 3600.0 / (t1 - prev_t)))
        prev_t, prev_good = t1, good

    for record in records:
        while k < len(edges) and record.t > edges[k]:
            close(edges[k])
            k += 1
        if record.t > end:
            break
        acc.feed(record)
    while k < len(edges):
        close(edges[k])
        k += 1
    report = acc.report(end)
    paths = {s.path: f"{s.stage}/{s.name}" for s in layout.stations}
    return Figures(
        source=source,
        start=start,
        end=end,
        line=dict(report.line),
        stations={paths.get(p, p): dict(v) for p, v in report.stations.items()},
        throughput=tuple(points),
    )


def run_figures(report: Mapping[str, Any], scenario: Scenario) -> Figures | None:
    """Figures of an ``iiotbed run`` report from its event log; None when the log is gone
    (blocking: reads the file)."""
    from iiotbed.eventlog import load_records
    from iiotbed.platform.layout import Layout

    events = Path(str(report.get("run_dir") or "")) / "events.jsonl"
    if not report.get("run_dir") or not events.is_file():
        return None
    window = report["window"]
    return figures_from_records(
        load_records(events),
        Layout.from_scenario(scenario),
        float(window["start"]),
        float(window["end"]),
        f"the live run's event log ({events.name}), the answer key's source",
    )


def compare_figures(
    report: Mapping[str, Any], baseline: Scenario, upgrade: Scenario
) -> tuple[Figures, Figures]:
    """Figures of replication 0 of each side of an ``iiotbed compare`` report, simulated
    again with the report's seed and duration (blocking: CPU-bound)."""
    from iiotbed.devices.sim import simulate
    from iiotbed.platform.layout import Layout

    out = []
    for scenario in (baseline, upgrade):
        s = scenario.with_run(duration=float(report["duration_s"]), seed=int(report["seed"]))
        out.append(
            figures_from_records(
                simulate(s, 0),
                Layout.from_scenario(s),
                s.run.warmup,
                s.run.duration,
                f"replication 0 of {report['replications']} (seed {s.run.seed}), "
                "simulated again for these figures",
            )
        )
    return out[0], out[1]
