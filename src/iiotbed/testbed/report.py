"""What ``iiotbed run`` reports: telemetry KPIs beside the answer key, and the verdict.

The answer key is the simulator's own account: the KPI engine over the live run's event
log (:func:`replay_answer_key`). The agreement rule between the two columns lives in
:mod:`iiotbed.testbed.agreement`; why those rules: ``docs/answer-key.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iiotbed._json import finite, finite_map
from iiotbed.testbed.agreement import Agreement

if TYPE_CHECKING:
    from iiotbed.devices.live import LiveSummary
    from iiotbed.platform.kpi import KpiReport
    from iiotbed.platform.layout import Layout

__all__ = ["RunReport", "live_figures", "replay_answer_key", "settle_warnings"]


@dataclass(frozen=True)
class RunReport:
    """What ``iiotbed run`` reports; :meth:`to_dict` is the ``--json`` output."""

    run_id: str
    scenario: str
    dashboard: str
    endpoints: dict[str, Any]
    start: float
    end: float  # sim time reached
    ended: str  # "duration" or "stopped"
    wall_s: float
    kpis: dict[str, float]
    answer_key: dict[str, float]
    agreement: dict[str, Agreement]
    metric: str
    goal: float
    settle: dict[str, Any] = field(default_factory=dict)
    improvement: dict[str, Any] | None = None
    verdict: str | None = None
    verdict_basis: str | None = None
    live_improvement: float | None = None  # this run's answer key vs the base's, information only
    baseline_run_id: str | None = None
    store: str = ""
    run_dir: str = ""
    warnings: list[str] = field(default_factory=list)
    live: dict[str, Any] = field(default_factory=dict)  # records, max lag, messages

    @property
    def agrees(self) -> bool:
        return all(a.ok for a in self.agreement.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "scenario": self.scenario,
            "dashboard": self.dashboard,
            "endpoints": self.endpoints,
            "store": self.store,
            "run_dir": self.run_dir,
            "window": {"start": self.start, "end": self.end},
            "ended": self.ended,
            "wall_s": round(self.wall_s, 3),
            "kpis": finite_map(self.kpis),
            "answer_key": finite_map(self.answer_key),
            "agreement": {k: a.to_dict() for k, a in self.agreement.items()},
            "agrees": self.agrees,
            "metric": self.metric,
            "goal": self.goal,
            "improvement": self.improvement,
            "verdict": self.verdict,
            "verdict_basis": self.verdict_basis,
            "live_improvement": finite(self.live_improvement),
            "baseline_run_id": self.baseline_run_id,
            "settle": self.settle,
            "live": self.live,
            "warnings": self.warnings,
        }


def replay_answer_key(events: Path, layout: Layout, start: float, end: float) -> KpiReport:
    """The simulator's KPIs: the engine over the live run's own event log (blocking)."""
    from iiotbed.eventlog import load_records
    from iiotbed.platform.kpi import compute_kpis

    return compute_kpis(load_records(events), layout, start=start, end=end)


def settle_warnings(settle: dict[str, Any], timeout: float) -> list[str]:
    """A warning when the ingest did not settle: the newest data may be missing."""
    if not settle["timed_out"]:
        return []
    return [
        f"ingest did not settle within {timeout:g} s "
        f"(gateway forwarded {settle['gateway_forwarded']}, platform received "
        f"{settle['ingest_received']}): the telemetry KPIs may miss the newest data"
    ]


def live_figures(summary: LiveSummary, speed: float | None) -> dict[str, Any]:
    """The report's ``live``: what the live factory did."""
    return {
        "speed": speed,
        "records": summary.records,
        "max_lag_s": round(summary.max_lag_s, 3),
        "opcua_writes": summary.opcua_writes,
        "sparkplug_published": summary.sparkplug_published,
        "vda5050_published": summary.vda_published,
    }
