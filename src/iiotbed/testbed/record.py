"""The run in the platform's store: registered before the devices start, saved at the end.

Registered: the run (scenario, seed, speed, goal, baseline link), its assets and, with a
base, the baseline run with its answer key over the planned window (the dashboard's
progress line). Saved: the run's answer key, the comparison, its status and end time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from typing import TYPE_CHECKING, Any

from iiotbed._json import finite_map

if TYPE_CHECKING:
    from iiotbed.platform.kpi import KpiReport
    from iiotbed.platform.store import RunInfo, Store
    from iiotbed.scenario import Scenario
    from iiotbed.testbed.plan import RunOptions, RunPlan
    from iiotbed.testbed.services import Ended
    from iiotbed.testbed.verdict import RunVerdict

__all__ = ["RunRecord"]


class RunRecord:
    """One run's rows in the store: :meth:`register`, then :meth:`save`."""

    def __init__(
        self, scenario: Scenario, base: Scenario | None, plan: RunPlan, options: RunOptions
    ) -> None:
        self.scenario = scenario
        self.base = base
        self.plan = plan
        self.options = options
        self.info: RunInfo | None = None
        self.base_info: RunInfo | None = None

    async def register(self, store: Store) -> None:
        """The run, its assets and, with a base, the baseline run with its answer key."""
        from iiotbed.platform.catalog import run_info, scenario_assets

        scenario, base, plan, opts = self.scenario, self.base, self.plan, self.options
        await store.upsert_assets(scenario_assets(scenario))
        if base is not None and plan.baseline_run_id is not None:
            # the base's answer key for the same replication and window: the dashboard's
            # progress line during the run (the verdict itself comes from the batch at the
            # end); CPU work in a thread, while nothing is paced yet
            base_key = await asyncio.to_thread(
                _base_answer_key, base, opts.replication, plan.start, plan.duration
            )
            self.base_info = run_info(base, plan.baseline_run_id, replication=opts.replication,
                                      answer_key=base_key, status="finished")  # fmt: skip
            await store.upsert_run(self.base_info)
        self.info = run_info(scenario, plan.run_id, replication=opts.replication,
                             speed=opts.speed, baseline_run_id=plan.baseline_run_id,
                             goal=opts.goal)  # fmt: skip
        await store.upsert_run(self.info)

    async def save(
        self,
        store: Store,
        answer_key: KpiReport,
        *,
        end: float,
        ended: Ended,
        verdict: RunVerdict | None,
    ) -> None:
        """The run's answer key (with the comparison, given a verdict) and its end."""
        assert self.info is not None, "register first"
        answer: dict[str, Any] = answer_key.to_dict()
        if verdict is not None:
            if (
                verdict.base_line is not None
                and self.base_info is not None
                and end != self.plan.duration
            ):
                # the run stopped early: the baseline's answer key over the same window
                await store.upsert_run(
                    dataclasses.replace(
                        self.base_info, answer_key={"line": finite_map(verdict.base_line)}
                    )
                )
            answer["comparison"] = verdict.comparison(self.options.metric, self.options.goal)
        status = "finished" if ended == "duration" else "stopped"
        await store.upsert_run(
            dataclasses.replace(
                self.info, answer_key=answer, status=status, ended=dt.datetime.now(dt.UTC)
            )
        )


def _base_answer_key(base: Scenario, replication: int, start: float, end: float) -> dict[str, Any]:
    from iiotbed.devices.sim import simulate
    from iiotbed.platform.kpi import compute_kpis
    from iiotbed.platform.layout import Layout

    records = simulate(base, replication, duration=end)
    return compute_kpis(records, Layout.from_scenario(base), start=start, end=end).to_dict()
