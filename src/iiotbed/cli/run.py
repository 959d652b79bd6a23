"""The ``run`` command: the whole testbed in one command, its report and verdict."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from iiotbed.cli.security import SecurityOption, check_security
from iiotbed.errors import IiotbedError

if TYPE_CHECKING:
    from iiotbed.scenario import Scenario

from iiotbed.cli._common import (
    _SHOWN,
    DEFAULT_RUNS_DIR,
    AsJson,
    Duration,
    FileArg,
    Goal,
    HtmlReport,
    NoVerdict,
    Replications,
    RunsDir,
    SparkplugGroup,
    VerdictMetric,
    Workers,
    _check_broker,
    _check_metric,
    _check_report,
    _duration,
    _err,
    _fmt,
    _load,
    _pct,
    _user_errors,
    _write_report,
    app,
)

__all__ = ["RUN_SPEED", "run_cmd"]


#: `iiotbed.testbed.DEFAULT_SPEED`, not imported from there: asyncio would slow `--help`
RUN_SPEED = 1500.0


@app.command("run")
def run_cmd(
    file: FileArg,
    speed: Annotated[
        float,
        typer.Option("--speed", min=0.001, help="Sim seconds per wall second (1 = real time)."),
    ] = RUN_SPEED,
    duration: Duration = None,
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            envvar="IIOTBED_BROKER",
            help="MQTT broker, e.g. mqtt://127.0.0.1:1883 (default: an embedded one on a free port).",
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            envvar="IIOTBED_STORE",
            help="sqlite:///file.db or postgresql://host:5432/db[?schema=s] "
            "(default <runs dir>/<run_id>/store.db).",
        ),
    ] = None,
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Dashboard/API port (0: a free one).")
    ] = 0,
    opcua_port: Annotated[
        int, typer.Option("--opcua-port", min=1, max=65535, help="OPC UA server port.")
    ] = 4840,
    sparkplug_group: SparkplugGroup = None,
    replications: Replications = None,
    goal: Goal = 0.20,
    metric: VerdictMetric = "labour_productivity",
    workers: Workers = None,
    no_verdict: NoVerdict = False,
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
    as_json: AsJson = False,
    html: HtmlReport = None,
    security: SecurityOption = "open",
    secrets_dir: Annotated[
        Path | None,
        typer.Option(
            "--secrets",
            file_okay=False,
            help="Secure profile: secrets `iiotbed certs` wrote (default: new ones in the "
            "run's directory).",
        ),
    ] = None,
    record_to: Annotated[
        Path | None,
        typer.Option(
            "--record",
            dir_okay=False,
            help="Also record the run into this MCAP file while it runs, as `iiotbed record` "
            "does (device traffic, event log, OPC UA values, the run's answer key).",
        ),
    ] = None,
) -> None:
    """The whole testbed: devices, broker, gateway, platform and dashboard; the KPI report."""
    import asyncio
    import logging
    import signal

    from iiotbed.cli.progress import ProgressLine, progress_mode
    from iiotbed.testbed import RunOptions, run_all

    with _user_errors():
        d = _duration(duration)
        info = _check_metric(metric)
        _check_broker(broker)
        profile = check_security(security, broker, secrets_dir)
        _check_report(html)
        if record_to is not None:
            _check_record(record_to, profile)
        if store is not None:
            from iiotbed.platform.store import open_store

            try:
                open_store(store)  # checks the URL; nothing is opened
            except IiotbedError as exc:
                raise typer.BadParameter(str(exc), param_hint="--store") from None
        scenario = _load(file)
        if d is not None:
            # counted from the first shift: the unpaced stretch before it (the shipped
            # scenarios start at midnight) is not what `--duration 8h` asks to see
            end = _first_production(scenario) + d
            scenario = _load(file, duration=end)
        opts = RunOptions(
            speed=speed, duration=scenario.run.duration, broker=broker, store=store, port=port,
            opcua_port=opcua_port, sparkplug_group=sparkplug_group,
            verdict=not no_verdict, replications=replications,
            goal=goal, metric=metric, workers=workers, runs_dir=runs_dir,
            security=profile, secrets=secrets_dir,
        )  # fmt: skip

        # the endpoints go to stdout, or to stderr when stdout carries the JSON report
        def say(message: str) -> None:
            if as_json:
                _err(message)
            else:
                typer.echo(message)
            sys.stdout.flush()

        say(_run_plan(scenario, speed, opts))
        mode = progress_mode(as_json=as_json)
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        # asyncua logs a closed session's pending requests as tracebacks: not our news
        logging.getLogger("asyncua").setLevel(logging.CRITICAL)

        async def main() -> Any:
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()
            task = asyncio.current_task()

            def on_signal() -> None:
                if stop.is_set():  # a second Ctrl-C: give up on the orderly end
                    assert task is not None
                    task.cancel()
                    return
                stop.set()
                _err("stopping: the simulation halts, the gateway drains, then the report")

            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, on_signal)
            try:
                if record_to is None:
                    report = await run_all(
                        scenario, opts, stop=stop, say=say, progress=_err,
                        watch=lambda read: ProgressLine(read, mode),
                    )  # fmt: skip
                    return report, None
                return await _run_recorded(scenario, file, record_to, opts, stop, say, mode)
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

        try:
            report, recorded = asyncio.run(main())
        except asyncio.CancelledError:
            _err("interrupted twice: stopped without a report")
            raise typer.Exit(130) from None
        if as_json:
            d = report.to_dict()
            if recorded is not None:
                d["recording"] = _recording_dict(recorded)
            typer.echo(json.dumps(d, indent=2, allow_nan=False))
        else:
            _print_run_report(report, info)
            if recorded is not None:
                typer.echo(_recording_line(recorded))
        if html is not None:
            from iiotbed.testbed.html_report import write_run_report

            _write_report(
                html, lambda path: write_run_report(path, report.to_dict(), scenario), say
            )
        if not report.agrees:
            bad = [k for k, a in report.agreement.items() if not a.ok]
            _err(f"error: telemetry KPIs disagree with the answer key: {', '.join(bad)}")
            raise typer.Exit(1)


def _check_record(path: Path, security: str) -> None:
    if not path.parent.is_dir():
        raise typer.BadParameter(f"{path.parent} is not a directory", param_hint="--record")
    if security != "open":
        raise typer.BadParameter(
            "records the open profile only (the recorder subscribes without a login); "
            "leave out --security secure, or record with `iiotbed record`",
            param_hint="--record",
        )


async def _run_recorded(
    scenario: Scenario, file: Path, out: Path, opts: Any, stop: Any, say: Any, mode: Any
) -> tuple[Any, Any]:
    """The run with its devices' traffic written to ``out`` as it goes (the recorder taps the
    broker from before the births), then the event log and the run's answer key."""
    import dataclasses
    import time
    from contextlib import AsyncExitStack, asynccontextmanager

    from iiotbed.cli.progress import ProgressLine
    from iiotbed.platform.broker import EmbeddedBroker
    from iiotbed.recording.recorder import LiveRecorder
    from iiotbed.testbed import run_all

    wall0 = time.monotonic()
    plant = scenario.plant
    supply = scenario.supply
    fleet = supply.amr if supply is not None and supply.mode == "amr" else None
    async with AsyncExitStack() as stack:
        if opts.broker is None:
            # the recorder must listen before the devices' births: the broker is started
            # here, not by the run, so its address is known first
            broker = await stack.enter_async_context(EmbeddedBroker())
            opts = dataclasses.replace(opts, broker=broker.url)
        rec = await stack.enter_async_context(LiveRecorder(
            scenario, out, opts.broker,
            group=opts.sparkplug_group or f"{plant.enterprise}-{plant.site}",
            manufacturer=fleet.manufacturer if fleet is not None else "",
        ))  # fmt: skip

        @asynccontextmanager
        async def watch(read: Any) -> Any:
            # the run's sim clock stamps each message; frozen where the run stopped
            rec.clock = lambda: float(read().sim_s)
            try:
                async with ProgressLine(read, mode):
                    yield
            finally:
                reached = float(read().sim_s)
                rec.clock = lambda: reached

        report = await run_all(scenario, opts, stop=stop, say=say, progress=_err, watch=watch)
        await rec.quiet(0.3, 10.0)  # the devices closed: their deaths are on the way
        summary = await rec.finish(
            file, Path(report.run_dir) / "events.jsonl", start=report.start, end=report.end,
            speed=opts.speed, replication=opts.replication,
            paced_from=min(_first_production(scenario), report.end),
            sparkplug_group=opts.sparkplug_group, wall0=wall0,
        )  # fmt: skip
    return report, summary


def _recording_dict(s: Any) -> dict[str, Any]:
    return {"path": str(s.path), "size_bytes": s.size, "mqtt_messages": s.mqtt_messages,
            "records": s.records, "opcua_values": s.opcua_values}  # fmt: skip


def _recording_line(s: Any) -> str:
    return (f"recorded {s.path}: {s.size / 1e6:.2f} MB, {s.mqtt_messages} MQTT messages, "
            f"{s.records} records, {s.opcua_values} OPC UA values")  # fmt: skip


def _first_production(scenario: Scenario) -> float:
    """Sim time of the first production window (where a live run starts pacing)."""
    from iiotbed.devices.sim.calendar import ProductionCalendar

    try:
        return float(ProductionCalendar(scenario).next_production(0.0))
    except ValueError:  # a calendar without production: paced from the epoch
        return 0.0


def _run_plan(scenario: Scenario, speed: float, opts: Any) -> str:
    duration = scenario.run.duration
    first = min(_first_production(scenario), duration)
    wall = (duration - first) / speed
    ff = f"unpaced to the first shift (t={first:g} s), then " if first > 0 else ""
    n = opts.replications or scenario.run.replications
    then = (
        f"; then {n} paired batch replications against {scenario.base_path} for the verdict"
        if scenario.base_path is not None and opts.verdict
        else ""
    )
    return (
        f"{scenario.name}: sim time 0 .. {duration / 3600:g} h, {ff}paced at {speed:g}x: "
        f"about {_wall_time(wall)} of wall time{then}. Ctrl-C ends early with a report."
    )


def _wall_time(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _print_run_report(report: Any, info: dict[str, Any], *, live: bool = True) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{report.scenario} - run {report.run_id}, window {report.start:g} .. "
        f"{report.end:g} s ({report.ended})",
        title_justify="left",
    )
    for col, justify in (("KPI", "left"), ("unit", "left"), ("telemetry", "right"),
                         ("answer key", "right"), ("difference", "right"), ("agrees", "left")):  # fmt: skip
        table.add_column(col, justify=justify, no_wrap=col == "KPI")  # type: ignore[arg-type]
    for k in (*_SHOWN, "scrap_count", "processed", "failures", "energy_kwh", "pbt_h"):
        a = report.agreement.get(k)
        if a is None:
            continue
        diff = "n/a" if a.difference is None else f"{a.difference:.3g}"
        rule = "exact" if a.kind == "counter" else f"rel {a.tolerance:g}"
        table.add_row(
            k, str(getattr(info.get(k), "unit", "") or ""),
            _fmt(math.nan if a.telemetry is None else a.telemetry),
            _fmt(math.nan if a.answer_key is None else a.answer_key),
            diff, f"{'yes' if a.ok else 'NO'} ({rule})",
        )  # fmt: skip
    Console(width=max(110, Console().width)).print(table)
    st = report.settle
    if not live:  # `iiotbed report`: a stack's run, read from its store
        typer.echo(f"telemetry: platform stored {st.get('stored')} records of run {report.run_id}")
    else:
        typer.echo(
            f"telemetry: gateway received {st.get('gateway_received')}, forwarded "
            f"{st.get('gateway_forwarded')}, platform stored {st.get('stored')} "
            f"(settled in {st.get('seconds')} s); wall time {report.wall_s:.1f} s, "
            f"worst lag behind the pace {report.live.get('max_lag_s')} s"
        )
    if live:
        typer.echo(_security_line(report))
    for w in report.warnings:
        typer.echo(f"warning: {w}")
    if report.verdict is not None and report.improvement is not None:
        imp = report.improvement
        lo, hi = imp["ci95"]
        typer.echo(
            f"\n{report.metric}: improvement {_pct(_nan(imp['mean']))} (95 % CI "
            f"{_pct(_nan(lo))} .. {_pct(_nan(hi))}, n={imp['n']}) against a goal of "
            f"{report.goal:+.0%}"
        )
        typer.echo(f"verdict: {report.verdict}")
        typer.echo(f"  from {report.verdict_basis}")
        if report.live_improvement is not None:
            typer.echo(
                f"  this live run alone (its answer key vs the base's, same replication): "
                f"{_pct(report.live_improvement)} - for information, not the verdict"
            )
    if live:
        typer.echo(f"dashboard (closed now): {report.dashboard}  store: {report.store}")


def _security_line(report: Any) -> str:
    """The run's profile and, secure, how many publishes the broker's ACL refused."""
    profile = report.endpoints.get("security", "open")
    denied = report.settle.get("denied")
    if profile != "secure":
        return f"security: {profile}"
    counted = (
        "not counted (not the embedded broker)" if denied is None
        else f"{denied} publish{'es' if denied != 1 else ''} denied by the broker's ACL"
    )  # fmt: skip
    return f"security: secure (TLS, logins, ACLs, OPC UA SignAndEncrypt, API token); {counted}"


def _nan(x: float | None) -> float:
    return math.nan if x is None else x
