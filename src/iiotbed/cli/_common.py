"""Shared pieces of the CLI: the app, option types, error translation, tables."""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from iiotbed import __version__
from iiotbed._json import finite
from iiotbed.errors import IiotbedError, ScenarioError

if TYPE_CHECKING:
    from iiotbed.platform.stats import Summary
    from iiotbed.scenario import Scenario
    from iiotbed.testbed.experiment import ReplicationResult

__all__ = ["app"]

_T = TypeVar("_T")

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
VerdictMetric = Annotated[
    str, typer.Option("--metric", help="KPI of the verdict (see the README's KPI list).")
]
NoVerdict = Annotated[
    bool, typer.Option("--no-verdict", help="Skip the batch comparison with the base scenario.")
]
OpcuaPort = Annotated[
    int, typer.Option("--opcua-port", min=1, max=65535, help="Port of the first OPC UA server.")
]
OpcuaLayout = Annotated[
    str, typer.Option("--opcua-layout", help="'line': one server; 'machine': one per machine.")
]
#: `iiotbed.testbed.DEFAULT_RUNS_DIR`, not imported from there: asyncio would slow `--help`
DEFAULT_RUNS_DIR = Path(".iiotbed/runs")
RunsDir = Annotated[
    Path,
    typer.Option(
        "--runs-dir",
        envvar="IIOTBED_RUNS_DIR",
        file_okay=False,
        help="Where each run keeps its store, event log and gateway buffer, one directory per run.",
    ),
]
HtmlReport = Annotated[
    Path | None,
    typer.Option(
        "--report",
        dir_okay=False,
        help="Also write a self-contained HTML report here (charts inline, no network).",
    ),
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


def _check_report(path: Path | None) -> None:
    """Before the work: the report's directory exists (the file is written at the end)."""
    if path is not None and not path.parent.is_dir():
        raise typer.BadParameter(f"{path.parent} is not a directory", param_hint="--report")


def _write_report(path: Path, write: Callable[[Path], None], tell: Callable[[str], None]) -> None:
    """Write the HTML report with ``write``; a file that cannot be written exits 1."""
    try:
        write(path)
    except OSError as exc:
        _err(f"error: cannot write the report {path}: {exc.strerror or exc}")
        raise typer.Exit(1) from None
    tell(f"report: {path}")


def _check_opcua_layout(opcua_layout: str) -> None:
    if opcua_layout not in ("line", "machine"):
        raise typer.BadParameter(
            f"{opcua_layout!r}: use 'line' or 'machine'", param_hint="--opcua-layout"
        )



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
    from iiotbed.testbed.experiment import run_replications

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
    return {
        "mean": finite(s.mean),
        "ci95": [finite(s.ci95[0]), finite(s.ci95[1])],
        "sd": finite(s.sd),
        "n": s.n,
        "undefined": s.undefined,
    }


def _summaries(results: list[ReplicationResult]) -> dict[str, Summary]:
    from iiotbed.platform.stats import summarize

    names = list(results[0].line) if results else []
    return {k: summarize([r.line.get(k, math.nan) for r in results]) for k in names}


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



LogLevel = Annotated[
    str | None,
    typer.Option(
        "--log-level", envvar="IIOTBED_LOG_LEVEL",
        help="Log level: debug, info, warning, error or critical (default: this command's).",
    ),
]
_LEVELS = ("debug", "info", "warning", "error", "critical")


def _logging(level: str | None, default: str) -> None:
    """Log to stderr at ``level`` (--log-level / IIOTBED_LOG_LEVEL), else at ``default``."""
    import logging

    name = (level if level is not None else default).strip().lower()
    if name not in _LEVELS:
        raise typer.BadParameter(
            f"{level!r} is no log level; choose one of {', '.join(_LEVELS)}",
            param_hint="--log-level (IIOTBED_LOG_LEVEL)",
        )
    logging.basicConfig(level=name.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(name.upper())
    if name != "debug":  # asyncua logs every publish callback at info: multi-kB lines
        logging.getLogger("asyncua").setLevel(max(logging.WARNING, logging.getLogger().level))


class _Terminated(Exception):
    """The service's main task was cancelled by SIGTERM."""


def _serve(main: Callable[[], Coroutine[Any, Any, _T]]) -> _T | None:
    """``asyncio.run(main())`` that ends on SIGTERM as on Ctrl-C (SIGINT): the main task is
    cancelled, so its ``async with`` blocks drain and close as they do on Ctrl-C, then
    "stopped" is printed and None returned (the command exits 0). Docker, systemd and
    Kubernetes stop a process with SIGTERM."""
    import asyncio
    import signal

    # A shell that starts a command in the background without job control (a script's
    # `cmd &`, nohup) leaves SIGINT ignored, and asyncio.run then installs no Ctrl-C handler:
    # `kill -INT` (a supervisor's or a test kit's stop) would be ignored. A service stops on it.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)

    async def guarded() -> _T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        terminated = False

        def on_term() -> None:
            nonlocal terminated
            terminated = True
            task.cancel()

        # no signal handlers on Windows' event loops: SIGTERM ends the process there
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, on_term)
        try:
            return await main()
        except asyncio.CancelledError:
            if terminated:
                raise _Terminated from None
            raise
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGTERM)

    try:
        return asyncio.run(guarded())
    except (KeyboardInterrupt, _Terminated):
        typer.echo("stopped")
        sys.stdout.flush()
        return None
