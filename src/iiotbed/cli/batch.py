"""Batch commands: validate, simulate, compare (no network, no wall clock)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from iiotbed._json import finite, finite_map
from iiotbed.errors import ScenarioError

if TYPE_CHECKING:
    from iiotbed.platform.stats import Comparison
    from iiotbed.scenario import Scenario
    from iiotbed.testbed.experiment import ReplicationResult

from iiotbed.cli._common import (
    AsJson,
    Duration,
    FileArg,
    Goal,
    HtmlReport,
    Replications,
    Seed,
    Workers,
    _check_metric,
    _check_report,
    _duration,
    _err,
    _kpi_info,
    _load,
    _pct,
    _print_table,
    _progress,
    _summaries,
    _summary_json,
    _user_errors,
    _write_report,
    app,
)

__all__ = ["compare", "simulate", "validate"]

Executor = Annotated[
    str | None,
    typer.Option(
        "--executor",
        envvar="IIOTBED_EXECUTOR",
        help="Where replications run: 'local' (this machine's processes, the default) or "
        "dask://HOST:PORT, the scheduler of a Dask cluster whose workers run this iiotbed.",
        show_default=False,
    ),
]


def _check_executor(executor: str | None) -> None:
    from iiotbed.testbed.experiment import ExecutorError, check_executor

    try:
        check_executor(executor)
    except ExecutorError as exc:
        raise typer.BadParameter(str(exc), param_hint="--executor") from None


def _run_jobs(
    jobs: list[tuple[Scenario, int]], workers: int | None, executor: str | None, label: str
) -> list[ReplicationResult]:
    """The jobs' results in their order, a progress bar advancing as each one finishes."""
    from iiotbed.testbed.experiment import ExecutorError, run_replications

    with _progress(len(jobs), label) as progress:
        task = progress.add_task(label, total=len(jobs))
        try:
            return run_replications(
                jobs,
                workers=workers,
                executor=executor,
                on_done=lambda _r: progress.advance(task),
            )
        except ExecutorError as exc:
            raise typer.BadParameter(str(exc), param_hint="--executor") from None


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
        if scenario.run.lines > 1:
            from iiotbed.scenario.plant import line_names

            names = line_names(scenario)
            typer.echo(
                f"  a plant of {len(names)} lines: {', '.join(names[:12])}"
                f"{', ...' if len(names) > 12 else ''} (seeds {scenario.run.seed}.."
                f"{scenario.run.seed + len(names) - 1}); run each with --line NAME"
            )
    if failed:
        raise typer.Exit(2)


@app.command()
def simulate(
    file: FileArg,
    replications: Replications = None,
    duration: Duration = None,
    seed: Seed = None,
    workers: Workers = None,
    executor: Executor = None,
    events: Annotated[
        Path | None,
        typer.Option(
            "--events", help="Write replication 0's event log here (JSON Lines).", dir_okay=False
        ),
    ] = None,
    as_json: AsJson = False,
    line: Annotated[
        str | None,
        typer.Option(
            "--line",
            envvar="IIOTBED_LINE",
            help="Which line of a plant scenario (run.lines > 1), e.g. line-1-2: that line's "
            "answer key (its own seed and asset paths).",
        ),
    ] = None,
) -> None:
    """Run replications of a scenario; print each KPI's mean and 95 % confidence interval."""
    from iiotbed.scenario.plant import select_line

    _check_executor(executor)
    with _user_errors():
        scenario = _load(file, duration=_duration(duration), seed=seed, replications=replications)
        scenario = select_line(scenario, line, file)
        n = scenario.run.replications
        results: list[ReplicationResult] = []
        jobs = [(scenario, i) for i in range(n)]
        if events is not None:
            from iiotbed.testbed.experiment import run_replication

            try:
                results.append(run_replication(scenario, 0, events=events))
            except OSError as exc:
                raise typer.BadParameter(
                    f"cannot write {events}: {exc.strerror}", param_hint="--events"
                ) from None
            jobs = jobs[1:]
        if jobs:
            results += _run_jobs(jobs, workers, executor, f"simulating {scenario.name}")
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
                "per_replication": [finite_map(r.line) for r in results],
            }
            typer.echo(json.dumps(out, indent=2, allow_nan=False))
            return
        _print_table(
            f"{scenario.name} - {n} replications of {scenario.run.duration / 3600:g} h, "
            f"seed {scenario.run.seed}",
            {"": summaries},
            info,
        )


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
    executor: Executor = None,
    as_json: AsJson = False,
    report: HtmlReport = None,
) -> None:
    """Paired comparison (common random numbers) of an upgrade against its baseline."""
    from iiotbed.platform.stats import compare_paired

    _check_executor(executor)
    with _user_errors():
        info = _check_metric(metric)
        _check_report(report)
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
        results = _run_jobs(jobs, workers, executor, "simulating baseline and upgrade")
        b_res, u_res = results[:n], results[n:]
        higher = bool(getattr(info[metric], "higher_is_better", True))
        cmp = compare_paired(
            metric,
            [r.line.get(metric, math.nan) for r in b_res],
            [r.line.get(metric, math.nan) for r in u_res],
            goal,
            higher_is_better=higher,
        )
        out = _comparison_json(cmp, base, upg, b_res, u_res, info)
        if as_json:
            typer.echo(json.dumps(out, indent=2, allow_nan=False))
        else:
            _print_compare(cmp, base, upg, b_res, u_res, info)
        if report is not None:
            from iiotbed.testbed.html_report import write_compare_report

            _write_report(
                report,
                lambda path: write_compare_report(path, out, base, upg),
                _err if as_json else typer.echo,
            )


def _print_compare(
    cmp: Comparison,
    base: Scenario,
    upg: Scenario,
    b_res: list[ReplicationResult],
    u_res: list[ReplicationResult],
    info: dict[str, Any],
) -> None:
    metric, n = cmp.metric, base.run.replications
    _print_table(
        f"{base.name} vs {upg.name} - {n} paired replications of "
        f"{base.run.duration / 3600:g} h, seed {base.run.seed}",
        {"baseline": _summaries(b_res), "upgrade": _summaries(u_res)},
        info,
    )
    typer.echo(
        f"\n{metric}: improvement {_pct(cmp.improvement.mean)} "
        f"(95 % CI {_pct(cmp.improvement.ci95[0])} .. {_pct(cmp.improvement.ci95[1])}, "
        f"n={cmp.improvement.n}) against a goal of {cmp.goal:+.0%}"
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
            "per_replication": [finite(r) for r in cmp.ratios],
        },
        "verdict": cmp.verdict.value,
        "kpis": {
            "baseline": {k: _summary_json(s) for k, s in _summaries(b_res).items()},
            "upgrade": {k: _summary_json(s) for k, s in _summaries(u_res).items()},
        },
    }
