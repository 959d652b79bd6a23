"""A report to keep: one self-contained HTML file from an ``iiotbed run`` or ``iiotbed
compare`` JSON report.

No script, no stylesheet or font from elsewhere: charts are inline SVG (:mod:`._svg`), text
passes through :func:`html.escape`. The file shows the chosen metric's improvement with its
95 % CI against the goal, every KPI with its CI (or telemetry beside the answer key), an
OEE waterfall per station and throughput over time (:mod:`._figures`: the KPI engine over
one replication's records, which the JSON lacks) and the scenario's ``[ASSUMPTION]``
parameters (:mod:`._assumptions`). Every number taken from the JSON report is an element
with ``data-json="<path in the report>"``. ``render_*`` are pure; ``write_*`` gather the
figures (event log, or replication 0 simulated again) and write the file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from iiotbed.testbed import _svg
from iiotbed.testbed._assumptions import Assumption, assumptions
from iiotbed.testbed._figures import Figures, compare_figures, run_figures

if TYPE_CHECKING:
    from iiotbed.scenario import Scenario

__all__ = [
    "render_compare_report",
    "render_run_report",
    "write_compare_report",
    "write_run_report",
]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;
margin:0 auto;max-width:1120px;padding:16px 24px 48px}
h1{font-size:22px;margin:8px 0 2px}h2{font-size:17px;margin:28px 0 8px;
border-bottom:1px solid #ddd;padding-bottom:3px}
.sub{color:#666;margin:0 0 8px}.note{color:#555;font-size:12.5px}
table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 8px;border-bottom:1px solid #eee;
text-align:left;vertical-align:middle}th{font-weight:600;background:#f6f6f6}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.assumptions{table-layout:fixed;width:100%}table.assumptions td{font-size:12.5px;
overflow-wrap:anywhere}table.assumptions th:nth-child(1){width:15%}
table.assumptions th:nth-child(2),table.assumptions th:nth-child(3){width:19%}
table.assumptions th:nth-child(n+5){width:10%}
.verdict{display:inline-block;padding:3px 10px;border-radius:4px;font-weight:700;color:#fff}
.met{background:#3a8f5c}.not-met{background:#c0392b}.inconclusive{background:#d08a1a}
.none{background:#888}.bad{color:#c0392b;font-weight:600}
.grid{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #ddd;border-radius:6px;
padding:6px 8px}.card h3{font-size:13px;margin:0 0 2px}.card .grid{gap:4px}.kv{font-size:12px;color:#444}
code{font-size:12.5px}.key{font-family:ui-monospace,monospace;font-size:12px}
.over{color:#999;text-decoration:line-through}
"""


# --------------------------------------------------------------------------- numbers


def _ok(x: Any) -> TypeGuard[float]:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def fmt(x: Any, unit: str | None = None, *, signed: bool = False) -> str:
    """A number as the report shows it: ratios (unit "1") in % with one decimal,
    others by magnitude; n/a when undefined."""
    if not _ok(x):
        return "n/a"
    v = float(x)
    if unit == "1" or signed:
        return f"{v * 100:+.1f} %" if signed else f"{v * 100:.1f} %"
    a = abs(v)
    if v.is_integer():  # counts, hours of a calendar: exact, no decimals to suggest otherwise
        return f"{v:,.0f}"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 1 or a == 0:
        return f"{v:.2f}"
    return f"{v:.{min(8, 2 - math.floor(math.log10(a)))}f}"


def _num(x: Any, unit: str | None = None, path: str = "", *, signed: bool = False) -> str:
    attr = f' data-json="{escape(path)}"' if path else ""
    return f'<span class="num"{attr}>{escape(fmt(x, unit, signed=signed))}</span>'


def _get(d: Mapping[str, Any] | None, *keys: Any) -> Any:
    cur: Any = d
    for k in keys:
        if isinstance(cur, Mapping):
            cur = cur.get(k)
        elif isinstance(cur, list) and isinstance(k, int) and 0 <= k < len(cur):
            cur = cur[k]
        else:
            return None
    return cur


def _unit(kpi: str) -> str:
    """The KPI's unit; "1" (shown in %) for ratios only, "count" for counts of events."""
    from iiotbed.platform.kpi import KPI_INFO

    info = KPI_INFO.get(kpi)
    if info is None:
        return ""
    return "count" if info.unit == "1" and kpi == "failures" else info.unit


def _describe(kpi: str) -> str:
    from iiotbed.platform.kpi import KPI_INFO

    info = KPI_INFO.get(kpi)
    return info.description if info is not None else ""


# --------------------------------------------------------------------------- sections


def _page(title: str, body: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )


def _badge(verdict: Any) -> str:
    text = str(verdict) if verdict else "no verdict"
    cls = {"met": "met", "not met": "not-met", "inconclusive": "inconclusive"}.get(text, "none")
    attr = ' data-json="verdict"' if verdict else ""
    return f'<span class="verdict {cls}"{attr}>{escape(text)}</span>'


def _improvement_section(
    metric: str, goal: float, imp: Mapping[str, Any], verdict: Any, basis: str
) -> list[str]:
    ci = imp.get("ci95") or [None, None]
    per = tuple(float(x) for x in imp.get("per_replication") or () if _ok(x))
    chart = _svg.interval_chart(
        [
            _svg.Interval(
                "improvement",
                imp.get("mean"),
                ci[0],
                ci[1],
                _svg.UPGRADE,
                "improvement.mean",
                per,
            )
        ],
        refs=[(0.0, "no change", "#666"), (goal, f"goal {goal * 100:+.0f} %", _svg.GOAL)],
    )
    return [
        f"<h2>Verdict: {escape(metric)} against a goal of {escape(fmt(goal, signed=True))}</h2>",
        f"<p>{_badge(verdict)} &nbsp; improvement "
        f"<b>{_num(imp.get('mean'), path='improvement.mean', signed=True)}</b>, 95 % CI "
        f"{_num(ci[0], path='improvement.ci95.0', signed=True)} .. "
        f"{_num(ci[1], path='improvement.ci95.1', signed=True)} "
        f'(n = <span data-json="improvement.n">{escape(str(imp.get("n")))}</span> paired '
        "replications; dots: each pair)</p>",
        chart,
        f'<p class="note">{escape(basis)}. The verdict is <i>met</i> when the whole interval '
        "lies beyond the goal, <i>not met</i> when it lies below it, <i>inconclusive</i> "
        "when it straddles the goal line.</p>",
    ]


def _assumption_section(rows: list[tuple[Assumption, list[str]]], columns: list[str]) -> list[str]:
    out = [
        "<h2>What the verdict rests on: the [ASSUMPTION] parameters</h2>",
        '<p class="note">Every line of the scenario files (and the files they '
        "<code>extends:</code>) whose comment says [ASSUMPTION]: a labelled number no "
        "published source backs. Change one and the verdict may change.</p>",
    ]
    if not rows:
        return [*out, "<p>No [ASSUMPTION] lines found (or the scenario has no file).</p>"]
    head = "".join(
        f"<th>{escape(c)}</th>" for c in ["file:line", "key", "value", "comment", *columns]
    )
    out.append(f'<table class="assumptions"><tr>{head}</tr>')
    for a, status in rows:
        cells = "".join(f'<td class="s">{escape(s)}</td>' for s in status)
        cls = ' class="over"' if all(s.startswith("overridden") for s in status) else ""
        out.append(
            f'<tr data-where="{escape(a.where)}"><td class="w"><code>{escape(a.where)}</code></td>'
            f'<td class="key">{escape(a.key or "?")}</td><td class="v"><code{cls}>{escape(a.value)}'
            f'</code></td><td class="c">{escape(a.note)}</td>{cells}</tr>'
        )
    out.append("</table>")
    return out


def _status(a: Assumption, own: Sequence[Assumption]) -> str:
    mine = next((b for b in own if b.file.resolve() == a.file.resolve() and b.line == a.line), None)
    if mine is None:
        return "-"
    return mine.status


def _assumption_rows(
    sides: Sequence[Sequence[Assumption]],
) -> list[tuple[Assumption, list[str]]]:
    seen: dict[tuple[Path, int], Assumption] = {}
    for side in sides:
        for a in side:
            seen.setdefault((a.file.resolve(), a.line), a)
    return [(a, [_status(a, side) for side in sides]) for a in seen.values()]


def _scenario_assumptions(scenario: Scenario) -> list[Assumption]:
    return assumptions(scenario.source_path) if scenario.source_path is not None else []


def _station_cards(sides: Sequence[tuple[str, Figures]]) -> list[str]:
    names: list[str] = []
    for _label, fig in sides:
        names += [n for n in fig.stations if n not in names]
    out = [
        "<h2>OEE waterfall per station</h2>",
        '<p class="note">ISO 22400-2: from 100 % of planned busy time, the availability loss '
        "(1 &minus; A), the performance loss (A &times; (1 &minus; P)) and the quality loss "
        "(A &times; P &times; (1 &minus; Q)), in percentage points, leave "
        "OEE = A &times; P &times; Q. From "
        + escape(sides[0][1].source)
        + f" over [{sides[0][1].start:g}, {sides[0][1].end:g}] s.</p>",
        '<div class="grid">',
    ]
    for name in names:
        out.append(f'<div class="card" data-station="{escape(name)}"><h3>{escape(name)}</h3>')
        charts, warn = [], False
        for label, fig in sides:
            k = fig.stations.get(name)
            if k is None:
                charts.append(f"<div>{escape(label)}: no such station</div>")
                continue
            a, p, q, oee = (k.get(x) for x in ("availability", "performance", "quality", "oee"))
            warn = warn or (_ok(p) and float(p) > 1.0 + 1e-9)
            kv = " &middot; ".join(
                f'{x[0].upper()} <span data-station="{escape(name)}" data-kpi="{x}" '
                f'data-side="{escape(label)}" '
                f'data-value="{v if _ok(v) else ""}">{escape(fmt(v, "1"))}</span>'
                for x, v in (("availability", a), ("performance", p), ("quality", q), ("oee", oee))
            )
            charts.append(
                f'<div><div class="kv"><b>{escape(label)}</b><br>{kv}</div>'
                + _svg.waterfall(a, p, q, width=215, height=140)
                + "</div>"
            )
        out.append('<div class="grid">' + "".join(charts) + "</div>")
        if warn:
            out.append(
                '<p class="bad">performance above 100 %: impossible under ISO 22400 over a '
                "long window; this stage's ideal cycle time exceeds its actual cycle time "
                "(check the scenario's ideal_cycle_time)</p>"
            )
        out.append("</div>")
    out.append("</div>")
    return out


def _throughput_section(
    sides: Sequence[tuple[str, str, Figures]], refs: list[tuple[float, str, str]]
) -> list[str]:
    series = [
        _svg.Series(label, color, tuple(((t0 + t1) / 7200.0, v) for t0, t1, v in f.throughput))
        for label, color, f in sides
    ]
    step = (
        sides[0][2].throughput[0][1] - sides[0][2].throughput[0][0] if sides[0][2].throughput else 0
    )
    out = [
        "<h2>Throughput over time</h2>",
        f'<p class="note">Good units per hour in {step / 60:g}-minute buckets, from '
        + escape(sides[0][2].source)
        + " (the KPI engine's good count at each bucket's ends). Dashed: the report's "
        "throughput over the whole window.</p>",
        _svg.line_chart(series, refs=refs, y_label="good units / h"),
        '<details><summary>the chart\'s numbers</summary><table class="series">'
        "<tr><th>series</th><th>from (s)</th><th>to (s)</th><th>good units / h</th></tr>",
    ]
    for label, _color, f in sides:
        for t0, t1, v in f.throughput:
            out.append(
                f'<tr data-label="{escape(label)}" data-t0="{t0!r}" data-t1="{t1!r}" '
                f'data-v="{v!r}"><td>{escape(label)}</td><td class="n">{t0:g}</td>'
                f'<td class="n">{t1:g}</td><td class="n">{v:.2f}</td></tr>'
            )
    out.append("</table></details>")
    return out


# --------------------------------------------------------------------------- run


def render_run_report(
    report: Mapping[str, Any],
    scenario: Scenario,
    figures: Figures | None = None,
    assumption_lines: Sequence[Assumption] | None = None,
) -> str:
    """The HTML report of ``iiotbed run --json`` output; ``figures`` from
    :func:`run_figures` (None: those sections say why they are empty); assumptions read
    from ``scenario.source_path`` unless given."""
    metric = str(report.get("metric") or "")
    goal = float(report.get("goal") or 0.0)
    title = f"iiotbed run {report.get('run_id', '')}: {report.get('scenario', scenario.name)}"
    window = report.get("window") or {}
    body = [
        f"<h1>{escape(str(report.get('scenario', scenario.name)))}</h1>",
        f'<p class="sub">run <code data-json="run_id">{escape(str(report.get("run_id")))}</code>'
        f" &middot; window {_num(window.get('start'), 's', 'window.start')} .. "
        f"{_num(window.get('end'), 's', 'window.end')} s of sim time "
        f"({escape(str(report.get('ended')))}) &middot; wall time "
        f"{_num(report.get('wall_s'), 's', 'wall_s')} s &middot; telemetry "
        f"{'agrees' if report.get('agrees') else 'DISAGREES'} with the answer key</p>",
        f'<p class="note">{escape(scenario.description)}</p>',
    ]
    imp = report.get("improvement")
    if isinstance(imp, Mapping):
        body += _improvement_section(
            metric, goal, imp, report.get("verdict"), str(report.get("verdict_basis") or "")
        )
        body.append(
            f"<p>{escape(metric)}: base {_num(imp.get('baseline_mean'), _unit(metric), 'improvement.baseline_mean')}"
            f" &rarr; upgrade {_num(imp.get('upgrade_mean'), _unit(metric), 'improvement.upgrade_mean')} "
            f"{escape(_unit(metric))} (means of the paired replications)."
            + (
                f" This live run's own improvement: "
                f"{_num(report.get('live_improvement'), path='live_improvement', signed=True)}"
                " (one replication: information, not the verdict)."
                if report.get("live_improvement") is not None
                else ""
            )
            + "</p>"
        )
    else:
        body += [
            f"<h2>Verdict: {escape(metric)} against a goal of {escape(fmt(goal, signed=True))}</h2>",
            f"<p>{_badge(None)} This scenario has no <code>extends:</code> base: one live run is "
            "one replication, and a verdict needs paired replications of a base and an "
            "upgrade (<code>iiotbed compare</code>, or a scenario that extends its base).</p>",
        ]
    body += [
        "<h2>Every KPI: telemetry beside the answer key</h2>",
        '<table class="kpis"><tr><th>KPI</th><th>unit</th><th>telemetry (platform)</th>'
        "<th>answer key (simulator)</th><th>agrees</th><th>what it is</th></tr>",
    ]
    kpis, key = report.get("kpis") or {}, report.get("answer_key") or {}
    for k in list(kpis) + [k for k in key if k not in kpis]:
        ok = _get(report, "agreement", k, "ok")
        body.append(
            f'<tr data-kpi="{escape(k)}"><td>{escape(k)}</td><td>{escape(_unit(k))}</td>'
            f'<td class="n">{_num(kpis.get(k), _unit(k), f"kpis.{k}")}</td>'
            f'<td class="n">{_num(key.get(k), _unit(k), f"answer_key.{k}")}</td>'
            f"<td>{'yes' if ok else ('<b class=bad>no</b>' if ok is False else '-')}</td>"
            f'<td class="note">{escape(_describe(k))}</td></tr>'
        )
    body.append("</table>")
    settle = report.get("settle") or {}
    body.append(
        f'<p class="note">gateway forwarded {_num(settle.get("gateway_forwarded"), path="settle.gateway_forwarded")}'
        f" records, the platform stored {_num(settle.get('stored'), path='settle.stored')} "
        f"(duplicates {_num(settle.get('duplicates'), path='settle.duplicates')}); store "
        f"<code>{escape(str(report.get('store', '')))}</code></p>"
    )
    for w in report.get("warnings") or []:
        body.append(f'<p class="bad">warning: {escape(str(w))}</p>')
    if figures is not None:
        body += _station_cards([("run", figures)])
        body += _throughput_section(
            [("run", _svg.UPGRADE, figures)],
            [(float(kpis["throughput"]), f"{fmt(kpis['throughput'])} /h", _svg.INK)]
            if _ok(kpis.get("throughput"))
            else [],
        )
    else:
        body += [
            "<h2>OEE waterfall per station; throughput over time</h2>",
            "<p>Not available: the run's event log (run_dir/events.jsonl) was not found.</p>",
        ]
    found = _scenario_assumptions(scenario) if assumption_lines is None else assumption_lines
    rows = [(a, [a.status]) for a in found]
    body += _assumption_section(rows, ["status"])
    return _page(title, body)


# --------------------------------------------------------------------------- compare


def render_compare_report(
    report: Mapping[str, Any],
    baseline: Scenario,
    upgrade: Scenario,
    figures: tuple[Figures, Figures] | None = None,
    assumption_lines: tuple[Sequence[Assumption], Sequence[Assumption]] | None = None,
) -> str:
    """The HTML report of ``iiotbed compare --json`` output; ``figures`` (baseline,
    upgrade) from :func:`compare_figures`; assumptions read from the scenarios' files
    unless given."""
    metric = str(report.get("metric") or "")
    goal = float(report.get("goal") or 0.0)
    b_name = str(_get(report, "baseline", "scenario") or baseline.name)
    u_name = str(_get(report, "upgrade", "scenario") or upgrade.name)
    n = report.get("replications")
    body = [
        f"<h1>{escape(u_name)} vs {escape(b_name)}</h1>",
        f'<p class="sub"><span data-json="replications">{escape(str(n))}</span> paired '
        f'replications (common random numbers, seed <span data-json="seed">'
        f"{escape(str(report.get('seed')))}</span>) of "
        f"{_num(report.get('duration_s'), 's', 'duration_s')} s each "
        f"({escape(fmt((report.get('duration_s') or 0) / 3600.0))} h)</p>",
        f'<p class="note">baseline: {escape(baseline.description)}<br>upgrade: '
        f"{escape(upgrade.description)}</p>",
    ]
    imp = report.get("improvement") or {}
    basis = (
        f"paired Student-t 95 % CI of the relative improvement of {metric} "
        f"({'higher' if report.get('higher_is_better', True) else 'lower'} is better)"
    )
    body += _improvement_section(metric, goal, imp, report.get("verdict"), basis)
    unit = str(report.get("unit") or _unit(metric))
    b, u = report.get("baseline") or {}, report.get("upgrade") or {}
    body.append(
        _svg.interval_chart(
            [
                _svg.Interval(
                    "baseline",
                    b.get("mean"),
                    _get(b, "ci95", 0),
                    _get(b, "ci95", 1),
                    color=_svg.BASE,
                    json="baseline.mean",
                ),
                _svg.Interval(
                    "upgrade",
                    u.get("mean"),
                    _get(u, "ci95", 0),
                    _get(u, "ci95", 1),
                    color=_svg.UPGRADE,
                    json="upgrade.mean",
                ),
            ],
            fmt="abs",
            title=f"{metric} ({unit}): mean and 95 % CI",
        )
    )
    body.append(
        f"<p>{escape(metric)}: baseline {_num(b.get('mean'), unit, 'baseline.mean')} "
        f"[{_num(_get(b, 'ci95', 0), unit, 'baseline.ci95.0')}, "
        f"{_num(_get(b, 'ci95', 1), unit, 'baseline.ci95.1')}] &rarr; upgrade "
        f"{_num(u.get('mean'), unit, 'upgrade.mean')} [{_num(_get(u, 'ci95', 0), unit, 'upgrade.ci95.0')}, "
        f"{_num(_get(u, 'ci95', 1), unit, 'upgrade.ci95.1')}] {escape(unit)}</p>"
    )
    body += [
        "<h2>Every KPI, baseline vs upgrade (mean and 95 % CI)</h2>",
        '<table class="kpis"><tr><th>KPI</th><th>unit</th><th>baseline</th><th>95 % CI</th>'
        "<th>upgrade</th><th>95 % CI</th><th>change of means</th><th></th></tr>",
    ]
    kb, ku = _get(report, "kpis", "baseline") or {}, _get(report, "kpis", "upgrade") or {}
    for k in list(kb) + [k for k in ku if k not in kb]:
        un = _unit(k)
        sb, su = kb.get(k) or {}, ku.get(k) or {}
        mb, mu = sb.get("mean"), su.get("mean")
        change = mu / mb - 1 if _ok(mb) and _ok(mu) and mb != 0 else None
        cells = []
        for side, s in (("baseline", sb), ("upgrade", su)):
            p = f"kpis.{side}.{k}"
            cells.append(f'<td class="n">{_num(s.get("mean"), un, p + ".mean")}</td>')
            cells.append(
                f'<td class="n">{_num(_get(s, "ci95", 0), un, p + ".ci95.0")} .. '
                f"{_num(_get(s, 'ci95', 1), un, p + '.ci95.1')}</td>"
            )
        mini = _svg.mini_pair(
            _svg.Interval("b", mb, _get(sb, "ci95", 0), _get(sb, "ci95", 1), _svg.BASE),
            _svg.Interval("u", mu, _get(su, "ci95", 0), _get(su, "ci95", 1), _svg.UPGRADE),
        )
        body.append(
            f'<tr data-kpi="{escape(k)}" title="{escape(_describe(k))}"><td>{escape(k)}</td>'
            f"<td>{escape(un)}</td>{''.join(cells)}"
            f'<td class="n">{escape(fmt(change, signed=True))}</td><td>{mini}</td></tr>'
        )
    body.append(
        '</table><p class="note">Blue: baseline, orange: upgrade. Each CI is over the '
        "replications of one side; the improvement's CI above is paired, hence tighter.</p>"
    )
    if figures is not None:
        fb, fu = figures
        higher = bool(report.get("higher_is_better", True))
        body.append(_replication0(metric, higher, fb, fu, imp))
        body += _station_cards([("baseline", fb), ("upgrade", fu)])
        refs = []
        for side, s, color in (("baseline", kb, _svg.BASE), ("upgrade", ku, _svg.UPGRADE)):
            m = _get(s, "throughput", "mean")
            if _ok(m):
                refs.append((float(m), f"{side} mean {fmt(m)}", color))
        body += _throughput_section(
            [("baseline", _svg.BASE, fb), ("upgrade", _svg.UPGRADE, fu)], refs
        )
    else:
        body += [
            "<h2>OEE waterfall per station; throughput over time</h2>",
            "<p>Not computed for this report.</p>",
        ]
    if assumption_lines is None:
        assumption_lines = (_scenario_assumptions(baseline), _scenario_assumptions(upgrade))
    body += _assumption_section(_assumption_rows(assumption_lines), ["baseline", "upgrade"])
    return _page(f"iiotbed compare: {u_name} vs {b_name}", body)


def _replication0(
    metric: str, higher: bool, fb: Figures, fu: Figures, imp: Mapping[str, Any]
) -> str:
    """The figures' replication, tied to the report: its improvement is the first pair's."""
    vb, vu = fb.line.get(metric), fu.line.get(metric)
    mine = None
    if vb is not None and vu is not None and _ok(vb) and _ok(vu) and vb != 0:
        mine = vu / vb - 1 if higher else 1 - vu / vb
    return (
        f'<p class="note">The station and time figures below come from {escape(fu.source)}: '
        f"{escape(metric)} baseline {escape(fmt(vb))}, upgrade {escape(fmt(vu))}, improvement "
        f'<span class="rep0">{escape(fmt(mine, signed=True))}</span> '
        f"(the report's first pair: {_num(_get(imp, 'per_replication', 0), path='improvement.per_replication.0', signed=True)})."
        "</p>"
    )


# --------------------------------------------------------------------------- files


def write_run_report(path: Path, report: Mapping[str, Any], scenario: Scenario) -> None:
    """Write the run report to ``path``, figures from the run's event log (blocking)."""
    html = render_run_report(report, scenario, run_figures(report, scenario))
    Path(path).write_text(html, encoding="utf-8")


def write_compare_report(
    path: Path, report: Mapping[str, Any], baseline: Scenario, upgrade: Scenario
) -> None:
    """Write the compare report to ``path``; simulates replication 0 of each side again
    for the station and time figures (blocking, a few seconds per simulated week)."""
    html = render_compare_report(
        report, baseline, upgrade, compare_figures(report, baseline, upgrade)
    )
    Path(path).write_text(html, encoding="utf-8")
