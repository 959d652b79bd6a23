"""``iiotbed run``: the whole testbed in one process, and its KPI report.

:func:`run_all` composes the parts: the :mod:`plan <iiotbed.testbed.plan>`, the run's
:mod:`record <iiotbed.testbed.record>` in the store, the :mod:`services
<iiotbed.testbed.services>` (broker, platform, devices, gateway), the
:mod:`report <iiotbed.testbed.report>` with its answer key and agreement, and with
``extends:`` the :mod:`verdict <iiotbed.testbed.verdict>` from paired batch replications.
At the end (the duration reached, or ``stop`` set by Ctrl-C/SIGTERM) the simulation stops
advancing, the gateway drains, the ingest settles, the telemetry KPIs are read, and only
then do the devices close. Agreement rules: ``docs/answer-key.md``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import TYPE_CHECKING

from iiotbed.testbed.agreement import agreement, line_view, lost_warnings
from iiotbed.testbed.plan import RunOptions, base_scenario, plan_run
from iiotbed.testbed.progress import Progress, run_progress
from iiotbed.testbed.record import RunRecord
from iiotbed.testbed.report import RunReport, live_figures, replay_answer_key, settle_warnings
from iiotbed.testbed.services import Services, preload
from iiotbed.testbed.verdict import RunVerdict, batch_verdict

if TYPE_CHECKING:
    from iiotbed.scenario import Scenario

__all__ = ["Watch", "run_all"]

#: shown the run while sim time moves: given a reader of the run's :class:`Progress`, an
#: ``async with`` around the paced stretch (the CLI's progress line)
Watch = Callable[[Callable[[], Progress]], AbstractAsyncContextManager[object]]


async def run_all(
    scenario: Scenario,
    options: RunOptions | None = None,
    *,
    stop: asyncio.Event | None = None,
    say: Callable[[str], None] | None = None,
    progress: Callable[[str], None] | None = None,
    watch: Watch | None = None,
) -> RunReport:
    """Run the testbed for ``scenario``; see the module docstring.

    ``stop`` ends the run early (the report covers the sim time reached); ``say`` gets
    the endpoint lines as soon as they are up, ``progress`` the verdict's progress and
    ``watch`` the run's :class:`Progress` while sim time moves.
    """
    from iiotbed.platform.layout import Layout

    preload()  # before the clock starts, as the report's wall time always was
    opts, tell = options or RunOptions(), say or (lambda _text: None)
    wall0 = time.monotonic()
    base = base_scenario(scenario, opts)
    plan = plan_run(scenario, opts, has_base=base is not None)
    layout, start = Layout.from_scenario(scenario), plan.start
    # a directory on local disk, once: a blocking call kept off the loop anyway
    await asyncio.to_thread(plan.run_dir.mkdir, parents=True, exist_ok=True)
    record = RunRecord(scenario, base, plan, opts)
    async with Services(scenario, plan, opts, on_platform=record.register) as tb:
        endpoints = tb.endpoints
        for line in tb.describe():
            tell(line)
        watching: AbstractAsyncContextManager[object] = (
            watch(lambda: run_progress(tb)) if watch is not None else nullcontext()
        )
        async with watching:
            ended = await tb.run(stop or asyncio.Event())
        end = max(start, tb.live.now)
        tell(f"simulation {'reached its duration' if ended == 'duration' else 'stopped'} "
             f"at {end:.0f} s of sim time; draining the gateway")  # fmt: skip
        settle = await tb.settle()
        telemetry = line_view(await tb.store.kpis(plan.run_id, layout, start, end))
        servers = tb.live.servers
        # changes a stalled OPC UA client's full queues dropped (the devices count them)
        lost = servers.lost if servers is not None else 0
        # the window is read: stop collecting, close the devices (and the event log)
        await tb.close_factory()
        # reading and replaying the event log: file I/O and CPU work, in a worker thread
        truth = await asyncio.to_thread(replay_answer_key, plan.events, layout, start, end)
        key = line_view(truth)
        verdict = None
        if base is not None:
            verdict = await batch_verdict(scenario, base, opts, end, key, progress)
        await record.save(tb.store, truth, end=end, ended=ended, verdict=verdict)
        v = verdict or RunVerdict()
        return RunReport(
            run_id=plan.run_id, scenario=scenario.name, dashboard=f"{tb.platform.url}/",
            endpoints=endpoints, start=start, end=end, ended=ended,
            wall_s=time.monotonic() - wall0, kpis=telemetry, answer_key=key,
            agreement=agreement(telemetry, key), metric=opts.metric, goal=opts.goal,
            settle=settle, improvement=v.improvement, verdict=v.verdict,
            verdict_basis=v.basis, live_improvement=v.live_improvement,
            baseline_run_id=plan.baseline_run_id, store=tb.store.url, run_dir=str(plan.run_dir),
            warnings=[*settle_warnings(settle, opts.settle_timeout), *lost_warnings(lost),
                      *v.warnings],
            live=live_figures(tb.live.summary, opts.speed),
        )  # fmt: skip
