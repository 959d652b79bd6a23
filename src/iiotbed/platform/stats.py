"""Statistics over replications: Student-t intervals and the paired +goal verdict.

Replications of a baseline and an upgrade that share a seed share their random streams
(common random numbers), so the comparison works on per-seed pairs: the relative
improvement ``r_i = upgrade_i / baseline_i - 1`` of each pair, with a Student-t interval
over the pairs. The verdict is ``met`` only when the whole interval clears the goal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from scipy import stats as _scipy_stats

__all__ = ["Comparison", "Summary", "Verdict", "compare_paired", "summarize"]


class Verdict(StrEnum):
    MET = "met"
    NOT_MET = "not met"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, slots=True)
class Summary:
    """Mean and two-sided confidence interval of one KPI over replications.

    ``n`` counts the replications with a defined value (NaN ones are left out and counted
    in ``undefined``); with ``n < 2`` the interval is undefined (NaN).
    """

    mean: float
    ci95: tuple[float, float]
    sd: float
    n: int
    undefined: int = 0

    @property
    def half_width(self) -> float:
        return (self.ci95[1] - self.ci95[0]) / 2


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean, sample standard deviation and Student-t interval of ``values`` (NaNs skipped)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    xs = [float(v) for v in values if v is not None and not math.isnan(v)]
    undefined = len(values) - len(xs)
    n = len(xs)
    if n == 0:
        return Summary(math.nan, (math.nan, math.nan), math.nan, 0, undefined)
    mean = math.fsum(xs) / n
    if n == 1:
        return Summary(mean, (math.nan, math.nan), math.nan, 1, undefined)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    t = float(_scipy_stats.t.ppf(0.5 + confidence / 2, n - 1))
    half = t * sd / math.sqrt(n)
    return Summary(mean, (mean - half, mean + half), sd, n, undefined)


@dataclass(frozen=True, slots=True)
class Comparison:
    """Paired relative improvement of ``upgrade`` over ``baseline`` and its verdict."""

    metric: str
    goal: float
    baseline: Summary
    upgrade: Summary
    improvement: Summary
    ratios: tuple[float, ...]
    verdict: Verdict
    higher_is_better: bool = True


def compare_paired(
    metric: str,
    baseline: Sequence[float],
    upgrade: Sequence[float],
    goal: float,
    *,
    higher_is_better: bool = True,
    confidence: float = 0.95,
) -> Comparison:
    """Compare paired replications; ``baseline[i]`` and ``upgrade[i]`` share seed i.

    For a KPI where lower is better (e.g. energy per good unit) the improvement is
    ``1 - upgrade/baseline`` so that a positive number is always better.
    """
    if len(baseline) != len(upgrade):
        raise ValueError(
            f"paired comparison needs as many baseline as upgrade replications, "
            f"got {len(baseline)} and {len(upgrade)}"
        )
    ratios: list[float] = []
    for b, u in zip(baseline, upgrade, strict=True):
        if b is None or u is None or math.isnan(b) or math.isnan(u) or b == 0:
            ratios.append(math.nan)
        else:
            ratios.append(u / b - 1 if higher_is_better else 1 - u / b)
    imp = summarize(ratios, confidence)
    low, high = imp.ci95
    if math.isnan(low) or math.isnan(high):
        verdict = Verdict.INCONCLUSIVE
    elif low >= goal:
        verdict = Verdict.MET
    elif high < goal:
        verdict = Verdict.NOT_MET
    else:
        verdict = Verdict.INCONCLUSIVE
    return Comparison(
        metric=metric,
        goal=goal,
        baseline=summarize(baseline, confidence),
        upgrade=summarize(upgrade, confidence),
        improvement=imp,
        ratios=tuple(ratios),
        verdict=verdict,
        higher_is_better=higher_is_better,
    )
