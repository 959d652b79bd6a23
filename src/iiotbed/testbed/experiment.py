"""Replications of a scenario in parallel processes, and their KPIs.

Replication ``i`` of any scenario draws from the streams keyed by ``(seed, i, source
name)``, so replication ``i`` of a baseline and of its upgrade share their random numbers
wherever they share a source (common random numbers).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iiotbed.scenario import Scenario

__all__ = ["ReplicationResult", "default_workers", "run_replication", "run_replications"]


@dataclass(frozen=True, slots=True)
class ReplicationResult:
    """KPIs of one replication over the window ``[warmup, duration]``."""

    scenario: str
    replication: int
    seed: int
    line: dict[str, float]
    stations: dict[str, dict[str, float]]
    records: int
    wall_s: float


def run_replication(
    scenario: Scenario, replication: int, events: Path | None = None
) -> ReplicationResult:
    """Simulate one replication and compute its KPIs; optionally write its event log."""
    # imported here: worker processes and `iiotbed --help` should not pay for what they skip
    from iiotbed.devices.sim import simulate
    from iiotbed.eventlog import write_event_log
    from iiotbed.platform.kpi import compute_kpis
    from iiotbed.platform.layout import Layout

    started = time.perf_counter()
    records = simulate(scenario, replication)
    if events is not None:
        write_event_log(records, events)
    report = compute_kpis(
        records,
        Layout.from_scenario(scenario),
        start=scenario.run.warmup,
        end=scenario.run.duration,
    )
    return ReplicationResult(
        scenario=scenario.name,
        replication=replication,
        seed=scenario.run.seed,
        line=dict(report.line),
        stations={k: dict(v) for k, v in report.stations.items()},
        records=len(records),
        wall_s=time.perf_counter() - started,
    )


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def run_replications(
    jobs: Sequence[tuple[Scenario, int]],
    *,
    workers: int | None = None,
    on_done: Callable[[ReplicationResult], Any] | None = None,
) -> list[ReplicationResult]:
    """Run ``(scenario, replication)`` jobs, in parallel processes when there are several.

    Results come back in the order of ``jobs`` whatever order they finish in, so the
    output does not depend on scheduling.
    """
    workers = min(workers or default_workers(), len(jobs)) or 1
    results: list[ReplicationResult | None] = [None] * len(jobs)
    if workers == 1:
        for i, (scenario, rep) in enumerate(jobs):
            results[i] = run_replication(scenario, rep)
            if on_done is not None:
                on_done(results[i])  # type: ignore[arg-type]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {
                pool.submit(run_replication, scenario, rep): i
                for i, (scenario, rep) in enumerate(jobs)
            }
            for fut in as_completed(futures):
                res = fut.result()
                results[futures[fut]] = res
                if on_done is not None:
                    on_done(res)
    return [r for r in results if r is not None]
