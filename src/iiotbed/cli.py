"""The ``iiotbed`` command line.

Heavy modules (SimPy, numpy, scipy, the KPI engine) are imported inside the commands so
that ``iiotbed --help`` stays instant. User mistakes exit with status 2 and a message
that names the file, the line and the fix; they never print a traceback.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from iiotbed import __version__
from iiotbed.errors import IiotbedError, ScenarioError

if TYPE_CHECKING:
    from iiotbed.experiment import ReplicationResult
    from iiotbed.platform.stats import Comparison, Summary
    from iiotbed.scenario import Scenario

__all__ = ["app", "main"]

app = typer.Typer(
    name="iiotbed",
    help="A simulated Industrial-IoT factory: scenarios, KPIs and the +20 % verdict.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: KPIs shown in the tables, in this order (all of the engine's line KPIs go to --json)
_SHOWN = (
    "labour_productivity",
    "throughput",
    "oee",
    "availability",
    "performance",
    "quality",
    "mtbf",
    "mttr",
    "scrap_ratio",
    "first_pass_yield",
    "energy_per_good_unit",
    "good_count",
    "labour_hours",
)


def _err(message: str) -> None:
    typer.echo(message, err=True)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn our errors into a message and an exit status: 2 for bad input, 1 otherwise."""
    try:
        yield
    except ScenarioError as exc:
        for issue in exc.issues:
            _err(f"error: {issue}")
        raise typer.Exit(2) from None
    except IiotbedError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(1) from None


def _duration(value: str | None) -> float | None:
    if value is None:
        return None
    from iiotbed.scenario import parse_duration

    try:
        seconds = parse_duration(value)
        if isinstance(seconds, str):
            raise ValueError(seconds)
        seconds = float(seconds)
    except (TypeError, ValueError):
        raise typer.BadParameter(
            f"{value!r} is not a duration; use a number of seconds or e.g. 8h, 45min, 7d"
        ) from None
    if not seconds > 0:
        raise typer.BadParameter(f"duration must be > 0, got {value!r}")
    return seconds


def _load(
    path: Path,
    *,
    duration: float | None = None,
    seed: int | None = None,
    replications: int | None = None,
) -> Scenario:
    from iiotbed.scenario import load_scenario

    scenario = load_scenario(path)
    changes: dict[str, Any] = {}
    if duration is not None:
        changes["duration"] = duration
        if scenario.run.warmup >= duration:
            raise typer.BadParameter(
                f"--duration {duration:g} s is not longer than the scenario's warmup "
                f"({scenario.run.warmup:g} s)",
                param_hint="--duration",
            )
    if seed is not None:
        changes["seed"] = seed
    if replications is not None:
        changes["replications"] = replications
    return scenario.with_run(**changes) if changes else scenario


def _version(value: bool) -> None:
    if value:
        typer.echo(f"iiotbed {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """A simulated Industrial-IoT factory: scenarios, KPIs and the +20 % verdict."""


FileArg = Annotated[
    Path, typer.Argument(help="Scenario YAML file.", dir_okay=False, show_default=False)
]
Replications = Annotated[
    int | None,
    typer.Option(
        "--replications", "-n", min=1, max=1000, help="Replications (default: the scenario's)."
    ),
]
Duration = Annotated[
    str | None,
    typer.Option(
        "--duration",
        "-d",
        help="Simulated time per replication, e.g. 8h, 7d (default: the scenario's).",
    ),
]
Seed = Annotated[
    int | None, typer.Option("--seed", min=0, help="Base seed (default: the scenario's).")
]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        "-j",
        min=1,
        envvar="IIOTBED_WORKERS",
        help="Worker processes (default: one per core).",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
Goal = Annotated[
    float,
    typer.Option("--goal", min=-1.0, max=100.0, help="Relative improvement to reach (0.20 = +20 %)."),
]
OpcuaPort = Annotated[
    int, typer.Option("--opcua-port", min=1, max=65535, help="Port of the first OPC UA server.")
]
OpcuaLayout = Annotated[
    str, typer.Option("--opcua-layout", help="'line': one server; 'machine': one per machine.")
]
SparkplugGroup = Annotated[
    str | None,
    typer.Option("--sparkplug-group", help="Sparkplug group id (default <enterprise>-<site>)."),
]


def _check_broker(broker: str | None) -> None:
    if broker is not None:
        from iiotbed.mqtt import parse_broker_url

        try:
            parse_broker_url(broker)
        except IiotbedError as exc:
            raise typer.BadParameter(str(exc), param_hint="--broker") from None


def _check_opcua_layout(opcua_layout: str) -> None:
    if opcua_layout not in ("line", "machine"):
        raise typer.BadParameter(
            f"{opcua_layout!r}: use 'line' or 'machine'", param_hint="--opcua-layout"
        )


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="Scenario YAML files.", show_default=False)],
) -> None:
    """Check scenario files; print every problem as file:line: what is wrong."""
    from iiotbed.scenario import load_scenario

    failed = False
    for path in files:
        try:
            scenario = load_scenario(path)
        except ScenarioError as exc:
            failed = True
            for issue in exc.issues:
                _err(f"error: {issue}")
            continue
        n = sum(len(s.station_names) for s in scenario.line.stages)
        typer.echo(
            f"{path}: ok - {scenario.name!r}: {len(scenario.line.stages)} stages, {n} stations, "
            f"{len(scenario.products)} products"
        )
    if failed:
        raise typer.Exit(2)


def _progress(total: int, label: str) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not sys.stderr.isatty(),
    )


def _run_jobs(
    jobs: list[tuple[Scenario, int]], workers: int | None, label: str
) -> list[ReplicationResult]:
    from iiotbed.experiment import run_replications

    with _progress(len(jobs), label) as progress:
        task = progress.add_task(label, total=len(jobs))
        return run_replications(jobs, workers=workers, on_done=lambda _r: progress.advance(task))


def _check_metric(metric: str) -> dict[str, Any]:
    """The KPI info of :func:`_kpi_info`, once ``metric`` is known to be one of them."""
    info = _kpi_info()
    if metric not in info:
        raise typer.BadParameter(
            f"unknown KPI {metric!r}; choose one of {', '.join(sorted(info))}",
            param_hint="--metric",
        )
    return info


def _kpi_info() -> dict[str, Any]:
    from iiotbed.platform.kpi import KPI_INFO

    return dict(KPI_INFO)


def _fmt(x: float) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3f}"


def _pct(x: float) -> str:
    return "undefined" if not math.isfinite(x) else f"{x:+.1%}"


def _summary_json(s: Summary) -> dict[str, Any]:
    def clean(x: float) -> float | None:
        return None if not math.isfinite(x) else x

    return {
        "mean": clean(s.mean),
        "ci95": [clean(s.ci95[0]), clean(s.ci95[1])],
        "sd": clean(s.sd),
        "n": s.n,
        "undefined": s.undefined,
    }


def _summaries(results: list[ReplicationResult]) -> dict[str, Summary]:
    from iiotbed.platform.stats import summarize

    names = list(results[0].line) if results else []
    return {k: summarize([r.line.get(k, math.nan) for r in results]) for k in names}


@app.command()
def simulate(
    file: FileArg,
    replications: Replications = None,
    duration: Duration = None,
    seed: Seed = None,
    workers: Workers = None,
    events: Annotated[
        Path | None,
        typer.Option(
            "--events", help="Write replication 0's event log here (JSON Lines).", dir_okay=False
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Run replications of a scenario; print each KPI's mean and 95 % confidence interval."""
    with _user_errors():
        scenario = _load(file, duration=_duration(duration), seed=seed, replications=replications)
        n = scenario.run.replications
        results: list[ReplicationResult] = []
        jobs = [(scenario, i) for i in range(n)]
        if events is not None:
            from iiotbed.experiment import run_replication

            try:
                results.append(run_replication(scenario, 0, events=events))
            except OSError as exc:
                raise typer.BadParameter(
                    f"cannot write {events}: {exc.strerror}", param_hint="--events"
                ) from None
            jobs = jobs[1:]
        if jobs:
            results += _run_jobs(jobs, workers, f"simulating {scenario.name}")
        summaries = _summaries(results)
        info = _kpi_info()
        if as_json:
            out = {
                "scenario": scenario.name,
                "file": str(file),
                "seed": scenario.run.seed,
                "replications": n,
                "duration_s": scenario.run.duration,
                "warmup_s": scenario.run.warmup,
                "kpis": {
                    k: {**_summary_json(s), "unit": getattr(info.get(k), "unit", None)}
                    for k, s in summaries.items()
                },
                "per_replication": [_finite(r.line) for r in results],
            }
            typer.echo(json.dumps(out, indent=2, allow_nan=False))
            return
        _print_table(
            f"{scenario.name} - {n} replications of {scenario.run.duration / 3600:g} h, "
            f"seed {scenario.run.seed}",
            {"": summaries},
            info,
        )


def _finite(values: dict[str, float]) -> dict[str, float | None]:
    """JSON has no NaN: an undefined KPI (e.g. MTBF without failures) becomes null."""
    return {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()
    }


def _print_table(title: str, columns: dict[str, dict[str, Summary]], info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("KPI", no_wrap=True)
    table.add_column("unit")
    for name in columns:
        table.add_column(f"{name} mean".strip(), justify="right")
        table.add_column(f"{name} 95 % CI".strip(), justify="right")
    first = next(iter(columns.values()))
    for k in _SHOWN:
        if k not in first:
            continue
        row = [k, str(getattr(info.get(k), "unit", "") or "")]
        for col in columns.values():
            s = col[k]
            row += [_fmt(s.mean), f"{_fmt(s.ci95[0])} .. {_fmt(s.ci95[1])}"]
        table.add_row(*row)
    Console(width=max(100, Console().width)).print(table)


@app.command()
def compare(
    baseline: Annotated[Path, typer.Argument(help="Baseline scenario YAML.", dir_okay=False)],
    upgrade: Annotated[Path, typer.Argument(help="Upgrade scenario YAML.", dir_okay=False)],
    replications: Replications = None,
    goal: Goal = 0.20,
    metric: Annotated[
        str, typer.Option("--metric", help="KPI to compare (see the README's KPI list).")
    ] = "labour_productivity",
    duration: Duration = None,
    seed: Seed = None,
    workers: Workers = None,
    as_json: AsJson = False,
) -> None:
    """Paired comparison (common random numbers) of an upgrade against its baseline."""
    from iiotbed.platform.stats import compare_paired

    with _user_errors():
        info = _check_metric(metric)
        d = _duration(duration)
        base = _load(baseline, duration=d, seed=seed, replications=replications)
        # Both sides use the same seed, duration and count so that replication i of each
        # shares its random streams: that pairing is what makes the interval tight.
        upg = _load(
            upgrade,
            duration=d or base.run.duration,
            seed=base.run.seed,
            replications=base.run.replications,
        )
        n = base.run.replications
        jobs = [(base, i) for i in range(n)] + [(upg, i) for i in range(n)]
        results = _run_jobs(jobs, workers, "simulating baseline and upgrade")
        b_res, u_res = results[:n], results[n:]
        higher = bool(getattr(info[metric], "higher_is_better", True))
        cmp = compare_paired(
            metric,
            [r.line.get(metric, math.nan) for r in b_res],
            [r.line.get(metric, math.nan) for r in u_res],
            goal,
            higher_is_better=higher,
        )
        if as_json:
            out = _comparison_json(cmp, base, upg, b_res, u_res, info)
            typer.echo(json.dumps(out, indent=2, allow_nan=False))
            return
        _print_table(
            f"{base.name} vs {upg.name} - {n} paired replications of "
            f"{base.run.duration / 3600:g} h, seed {base.run.seed}",
            {"baseline": _summaries(b_res), "upgrade": _summaries(u_res)},
            info,
        )
        typer.echo(
            f"\n{metric}: improvement {_pct(cmp.improvement.mean)} "
            f"(95 % CI {_pct(cmp.improvement.ci95[0])} .. {_pct(cmp.improvement.ci95[1])}, "
            f"n={cmp.improvement.n}) against a goal of {goal:+.0%}"
        )
        if cmp.improvement.undefined:
            typer.echo(
                f"note: {cmp.improvement.undefined} of {n} pairs have no defined {metric} "
                "(e.g. no production in the window); lengthen --duration"
            )
        typer.echo(f"verdict: {cmp.verdict.value}")


def _comparison_json(
    cmp: Comparison,
    base: Scenario,
    upg: Scenario,
    b_res: list[ReplicationResult],
    u_res: list[ReplicationResult],
    info: dict[str, Any],
) -> dict[str, Any]:
    return {
        "metric": cmp.metric,
        "unit": getattr(info.get(cmp.metric), "unit", None),
        "goal": cmp.goal,
        "higher_is_better": cmp.higher_is_better,
        "seed": base.run.seed,
        "replications": base.run.replications,
        "duration_s": base.run.duration,
        "baseline": {"scenario": base.name, **_summary_json(cmp.baseline)},
        "upgrade": {"scenario": upg.name, **_summary_json(cmp.upgrade)},
        "improvement": {
            **_summary_json(cmp.improvement),
            "per_replication": [None if math.isnan(r) else r for r in cmp.ratios],
        },
        "verdict": cmp.verdict.value,
        "kpis": {
            "baseline": {k: _summary_json(s) for k, s in _summaries(b_res).items()},
            "upgrade": {k: _summary_json(s) for k, s in _summaries(u_res).items()},
        },
    }


@app.command()
def devices(
    file: FileArg,
    speed: Annotated[
        float, typer.Option("--speed", min=0.001, help="Sim seconds per wall second (1 = real time).")
    ] = 60.0,
    duration: Duration = None,
    seed: Seed = None,
    replication: Annotated[
        int, typer.Option("--replication", min=0, help="Which replication's random streams.")
    ] = 0,
    opcua_port: OpcuaPort = 4840,
    opcua_layout: OpcuaLayout = "line",
    security: Annotated[
        str, typer.Option("--security", help="OPC UA security: 'open' or 'secure'.")
    ] = "open",
    opcua_user: Annotated[
        str | None,
        typer.Option("--opcua-user", envvar="IIOTBED_OPCUA_USER", help="User (secure profile)."),
    ] = None,
    opcua_password: Annotated[
        str | None,
        typer.Option(
            "--opcua-password", envvar="IIOTBED_OPCUA_PASSWORD", help="Password (secure profile)."
        ),
    ] = None,
    cert_dir: Annotated[
        Path, typer.Option("--cert-dir", file_okay=False, help="Where server certificates live.")
    ] = Path(".iiotbed/pki"),
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            envvar="IIOTBED_BROKER",
            help="MQTT broker, e.g. mqtt://127.0.0.1:1883 (Sparkplug B and VDA 5050 need one).",
        ),
    ] = None,
    sparkplug_group: SparkplugGroup = None,
    primary_host: Annotated[
        str | None,
        typer.Option("--primary-host", help="Sparkplug Primary Host id to wait for before births."),
    ] = None,
    events: Annotated[
        Path | None,
        typer.Option("--events", help="Write the live run's event log here.", dir_okay=False),
    ] = None,
    fast_forward: Annotated[
        bool,
        typer.Option(
            "--fast-forward/--no-fast-forward",
            help="Run unpaced up to the first shift, then pace (default: on).",
        ),
    ] = True,
) -> None:
    """Run the factory live: OPC UA machines, Sparkplug B meters, VDA 5050 AMRs."""
    import asyncio

    from iiotbed.devices.live import LiveFactory, LiveOptions, run_live

    with _user_errors():
        _check_opcua_layout(opcua_layout)
        if security not in ("open", "secure"):
            raise typer.BadParameter(f"{security!r}: use 'open' or 'secure'", param_hint="--security")
        _check_broker(broker)
        sec: Any = None
        if security == "secure":
            if not opcua_user or not opcua_password:
                raise typer.BadParameter(
                    "the secure profile needs --opcua-user and --opcua-password "
                    "(or IIOTBED_OPCUA_USER / IIOTBED_OPCUA_PASSWORD)",
                    param_hint="--security",
                )
            from iiotbed.devices.opcua import Security

            sec = Security("secure", {opcua_user: opcua_password}, cert_dir)
        scenario = _load(file, duration=_duration(duration), seed=seed)
        options = LiveOptions(
            speed=speed,
            replication=replication,
            opcua_port=opcua_port,
            opcua_layout="machine" if opcua_layout == "machine" else "line",
            security=sec,
            broker=broker,
            sparkplug_group=sparkplug_group,
            primary_host=primary_host,
            events=events,
            fast_forward=fast_forward,
        )
        started: list[LiveFactory] = []

        def ready(live: LiveFactory) -> None:
            started.append(live)
            typer.echo(
                f"{scenario.name}: live at {speed:g}x for {scenario.run.duration:g} s of sim time"
            )
            for line in live.endpoints:
                typer.echo(f"  {line}")
            if broker is None:
                typer.echo("  no --broker given: only OPC UA runs (Sparkplug B and VDA 5050 need one)")
            typer.echo("Ctrl-C stops.", nl=True)
            sys.stdout.flush()

        try:
            asyncio.run(run_live(scenario, options, ready))
        except KeyboardInterrupt:
            typer.echo("stopped")
        except OSError as exc:
            if events is None or exc.filename != str(events):
                raise
            raise typer.BadParameter(
                f"cannot write {events}: {exc.strerror}", param_hint="--events"
            ) from None
        if started:
            for line in started[0].summary.lines():
                typer.echo(line)


@app.command()
def gateway(
    scenario_file: Annotated[
        Path | None,
        typer.Option("--scenario", dir_okay=False, help="Derive the settings from this scenario."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", dir_okay=False, help="A gateway.yaml (see docs/gateway.md)."),
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option("--broker", envvar="IIOTBED_BROKER", help="MQTT broker for devices and UNS."),
    ] = None,
    opcua_port: OpcuaPort = 4840,
    opcua_layout: OpcuaLayout = "line",
    replication: Annotated[
        int, typer.Option("--replication", min=0, help="Replication the devices run (run id).")
    ] = 0,
    root: Annotated[str, typer.Option("--root", help="UNS topic root.")] = "uns",
    buffer: Annotated[
        Path, typer.Option("--buffer", dir_okay=False, help="Durable buffer file (SQLite).")
    ] = Path(".iiotbed/gateway.db"),
    sparkplug_group: SparkplugGroup = None,
    stop_after: Annotated[
        float | None,
        typer.Option("--stop-after", min=0.0, help="Stop after this many wall seconds."),
    ] = None,
) -> None:
    """Collect OPC UA, Sparkplug B, VDA 5050 and JSON devices into the UNS over MQTT."""
    import asyncio
    import logging

    from iiotbed.gateway.service import Gateway
    from iiotbed.gateway.settings import load_settings, settings_from_scenario

    with _user_errors():
        if (scenario_file is None) == (config is None):
            raise typer.BadParameter("give either --scenario FILE --broker URL or --config FILE")
        _check_opcua_layout(opcua_layout)
        if config is not None:
            settings = load_settings(config)
        else:
            assert scenario_file is not None
            if broker is None:
                raise typer.BadParameter("--scenario needs --broker mqtt://host:port")
            _check_broker(broker)
            try:
                settings = settings_from_scenario(
                    _load(scenario_file), broker, opcua_port=opcua_port,
                    opcua_layout="machine" if opcua_layout == "machine" else "line",
                    replication=replication, root=root, buffer=buffer,
                    sparkplug_group=sparkplug_group,
                )  # fmt: skip
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                raise typer.BadParameter(str(exc)) from None
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        settings.output.buffer.parent.mkdir(parents=True, exist_ok=True)

        async def main() -> None:
            async with Gateway(settings) as gw:
                typer.echo(
                    f"gateway {settings.id}: {', '.join(settings.collector_names())} -> "
                    f"{settings.output.broker} {settings.output.root}/ (run {settings.run_id})"
                )
                sys.stdout.flush()
                try:
                    if stop_after is not None:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(stop_after):
                                await gw.wait()
                    else:
                        await gw.wait()
                finally:
                    m = gw.publish_metrics()
                    typer.echo(
                        f"received {m['received']}, forwarded {m['forwarded']}, "
                        f"buffered {m['buffered']}, dropped {m['dropped']}, malformed {m['malformed']}"
                    )

        try:
            asyncio.run(main())
        except KeyboardInterrupt:
            typer.echo("stopped")


@app.command()
def platform(
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            envvar="IIOTBED_BROKER",
            help="MQTT broker to ingest from, e.g. mqtt://127.0.0.1:1883 (default: start an "
            "embedded broker on a free port).",
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            envvar="IIOTBED_STORE",
            help="sqlite:///file.db or postgresql://user@host:5432/db (default ./iiotbed.db).",
        ),
    ] = None,
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="HTTP port (0: a free one).")
    ] = 8000,
    host: Annotated[str, typer.Option("--host", help="HTTP address to listen on.")] = "127.0.0.1",
    scenario_file: Annotated[
        Path | None,
        typer.Option(
            "--scenario", dir_okay=False, help="Scenario of runs the store does not describe yet."
        ),
    ] = None,
    current_values: Annotated[
        bool,
        typer.Option("--current-values", help="Also ingest the retained current-value topics."),
    ] = False,
) -> None:
    """Ingest the UNS into a store and serve the HTTP API and the live dashboard."""
    import asyncio

    from iiotbed.platform.service import Platform

    with _user_errors():
        _check_broker(broker)
        scenario = _load(scenario_file) if scenario_file is not None else None

        async def serve() -> None:
            async with Platform(
                broker=broker,
                store=store,
                host=host,
                port=port,
                scenario=scenario,
                current_values=current_values,
            ) as p:
                typer.echo(f"platform: dashboard and API at {p.url}/ (docs {p.url}/docs)")
                typer.echo(f"  ingesting {p.root}/_stream/# from {p.broker_url}")
                typer.echo(f"  store {p.store.url if p.store is not None else store}")
                typer.echo("Ctrl-C stops.")
                sys.stdout.flush()
                await p.serve_forever()

        try:
            asyncio.run(serve())
        except KeyboardInterrupt:
            typer.echo("stopped")


#: `iiotbed.run.DEFAULT_SPEED`, not imported from there: asyncio would slow `--help`
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
            "(default .iiotbed/runs/<run_id>/store.db).",
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
    metric: Annotated[
        str, typer.Option("--metric", help="KPI of the verdict (see the README's KPI list).")
    ] = "labour_productivity",
    workers: Workers = None,
    no_verdict: Annotated[
        bool, typer.Option("--no-verdict", help="Skip the batch comparison with the base scenario.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """The whole testbed: devices, broker, gateway, platform and dashboard; the KPI report."""
    import asyncio
    import logging
    import signal

    from iiotbed.run import RunOptions, run_all

    with _user_errors():
        d = _duration(duration)
        info = _check_metric(metric)
        _check_broker(broker)
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
            goal=goal, metric=metric, workers=workers,
        )  # fmt: skip
        # the endpoints go to stdout, or to stderr when stdout carries the JSON report
        def say(message: str) -> None:
            if as_json:
                _err(message)
            else:
                typer.echo(message)
            sys.stdout.flush()

        say(_run_plan(scenario, speed, opts))
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
                return await run_all(
                    scenario, opts, stop=stop, say=say, progress=_err,
                )  # fmt: skip
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

        try:
            report = asyncio.run(main())
        except asyncio.CancelledError:
            _err("interrupted twice: stopped without a report")
            raise typer.Exit(130) from None
        if as_json:
            typer.echo(json.dumps(report.to_dict(), indent=2, allow_nan=False))
        else:
            _print_run_report(report, info)
        if not report.agrees:
            bad = [k for k, a in report.agreement.items() if not a.ok]
            _err(f"error: telemetry KPIs disagree with the answer key: {', '.join(bad)}")
            raise typer.Exit(1)


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
        f"about {wall / 60:.1f} min of wall time{then}. Ctrl-C ends early with a report."
    )


def _print_run_report(report: Any, info: dict[str, Any]) -> None:
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
    typer.echo(
        f"telemetry: gateway received {st.get('gateway_received')}, forwarded "
        f"{st.get('gateway_forwarded')}, platform stored {st.get('stored')} "
        f"(settled in {st.get('seconds')} s); wall time {report.wall_s:.1f} s, "
        f"worst lag behind the pace {report.live.get('max_lag_s')} s"
    )
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
    typer.echo(f"dashboard (closed now): {report.dashboard}  store: {report.store}")


def _nan(x: float | None) -> float:
    return math.nan if x is None else x


def main() -> None:
    """Console-script entry point."""
    app()
