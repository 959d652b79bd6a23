"""``iiotbed run``: the whole testbed in one process, and its KPI report.

:func:`run_all` opens, in one :class:`~contextlib.AsyncExitStack`, an embedded MQTT broker
(unless one is given), the platform (store, ingest, HTTP API and dashboard), the gateway
derived from the scenario and the live factory. The factory's pacer is held at sim time 0
until every collector is subscribed, so telemetry starts with the first record. At the
end (the duration reached, or ``stop`` set by Ctrl-C/SIGTERM) the simulation stops
advancing, the gateway drains, the ingest settles, and the KPIs the platform derives from
telemetry are set beside the simulator's answer key (the live run's own event log); then
every endpoint closes. With ``extends:`` the verdict comes from paired batch replications.
Agreement rules: ``docs/answer-key.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import math
import re
import time
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iiotbed._json import finite, finite_map
from iiotbed.agreement import Agreement, agreement, line_view
from iiotbed.errors import ConnectorError

if TYPE_CHECKING:
    from iiotbed.devices.live import LiveFactory
    from iiotbed.experiment import ReplicationResult
    from iiotbed.gateway.service import Gateway
    from iiotbed.platform.kpi import KpiReport
    from iiotbed.platform.layout import Layout
    from iiotbed.platform.service import Platform
    from iiotbed.platform.store import RunInfo, Store
    from iiotbed.scenario import Scenario

__all__ = ["DEFAULT_SPEED", "RunOptions", "RunReport", "run_all", "run_id_for"]

log = logging.getLogger(__name__)

#: sim seconds per wall second by default: the shipped 5G week, paced from its first
#: shift, in about 5.5 minutes (docs/answer-key.md)
DEFAULT_SPEED = 1500.0


@dataclass
class RunOptions:
    """How ``iiotbed run`` runs. ``speed`` None = as fast as the machine allows."""

    speed: float | None = DEFAULT_SPEED
    duration: float | None = None  # sim seconds (default: the scenario's)
    replication: int = 0
    broker: str | None = None  # None: an embedded broker on a free port
    store: str | None = None  # None: sqlite under runs_dir/<run_id>/store.db
    host: str = "127.0.0.1"
    port: int = 0  # dashboard; 0 = a free port
    opcua_port: int = 4840
    sparkplug_group: str | None = None  # default <enterprise>-<site>
    fast_forward: bool = True
    verdict: bool = True
    replications: int | None = None  # of the batch comparison (default: the scenario's)
    goal: float = 0.20
    metric: str = "labour_productivity"
    workers: int | None = None
    runs_dir: Path = Path(".iiotbed/runs")
    ready_timeout: float = 30.0  # collectors subscribed before the simulation starts
    settle_timeout: float = 120.0  # everything forwarded is stored
    quiet_s: float = 0.5  # no new telemetry for this long (wall s) = the gateway has it all


@dataclass
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


# --------------------------------------------------------------------------- agreement


def run_id_for(scenario: Scenario, now: dt.datetime | None = None) -> str:
    """A new run id: scenario slug, UTC time, a short random suffix."""
    now = now or dt.datetime.now(dt.UTC)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", scenario.name).strip("-").lower()[:40] or "run"
    return f"{slug}-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


# --------------------------------------------------------------------------- the run


def _print(fn: Callable[[str], None] | None, text: str) -> None:
    if fn is not None:
        fn(text)


async def _wait_ready(gw: Gateway, live: LiveFactory, limit: float) -> None:
    """Every collector subscribed (and the Sparkplug host has seen the births)."""
    missing: list[str] = []
    try:
        async with asyncio.timeout(limit):
            while True:
                missing = [c.name for c in gw.collectors if not c.connected]
                if live.edge is not None:
                    # the host's births counter (only the Sparkplug host has one)
                    missing += [f"{c.name} (births)" for c in gw.collectors
                                if getattr(c.stats, "births", None) == 0]  # fmt: skip
                if not missing:
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise ConnectorError(
            f"gateway collectors not ready after {limit:g} s: {', '.join(missing)}; "
            f"is the broker reachable and the OPC UA port free?"
        ) from None


async def _settle(gw: Gateway, platform: Platform, opts: RunOptions) -> dict[str, Any]:
    """Wait until the gateway has received everything and the platform stored it all."""
    assert platform.ingest is not None
    ingest = platform.ingest
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + opts.settle_timeout
    last: tuple[int, ...] | None = None
    quiet_since = loop.time()
    timed_out = False
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            timed_out = True
            break
        try:
            async with asyncio.timeout(remaining):
                await gw.flush()
                await ingest.drain()
        except TimeoutError:
            timed_out = True
            break
        m = gw.metrics()
        im = ingest.metrics
        snap = (m["received"], m["forwarded"], im.messages, im.received + im.events)
        caught_up = (
            m["buffered"] == 0 and im.pending == 0 and im.received + im.events >= m["forwarded"]
        )
        if snap != last:
            last, quiet_since = snap, loop.time()
        elif caught_up and loop.time() - quiet_since >= opts.quiet_s:
            break
        await asyncio.sleep(0.05)
    m = gw.metrics()
    im = ingest.metrics
    return {
        "seconds": round(loop.time() - started, 3),
        "timed_out": timed_out,
        "gateway_received": m["received"],
        "gateway_forwarded": m["forwarded"],
        "gateway_buffered": m["buffered"],
        "gateway_dropped": m["dropped"],
        "ingest_received": im.received + im.events,
        "stored": im.stored + im.events_stored,
        "duplicates": im.duplicates,
        "malformed": im.malformed + m["malformed"],
    }


def _base_answer_key(
    base: Scenario, replication: int, layout: Layout, start: float, end: float
) -> dict[str, Any]:
    from iiotbed.devices.sim import simulate
    from iiotbed.platform.kpi import compute_kpis

    records = simulate(base, replication, duration=end)
    return compute_kpis(records, layout, start=start, end=end).to_dict()


async def _register(
    store: Store,
    scenario: Scenario,
    run_id: str,
    base: Scenario | None,
    baseline_run_id: str | None,
    opts: RunOptions,
    start: float,
    end: float,
) -> tuple[RunInfo, RunInfo | None]:
    """The run, its assets and, with a base, the baseline run with its answer key."""
    from iiotbed.platform.catalog import run_info, scenario_assets
    from iiotbed.platform.layout import Layout

    await store.upsert_assets(scenario_assets(scenario))
    base_key = None
    if base is not None and baseline_run_id is not None:
        # the base's answer key for the same replication and window: the dashboard's
        # progress line during the run (the verdict itself comes from the batch at the
        # end); CPU work in a thread, while nothing is paced yet
        base_key = await asyncio.to_thread(
            _base_answer_key, base, opts.replication, Layout.from_scenario(base), start, end
        )
    base_info = None
    if base is not None and baseline_run_id is not None:
        base_info = run_info(base, baseline_run_id, replication=opts.replication,
                             answer_key=base_key, status="finished")  # fmt: skip
        await store.upsert_run(base_info)
    info = run_info(scenario, run_id, replication=opts.replication, speed=opts.speed,
                    baseline_run_id=baseline_run_id, goal=opts.goal)  # fmt: skip
    await store.upsert_run(info)
    return info, base_info


def _answer_key(events: Path, layout: Layout, start: float, end: float) -> KpiReport:
    """The simulator's KPIs: the engine over the live run's own event log."""
    from iiotbed.eventlog import load_records
    from iiotbed.platform.kpi import compute_kpis

    return compute_kpis(load_records(events), layout, start=start, end=end)


async def run_all(
    scenario: Scenario,
    options: RunOptions | None = None,
    *,
    stop: asyncio.Event | None = None,
    say: Callable[[str], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> RunReport:
    """Run the testbed for ``scenario``; see the module docstring.

    ``stop`` ends the run early (the report covers the sim time reached); ``say`` gets
    the endpoint lines as soon as they are up, ``progress`` the verdict's progress.
    """
    from iiotbed.devices.live import LiveFactory, LiveOptions
    from iiotbed.gateway.service import Gateway
    from iiotbed.gateway.settings import settings_from_scenario
    from iiotbed.platform.broker import EmbeddedBroker
    from iiotbed.platform.layout import Layout
    from iiotbed.platform.service import Platform
    from iiotbed.scenario import load_scenario

    opts = options or RunOptions()
    stop = stop or asyncio.Event()
    wall0 = time.monotonic()
    run_id = run_id_for(scenario)
    run_dir = opts.runs_dir / run_id
    # a directory on local disk, once: a blocking call kept off the loop anyway
    await asyncio.to_thread(run_dir.mkdir, parents=True, exist_ok=True)
    store_url = opts.store or f"sqlite:///{run_dir / 'store.db'}"
    duration = opts.duration if opts.duration is not None else scenario.run.duration
    start = min(scenario.run.warmup, duration)
    layout = Layout.from_scenario(scenario)
    base: Scenario | None = None
    if opts.verdict and scenario.base_path is not None:
        # the base on this run's seed and warmup: replication i of both shares its streams
        base = load_scenario(scenario.base_path).with_run(
            seed=scenario.run.seed, warmup=scenario.run.warmup
        )
    baseline_run_id = f"{run_id}-baseline" if base is not None else None
    warnings: list[str] = []

    async with AsyncExitStack() as stack:
        broker_url = opts.broker
        if broker_url is None:
            broker = await stack.enter_async_context(EmbeddedBroker())
            broker_url = broker.url
        platform = await stack.enter_async_context(
            Platform(
                broker=broker_url,
                store=store_url,
                host=opts.host,
                port=opts.port,
                scenario=scenario,
            )
        )
        store = platform.store
        assert store is not None
        info, base_info = await _register(
            store, scenario, run_id, base, baseline_run_id, opts, start, duration
        )

        settings = settings_from_scenario(
            scenario, broker_url, opcua_port=opts.opcua_port, host=opts.host,
            replication=opts.replication, buffer=run_dir / "gateway.db", run_id=run_id,
            sparkplug_group=opts.sparkplug_group,
        )  # fmt: skip
        if settings.sparkplug is not None:
            # this run's own host id: the edge node births for this gateway, not for
            # another one that happens to share the broker
            host = settings.sparkplug.model_copy(update={"host_id": f"iiotbed-{run_id}"})
            settings = settings.model_copy(update={"sparkplug": host})
        events_path = run_dir / "events.jsonl"
        live = LiveFactory(
            scenario,
            LiveOptions(
                speed=opts.speed, duration=duration, replication=opts.replication,
                host=opts.host, opcua_port=opts.opcua_port, broker=broker_url,
                sparkplug_group=opts.sparkplug_group,
                primary_host=settings.sparkplug.host_id if settings.sparkplug else None,
                events=events_path, fast_forward=opts.fast_forward,
            ),
        )  # fmt: skip
        # held at sim time 0 until the gateway listens: telemetry starts with the first record
        live.pacer.pause()
        devices = AsyncExitStack()
        stack.push_async_callback(devices.aclose)
        await devices.enter_async_context(live)
        # the gateway and the devices have their own stacks, left explicitly once the data
        # are in (gateway first: no reconnect attempts to closing servers); on a failure the
        # outer stack leaves them in the same order. The devices start first, paused: the
        # Sparkplug edge waits for the gateway host's STATE before its births.
        collectors = AsyncExitStack()
        stack.push_async_callback(collectors.aclose)
        gw = await collectors.enter_async_context(Gateway(settings))
        await _wait_ready(gw, live, opts.ready_timeout)

        endpoints: dict[str, Any] = {
            "dashboard": f"{platform.url}/",
            "api": f"{platform.url}/api",
            "broker": broker_url,
            "store": store.url,
            "devices": live.endpoints,
            "uns": f"{settings.output.root}/_stream/{scenario.line_path}",
        }
        _print(say, f"run {run_id}")
        _print(say, f"  dashboard  {platform.url}/   (API {platform.url}/docs)")
        _print(say, f"  broker     {broker_url}" + ("" if opts.broker else "  (embedded)"))
        _print(say, f"  store      {store.url}")
        for line in live.endpoints:
            _print(say, f"  {line}")
        _print(say, f"  gateway    {gw.settings.id}: {', '.join(settings.collector_names())} -> "
                    f"{endpoints['uns']}")  # fmt: skip
        live.pacer.resume()

        run_task = asyncio.ensure_future(live.wait())
        stop_task = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({run_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_task.cancel()
        ended = "duration"
        if run_task.done():
            run_task.result()  # raises what stopped the simulation
        else:
            ended = "stopped"
            live.pacer.pause()  # sim time freezes; the endpoints stay up until drained
            run_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run_task
            await asyncio.sleep(0)
        end = max(start, live.now)
        _print(say, f"simulation {'reached its duration' if ended == 'duration' else 'stopped'} "
                    f"at {end:.0f} s of sim time; draining the gateway")  # fmt: skip

        settle = await _settle(gw, platform, opts)
        if settle["timed_out"]:
            warnings.append(
                f"ingest did not settle within {opts.settle_timeout:g} s "
                f"(gateway forwarded {settle['gateway_forwarded']}, platform received "
                f"{settle['ingest_received']}): the telemetry KPIs may miss the newest data"
            )
        telemetry = await store.kpis(run_id, layout, start, end)
        # the report's window is read: stop collecting, then close the devices (and their
        # event log, the answer key's source)
        await collectors.aclose()
        await devices.aclose()
        # reading and replaying the event log: file I/O and CPU work, in a worker thread
        truth = await asyncio.to_thread(_answer_key, events_path, layout, start, end)
        tele_view, key_view = line_view(telemetry), line_view(truth)
        agree = agreement(tele_view, key_view)

        report = RunReport(
            run_id=run_id, scenario=scenario.name, dashboard=f"{platform.url}/",
            endpoints=endpoints, start=start, end=end, ended=ended, wall_s=0.0,
            kpis=tele_view, answer_key=key_view, agreement=agree, metric=opts.metric,
            goal=opts.goal, settle=settle, baseline_run_id=baseline_run_id,
            store=store.url, run_dir=str(run_dir), warnings=warnings,
        )  # fmt: skip

        summary = live.summary
        report.live = {
            "speed": opts.speed,
            "records": summary.records,
            "max_lag_s": round(summary.max_lag_s, 3),
            "opcua_writes": summary.opcua_writes,
            "sparkplug_published": summary.sparkplug_published,
            "vda5050_published": summary.vda_published,
        }
        answer: dict[str, Any] = truth.to_dict()
        if base is not None:
            base_line = await _verdict(report, scenario, base, opts, end, progress)
            if base_line is not None and base_info is not None and end != duration:
                # the run stopped early: the baseline's answer key over the same window
                await store.upsert_run(
                    dataclasses.replace(base_info, answer_key={"line": finite_map(base_line)})
                )
            answer["comparison"] = {
                "metric": opts.metric, "goal": opts.goal, "improvement": report.improvement,
                "verdict": report.verdict, "basis": report.verdict_basis,
            }  # fmt: skip
        status = "finished" if ended == "duration" else "stopped"
        await store.upsert_run(
            dataclasses.replace(
                info, answer_key=answer, status=status, ended=dt.datetime.now(dt.UTC)
            )
        )
        report.wall_s = time.monotonic() - wall0
        return report


async def _verdict(
    report: RunReport,
    scenario: Scenario,
    base: Scenario,
    opts: RunOptions,
    end: float,
    progress: Callable[[str], None] | None,
) -> dict[str, float] | None:
    """Paired batch replications (common random numbers) of base vs scenario over the
    window the live run covered; the verdict on ``opts.metric``."""
    from iiotbed.platform.kpi import KPI_INFO
    from iiotbed.platform.stats import compare_paired

    n = opts.replications or scenario.run.replications
    seed = scenario.run.seed
    if end <= scenario.run.warmup:
        report.warnings.append("the run ended before its warmup: no verdict")
        return None
    b = base.with_run(duration=end, seed=seed, replications=n)
    u = scenario.with_run(duration=end, seed=seed, replications=n)
    jobs = [(b, i) for i in range(n)] + [(u, i) for i in range(n)]
    done = [0]

    def tick(r: ReplicationResult) -> None:
        done[0] += 1
        _print(
            progress,
            f"verdict: replication {done[0]}/{len(jobs)} done ({r.scenario} #{r.replication})",
        )

    _print(progress, f"verdict: {n} paired batch replications of {end / 3600:g} h, base vs upgrade")
    # the replications run in worker processes; this thread only waits for them
    results = await asyncio.to_thread(_batch, jobs, opts.workers, tick)
    if results is None:
        report.warnings.append("the verdict's batch replications were interrupted: no verdict")
        return None
    b_res, u_res = results[:n], results[n:]
    metric = opts.metric
    higher = KPI_INFO[metric].higher_is_better
    cmp = compare_paired(
        metric,
        [r.line.get(metric, math.nan) for r in b_res],
        [r.line.get(metric, math.nan) for r in u_res],
        opts.goal,
        higher_is_better=higher,
    )
    imp = cmp.improvement
    report.improvement = {
        "mean": finite(imp.mean),
        "ci95": [finite(imp.ci95[0]), finite(imp.ci95[1])],
        "n": imp.n,
        "per_replication": [finite(x) for x in cmp.ratios],
        "baseline_mean": finite(cmp.baseline.mean),
        "upgrade_mean": finite(cmp.upgrade.mean),
    }
    report.verdict = cmp.verdict.value
    report.verdict_basis = (
        f"{n} paired batch replications (common random numbers, seed {seed}) of "
        f"{base.name!r} vs {scenario.name!r} over [{scenario.run.warmup:g}, {end:g}] s; "
        f"paired Student-t 95 % CI of the relative improvement of {metric}"
    )
    rep = opts.replication
    if rep >= n:
        return None
    bv = b_res[rep].line.get(metric, math.nan)
    lv = report.answer_key.get(metric, math.nan)
    if math.isfinite(bv) and bv != 0 and math.isfinite(lv):
        report.live_improvement = lv / bv - 1 if higher else 1 - lv / bv
    return b_res[rep].line


def _batch(
    jobs: list[tuple[Scenario, int]],
    workers: int | None,
    tick: Callable[[ReplicationResult], None],
) -> list[ReplicationResult] | None:
    """The replications; None when Ctrl-C reached the worker processes (they share the
    terminal's process group) and broke the pool."""
    from concurrent.futures.process import BrokenProcessPool

    from iiotbed.experiment import run_replications

    try:
        return run_replications(jobs, workers=workers, on_done=tick)
    except (KeyboardInterrupt, BrokenProcessPool):
        return None
