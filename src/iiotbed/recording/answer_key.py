"""The answer key a recording carries: the simulator's KPIs over the recorded window.

``line`` holds the line KPIs plus the station totals of ``processed`` and ``failures``
(what ``iiotbed run`` compares); ``stations`` each station's KPIs. Undefined values (an
MTBF without failures) are ``None``. :meth:`AnswerKey.differences` is the one comparison
rule of ``iiotbed run`` (``docs/answer-key.md``): counters exactly, the rest within a
relative tolerance (:func:`iiotbed.testbed.agreement`); each difference says which asset,
KPI and window disagree.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AnswerKey", "Difference"]


@dataclass(frozen=True)
class Difference:
    """One KPI on which a system's figure and the answer key disagree."""

    asset: str  # "line" or a station's asset path
    kpi: str
    got: float | None
    expected: float | None
    window: tuple[float, float]  # sim s
    rule: str  # "exactly" or "within rel 1e-06"

    def __str__(self) -> str:
        rule = self.rule
        return (
            f"{self.asset}: {self.kpi} = {_show(self.got)}, the answer key says {_show(self.expected)} "
            f"({rule}) over sim time {self.window[0]:g} .. {self.window[1]:g} s"
        )


@dataclass(frozen=True)
class AnswerKey:
    """The simulator's KPIs over ``window`` (sim s from the scenario epoch)."""

    window: tuple[float, float]
    line: Mapping[str, float | None]
    stations: Mapping[str, Mapping[str, float | None]] = field(default_factory=dict)

    @property
    def counters(self) -> dict[str, float | None]:
        """The line's counters: good, scrap, processed and failures (compared exactly)."""
        from iiotbed.testbed.agreement import COUNTERS

        return {k: self.line.get(k) for k in COUNTERS}

    def differences(
        self,
        kpis: Mapping[str, float | None],
        *,
        asset: str = "line",
        keys: Iterable[str] | None = None,
        rel: float | None = None,
    ) -> list[Difference]:
        """Where ``kpis`` (a system's figures for ``asset``) disagree with the key; only
        ``keys`` (default: every KPI in ``kpis`` the key knows) are compared."""
        truth = self.line if asset == "line" else self.stations.get(asset)
        if truth is None:
            known = ", ".join(["line", *self.stations])
            raise KeyError(f"the answer key has no asset {asset!r}; it has {known}")
        from iiotbed.testbed.agreement import REL_TOLERANCE, agreement

        names = [k for k in kpis if k in truth] if keys is None else list(keys)
        for k in names:
            if k not in truth:
                raise KeyError(f"the answer key of {asset} has no KPI {k!r}")
        tol = REL_TOLERANCE if rel is None else rel
        result = agreement({k: _num(kpis.get(k)) for k in names},
                           {k: _num(truth[k]) for k in names}, tol)  # fmt: skip
        out = []
        for k, a in result.items():
            if not a.ok:
                rule = "exactly" if a.kind == "counter" else f"within rel {tol:g}"
                out.append(Difference(asset, k, kpis.get(k), truth[k], self.window, rule))
        return out

    def to_json(self) -> dict[str, str]:
        """The MCAP metadata record (string values)."""
        return {
            "window": json.dumps(list(self.window)),
            "line": json.dumps(dict(self.line), sort_keys=True),
            "stations": json.dumps({a: dict(v) for a, v in self.stations.items()}, sort_keys=True),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, str]) -> AnswerKey:
        start, end = json.loads(data["window"])
        line = json.loads(data["line"])
        stations = json.loads(data.get("stations", "{}"))
        return cls((float(start), float(end)), line, stations)

    def to_dict(self) -> dict[str, Any]:
        return {"window": list(self.window), "line": dict(self.line),
                "stations": {a: dict(v) for a, v in self.stations.items()}}  # fmt: skip


def _num(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _show(x: float | None) -> str:
    """A figure as people write it: 753, not 753.0; None as "undefined"."""
    if x is None:
        return "undefined"
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return repr(x)
