"""The answer-key rule: KPIs from telemetry against the simulator's own, KPI by KPI.

Counters must be equal exactly; every other KPI (time-based or derived) within a
relative tolerance. Why those rules, and the measured differences: ``docs/answer-key.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from iiotbed._json import finite

if TYPE_CHECKING:
    from iiotbed.platform.kpi import KpiReport

__all__ = ["COUNTERS", "REL_TOLERANCE", "Agreement", "agreement", "line_view", "lost_warnings"]

#: counts that must be equal exactly on both paths (station totals for processed/failures)
COUNTERS = ("good_count", "scrap_count", "processed", "failures")
#: relative tolerance of every other KPI (time-based or derived); see docs/answer-key.md
REL_TOLERANCE = 1e-6
_ABS_FLOOR = 1e-9  # below this an absolute difference is float noise whatever the scale


@dataclass
class Agreement:
    """One KPI on both paths: telemetry vs answer key."""

    kind: str  # "counter" (exact) or "time" (relative tolerance)
    telemetry: float | None
    answer_key: float | None
    difference: float | None
    tolerance: float
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "kind": self.kind,
            "difference": self.difference,
            "tolerance": self.tolerance,
        }


def line_view(report: KpiReport) -> dict[str, float]:
    """Line KPIs plus station totals of the counters the line view lacks."""
    out = dict(report.line)
    out["processed"] = math.fsum(s.get("processed", 0.0) for s in report.stations.values())
    out["failures"] = math.fsum(s.get("failures", 0.0) for s in report.stations.values())
    return out


def agreement(
    telemetry: Mapping[str, float], answer_key: Mapping[str, float], rel: float = REL_TOLERANCE
) -> dict[str, Agreement]:
    """Per KPI: counters equal exactly, the rest within ``rel`` (relative to the answer key)."""
    out: dict[str, Agreement] = {}
    for k, truth in answer_key.items():
        got = telemetry.get(k, math.nan)
        counter = k in COUNTERS
        tol = 0.0 if counter else rel
        t_ok, g_ok = math.isfinite(truth), math.isfinite(got)
        if not t_ok or not g_ok:
            ok = t_ok == g_ok  # both undefined (e.g. MTBF without failures) agree
            diff = None
        else:
            diff = got - truth
            ok = diff == 0 if counter else abs(diff) <= max(rel * abs(truth), _ABS_FLOOR)
        out[k] = Agreement(
            "counter" if counter else "time", finite(got), finite(truth), diff, tol, ok
        )
    return out


def lost_warnings(lost: int) -> list[str]:
    """Say so when telemetry was lost on the way, so a disagreement is not a silent one.

    ``lost``: changes the devices know a client never got (the OPC UA servers' count of
    values dropped from a stalled client's full queues, ``MachineServers.lost``).
    """
    if lost <= 0:
        return []
    return [
        f"telemetry lost: {lost} changes never reached the gateway (an OPC UA client took "
        f"none of its notifications for a while and its full queues dropped them); KPIs "
        f"from telemetry may disagree with the answer key for that reason"
    ]
