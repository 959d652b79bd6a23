"""The verdict of a run with ``extends:``: paired batch replications, base vs upgrade.

One live run is one replication: no confidence interval can be drawn from it. The verdict
comes from N paired batch replications (common random numbers) of the base and of the
scenario over the window the live run covered; :func:`paired_verdict` turns their KPIs
into a :class:`RunVerdict` value, :func:`batch_verdict` runs them in worker processes.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from iiotbed._json import finite

if TYPE_CHECKING:
    from iiotbed.scenario import Scenario
    from iiotbed.testbed.experiment import ReplicationResult
    from iiotbed.testbed.plan import RunOptions

__all__ = ["RunVerdict", "batch_verdict", "paired_verdict", "verdict_basis"]


@dataclass(frozen=True, slots=True)
class RunVerdict:
    """The verdict, its interval and basis; all None with a warning when there is none."""

    improvement: dict[str, Any] | None = None  # mean, ci95, n, per_replication (JSON-ready)
    verdict: str | None = None  # "met", "not met" or "inconclusive"
    basis: str | None = None
    live_improvement: float | None = None  # answer key vs the base's, same replication
    base_line: dict[str, float] | None = None  # the base's line KPIs, same replication
    warnings: tuple[str, ...] = ()

    def comparison(self, metric: str, goal: float) -> dict[str, Any]:
        """What the stored run's answer key holds as ``comparison``."""
        return {
            "metric": metric, "goal": goal, "improvement": self.improvement,
            "verdict": self.verdict, "basis": self.basis,
        }  # fmt: skip


def verdict_basis(base: Scenario, scenario: Scenario, n: int, end: float, metric: str) -> str:
    """How the verdict was reached, in words (the report's ``verdict_basis``)."""
    return (
        f"{n} paired batch replications (common random numbers, seed {scenario.run.seed}) of "
        f"{base.name!r} vs {scenario.name!r} over [{scenario.run.warmup:g}, {end:g}] s; "
        f"paired Student-t 95 % CI of the relative improvement of {metric}"
    )


def paired_verdict(
    base: Sequence[ReplicationResult],
    upgrade: Sequence[ReplicationResult],
    *,
    metric: str,
    goal: float,
    basis: str,
    replication: int = 0,
    live: Mapping[str, float] | None = None,
) -> RunVerdict:
    """The verdict on ``metric`` from paired results (``base[i]`` with ``upgrade[i]``).

    ``live`` is the live run's answer key, replication ``replication``: its improvement
    over the base's same replication is reported beside the verdict, for information.
    """
    from iiotbed.platform.kpi import KPI_INFO
    from iiotbed.platform.stats import compare_paired

    higher = KPI_INFO[metric].higher_is_better
    cmp = compare_paired(
        metric,
        [r.line.get(metric, math.nan) for r in base],
        [r.line.get(metric, math.nan) for r in upgrade],
        goal,
        higher_is_better=higher,
    )
    imp = cmp.improvement
    improvement = {
        "mean": finite(imp.mean),
        "ci95": [finite(imp.ci95[0]), finite(imp.ci95[1])],
        "n": imp.n,
        "per_replication": [finite(x) for x in cmp.ratios],
        "baseline_mean": finite(cmp.baseline.mean),
        "upgrade_mean": finite(cmp.upgrade.mean),
    }
    if replication >= len(base):
        return RunVerdict(improvement, cmp.verdict.value, basis)
    base_line = base[replication].line
    bv = base_line.get(metric, math.nan)
    lv = (live or {}).get(metric, math.nan)
    live_improvement = None
    if math.isfinite(bv) and bv != 0 and math.isfinite(lv):
        live_improvement = lv / bv - 1 if higher else 1 - lv / bv
    return RunVerdict(improvement, cmp.verdict.value, basis, live_improvement, base_line)


async def batch_verdict(
    scenario: Scenario,
    base: Scenario,
    options: RunOptions,
    end: float,
    live: Mapping[str, float],
    progress: Callable[[str], None] | None = None,
) -> RunVerdict:
    """Run the paired replications over ``[warmup, end]`` and give their verdict on
    ``options.metric``; ``progress`` gets a line per replication done."""
    say = progress or (lambda _text: None)
    if end <= scenario.run.warmup:
        return RunVerdict(warnings=("the run ended before its warmup: no verdict",))
    n = options.replications or scenario.run.replications
    seed = scenario.run.seed
    b = base.with_run(duration=end, seed=seed, replications=n)
    u = scenario.with_run(duration=end, seed=seed, replications=n)
    jobs = [(b, i) for i in range(n)] + [(u, i) for i in range(n)]
    done = [0]

    def tick(r: ReplicationResult) -> None:
        done[0] += 1
        say(f"verdict: replication {done[0]}/{len(jobs)} done ({r.scenario} #{r.replication})")

    say(f"verdict: {n} paired batch replications of {end / 3600:g} h, base vs upgrade")
    # the replications run in worker processes; this thread only waits for them
    results = await asyncio.to_thread(_batch, jobs, options.workers, tick)
    if results is None:
        return RunVerdict(
            warnings=("the verdict's batch replications were interrupted: no verdict",)
        )
    return paired_verdict(
        results[:n],
        results[n:],
        metric=options.metric,
        goal=options.goal,
        basis=verdict_basis(base, scenario, n, end, options.metric),
        replication=options.replication,
        live=live,
    )


def _batch(
    jobs: list[tuple[Scenario, int]],
    workers: int | None,
    tick: Callable[[ReplicationResult], None],
) -> list[ReplicationResult] | None:
    """The replications; None when Ctrl-C reached the worker processes (they share the
    terminal's process group) and broke the pool."""
    from concurrent.futures.process import BrokenProcessPool

    from iiotbed.testbed.experiment import run_replications

    try:
        return run_replications(jobs, workers=workers, on_done=tick)
    except (KeyboardInterrupt, BrokenProcessPool):
        return None
