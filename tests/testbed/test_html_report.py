"""The HTML report: self-contained, every number equal to the JSON report, read back from
headless Chromium's DOM; the [ASSUMPTION] lines with file:line and key; text escaped."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from iiotbed.devices.sim import simulate
from iiotbed.platform.kpi import compute_kpis
from iiotbed.platform.layout import Layout
from iiotbed.scenario import load_scenario
from iiotbed.testbed._assumptions import assumptions
from iiotbed.testbed._figures import figures_from_records
from iiotbed.testbed.html_report import (
    fmt,
    render_compare_report,
    render_run_report,
    write_compare_report,
    write_run_report,
)

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
BASE, UPGRADE, SINGLE = (
    SCENARIOS / "tcl-huizhou-baseline.yaml",
    SCENARIOS / "tcl-huizhou-5g.yaml",
    SCENARIOS / "single-machine.yaml",
)
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary (Debian: apt-get install chromium)"
)
CLI = [sys.executable, "-c", "from iiotbed.cli import main; main()"]


# --------------------------------------------------------------------------- helpers


def _cli_json(*args: str) -> dict[str, Any]:
    proc = subprocess.run([*CLI, *args, "--json"], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def _chromium(url: str, profile: Path, *extra: str) -> str:
    assert CHROMIUM is not None
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--hide-scrollbars", f"--user-data-dir={profile}", *extra, url],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


class _Dom(HTMLParser):
    """Elements with any of ``data-*`` attributes and their text (the report nests none)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[dict[str, str], str]] = []
        self._open: list[tuple[str, dict[str, str], list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if any(k.startswith("data-") for k in a) and tag not in ("circle", "rect", "line"):
            self._open.append((tag, a, []))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] == tag:
                _t, a, text = self._open.pop(i)
                self.found.append((a, "".join(text).strip()))
                break

    def handle_data(self, data: str) -> None:
        for _t, _a, text in self._open:
            text.append(data)


def _dom(html: str) -> list[tuple[dict[str, str], str]]:
    p = _Dom()
    p.feed(html)
    return p.found


def _lookup(report: dict[str, Any], path: str) -> Any:
    """The value at ``path``; None when the report lacks it (the page must show n/a)."""
    cur: Any = report
    for part in path.split("."):
        if isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        elif isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return None
    return cur


def _matches(shown: str, value: Any) -> bool:
    """The shown text is ``value`` at the displayed rounding (half a unit of its last digit)."""
    if shown == "n/a":
        return value is None or (isinstance(value, float) and not math.isfinite(value))
    if isinstance(value, str):
        return shown == value
    m = re.fullmatch(r"([+-]?[\d,]+(?:\.(\d+))?)( %)?", shown)
    assert m is not None, f"not a number as the report shows one: {shown!r}"
    scale = 0.01 if m.group(3) else 1.0
    number = float(m.group(1).replace(",", "")) * scale
    half = 0.5 * 10 ** -len(m.group(2) or "") * scale
    return value is not None and abs(number - float(value)) <= half + 1e-12


def _check_numbers(html: str, report: dict[str, Any]) -> set[str]:
    """Every element naming a JSON path shows that value; returns the paths seen."""
    seen: set[str] = set()
    for attrs, text in _dom(html):
        path = attrs.get("data-json")
        if not path:
            continue
        value = _lookup(report, path)
        assert _matches(text, value), f"{path}: page shows {text!r}, the report has {value!r}"
        seen.add(path)
    return seen


def _assert_self_contained(html: str) -> None:
    assert re.search(r"https?://", html) is None, "the report names an http(s) URL"
    for pattern in (r"<script", r"<link", r"<img", r"<iframe", r"<object", r"<embed",
                    r"\bsrc\s*=", r"\bhref\s*=", r"url\(", r"@import"):  # fmt: skip
        assert re.search(pattern, html, re.IGNORECASE) is None, f"{pattern} in the report"


def _screenshot(path: Path, out: Path, profile: Path, height: int) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    _chromium(path.as_uri(), profile, f"--window-size=1200,{height}", f"--screenshot={out}")
    assert out.stat().st_size > 20_000, "the screenshot is (nearly) blank"


# --------------------------------------------------------------------------- real reports


@pytest.fixture(scope="module")
def compare_report() -> dict[str, Any]:
    return _cli_json("compare", str(BASE), str(UPGRADE), "-n", "3", "-d", "1d", "-j", "2")


@pytest.fixture(scope="module")
def run_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from iiotbed.platform.broker import free_port

    runs = tmp_path_factory.mktemp("runs")
    return _cli_json(
        "run", str(SINGLE), "--duration", "2h", "--speed", "3000", "--runs-dir", str(runs),
        "--opcua-port", str(free_port()), "--port", "0",
    )  # fmt: skip


@needs_chromium
def test_compare_report_in_chromium_shows_the_json_numbers(
    compare_report: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "compare.html"
    write_compare_report(out, compare_report, load_scenario(BASE), load_scenario(UPGRADE))
    html = out.read_text(encoding="utf-8")
    _assert_self_contained(html)
    dom = _chromium(out.as_uri(), tmp_path / "profile", "--dump-dom")
    seen = _check_numbers(dom, compare_report)
    # every KPI of both sides with its CI, the metric's improvement with its CI, the verdict
    for side in ("baseline", "upgrade"):
        for k in compare_report["kpis"][side]:
            assert {f"kpis.{side}.{k}.mean", f"kpis.{side}.{k}.ci95.0",
                    f"kpis.{side}.{k}.ci95.1"} <= seen, k  # fmt: skip
    assert {"improvement.mean", "improvement.ci95.0", "improvement.ci95.1", "verdict",
            "improvement.per_replication.0", "replications", "seed"} <= seen  # fmt: skip
    # the station and time figures are replication 0: its improvement is the report's first
    rep0 = re.search(r'class="rep0">([^<]+)<', dom)
    assert rep0 is not None and _matches(
        rep0.group(1), compare_report["improvement"]["per_replication"][0]
    )
    # a waterfall per station of both sides (the TCL line's ten), each with A x P x Q = OEE
    per: dict[tuple[str, str], dict[str, float]] = {}
    for a, text in _dom(dom):
        if "data-side" in a and a["data-value"]:
            value = float(a["data-value"])
            assert _matches(text, value)
            per.setdefault((a["data-station"], a["data-side"]), {})[a["data-kpi"]] = value
    assert {side for _st, side in per} == {"baseline", "upgrade"}
    assert len({st for st, _side in per}) == 10
    for where, k in per.items():
        product = k["availability"] * k["performance"] * k["quality"]
        assert k["oee"] == pytest.approx(product, abs=1e-12), where
        assert 0.0 <= k["performance"] <= 1.0, f"{where}: performance {k['performance']}"
    _screenshot(out, ARTIFACTS / "report-compare.png", tmp_path / "profile", 4600)


@pytest.mark.network
@needs_chromium
def test_run_report_in_chromium_shows_the_json_numbers(
    run_report: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "run.html"
    write_run_report(out, run_report, load_scenario(SINGLE))
    html = out.read_text(encoding="utf-8")
    _assert_self_contained(html)
    dom = _chromium(out.as_uri(), tmp_path / "profile", "--dump-dom")
    seen = _check_numbers(dom, run_report)
    for k in run_report["kpis"]:
        assert {f"kpis.{k}", f"answer_key.{k}"} <= seen, k
    found = _dom(dom)
    # one station: its waterfall's A, P, Q and OEE are the line's (the answer key), exactly
    values = {a["data-kpi"]: a["data-value"] for a, _ in found if "data-side" in a}
    for k in ("availability", "performance", "quality", "oee"):
        assert float(values[k]) == pytest.approx(run_report["answer_key"][k], abs=1e-12), k
    # throughput over time adds up to the report's good count over the window
    rows = re.findall(r'data-t0="([^"]+)" data-t1="([^"]+)" data-v="([^"]+)"', dom)
    assert rows and float(rows[0][0]) == run_report["window"]["start"]
    assert float(rows[-1][1]) == run_report["window"]["end"]
    good = sum((float(t1) - float(t0)) * float(v) / 3600.0 for t0, t1, v in rows)
    assert good == pytest.approx(run_report["kpis"]["good_count"], abs=1e-6)
    # the scenario's [ASSUMPTION] lines, each with file:line
    wheres = set(re.findall(r'data-where="([^"]+)"', dom))
    assert wheres == {a.where for a in assumptions(SINGLE)} and len(wheres) >= 7
    _screenshot(out, ARTIFACTS / "report-run.png", tmp_path / "profile", 2400)


# --------------------------------------------------------------------------- pure parts


def _marked_lines(path: Path) -> list[int]:
    return [
        n
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if "[ASSUMPTION" in line
    ]


def _header_end(path: Path) -> int:
    """The line of the file's first YAML content: comments above it are the file's prose."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(n for n, line in enumerate(lines, 1) if line.strip() and line[0] != "#")


def test_assumptions_of_the_shipped_scenarios_cover_every_marked_line() -> None:
    for scenario in (SINGLE, UPGRADE):
        found = assumptions(scenario)
        files = {a.file.name for a in found}
        assert files == ({SINGLE.name} if scenario == SINGLE else {BASE.name, UPGRADE.name})
        for path in (SCENARIOS / f for f in files):
            mine = [a for a in found if a.file.name == path.name]
            covered = {n for a in mine for n in range(a.line, max(a.line, a.last) + 1)}
            marked = [n for n in _marked_lines(path) if n > _header_end(path)]
            assert set(marked) <= covered, f"{path.name}: {set(marked) - covered} not listed"
            assert all(a.key and "[ASSUMPTION" in a.note for a in mine)
    by_key = {(a.file.name, a.key): a for a in assumptions(UPGRADE)}
    vision = by_key[(UPGRADE.name, "line.stages[lighting-inspection].inspection.time")]
    assert vision.value.startswith("{dist: gamma, mean: 9s") and vision.status == "in effect"
    manual = by_key[(BASE.name, "line.stages[lighting-inspection].inspection.time")]
    assert manual.value.startswith("{dist: gamma, mean: 36s")
    assert manual.status == f"overridden by {UPGRADE.name}:{vision.line}"


def test_assumptions_keys_values_overrides_and_comments(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(
        "# header prose with [ASSUMPTION] sets nothing\n"
        "name: base\n"
        "tag: 'a # not a comment'   # [ASSUMPTION] quoted hash\n"
        "line:\n"
        "  stages:\n"
        "    - name: press\n"
        "      speed: 3             # [ASSUMPTION] m/s\n"
        "      # a comment block above its key:\n"
        "      # 2 s [ASSUMPTION] because\n"
        "      time: 2s\n"
        "    - name: oven\n"
        "      speed: 4\n"
        "ideal:                     # [ASSUMPTION] per stage\n"
        "  press: 1s\n"
        "  oven: 2s\n"
        "shifts:                    # [ASSUMPTION] two shifts\n"
        "  - {start: '06:00'}\n"
        "  - {start: '18:00'}       # [ASSUMPTION] night\n",
        encoding="utf-8",
    )
    (tmp_path / "up.yaml").write_text(
        "extends: base.yaml\nline:\n  stages:\n    - name: press\n      speed: 5  # faster\n"
        "ideal: {press: 0.5s}\n",
        encoding="utf-8",
    )
    found = assumptions(tmp_path / "up.yaml")
    assert [(a.where, a.key, a.value, a.note, a.status) for a in found] == [
        ("base.yaml:3", "tag", "'a # not a comment'", "[ASSUMPTION] quoted hash", "in effect"),
        ("base.yaml:7", "line.stages[press].speed", "3", "[ASSUMPTION] m/s",
         "overridden by up.yaml:5"),
        ("base.yaml:9", "line.stages[press].time", "2s",
         "a comment block above its key: 2 s [ASSUMPTION] because", "in effect"),
        ("base.yaml:13", "ideal", "press: 1s oven: 2s", "[ASSUMPTION] per stage",
         "partly overridden by up.yaml:6"),
        ("base.yaml:16", "shifts", "- {start: '06:00'} - {start: '18:00'}",
         "[ASSUMPTION] two shifts", "in effect"),
        ("base.yaml:18", "shifts[1]", "{start: '18:00'}", "[ASSUMPTION] night", "in effect"),
    ]  # fmt: skip


def test_figures_are_the_kpi_engine_over_the_window() -> None:
    scenario = load_scenario(SINGLE).with_run(duration=30 * 3600.0)
    records = simulate(scenario, 0)
    layout = Layout.from_scenario(scenario)
    fig = figures_from_records(records, layout, 3600.0, scenario.run.duration, "test")
    truth = compute_kpis(records, layout, start=3600.0, end=scenario.run.duration)
    assert fig.line == dict(truth.line)
    assert list(fig.stations.values()) == [dict(v) for v in truth.stations.values()]
    assert list(fig.stations) == ["bonding/bonder-01"]
    # buckets tile the window; their good units add up to the window's good count
    assert fig.throughput[0][0] == 3600.0 and fig.throughput[-1][1] == scenario.run.duration
    assert all(a[1] == b[0] for a, b in zip(fig.throughput, fig.throughput[1:], strict=False))
    good = sum((t1 - t0) * v / 3600.0 for t0, t1, v in fig.throughput)
    assert good == pytest.approx(truth.line["good_count"], abs=1e-9)
    assert all(v >= 0 for _t0, _t1, v in fig.throughput)


def test_text_is_escaped_and_impossible_performance_is_flagged(tmp_path: Path) -> None:
    from iiotbed.testbed._figures import Figures

    evil = "<script>alert(1)</script>"
    report = {
        "metric": "oee", "goal": 0.2, "higher_is_better": True, "seed": 1,
        "replications": 2, "duration_s": 7200.0, "verdict": evil,
        "baseline": {"scenario": evil, "mean": 0.5, "ci95": [0.4, 0.6]},
        "upgrade": {"scenario": "u & v", "mean": 0.6, "ci95": [0.5, 0.7]},
        "improvement": {"mean": 0.2, "ci95": [0.1, 0.3], "n": 2, "per_replication": [0.1, 0.3]},
        "kpis": {"baseline": {"oee": {"mean": None, "ci95": [None, None]}}, "upgrade": {}},
    }  # fmt: skip
    fig = Figures("test", 0.0, 7200.0, {"oee": 0.5},
                  {"s/<b>": {"availability": 0.5, "performance": 3.0, "quality": 1.0,
                             "oee": 1.5}}, ((0.0, 7200.0, 10.0),))  # fmt: skip
    scenario = load_scenario(SINGLE)
    html = render_compare_report(report, scenario, scenario, (fig, fig), ([], []))
    assert evil not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "s/<b>" not in html and "u &amp; v" in html
    assert "performance above 100 %" in html
    _assert_self_contained(html)
    run = render_run_report({"run_id": evil, "kpis": {}, "window": {}}, scenario, None, [])
    assert evil not in run and "no verdict" in run


def test_run_report_with_a_verdict_shows_its_interval() -> None:
    report: dict[str, Any] = {
        "run_id": "r1", "scenario": "s", "window": {"start": 0.0, "end": 7200.0},
        "kpis": {"oee": 0.5}, "answer_key": {"oee": 0.5}, "metric": "oee", "goal": 0.2,
        "improvement": {"mean": 0.31, "ci95": [0.22, 0.4], "n": 5,
                        "per_replication": [0.25, 0.3, 0.35, 0.28, 0.37],
                        "baseline_mean": 0.41, "upgrade_mean": 0.537},
        "verdict": "met", "verdict_basis": "5 paired batch replications", "live_improvement": 0.29,
    }  # fmt: skip
    html = render_run_report(report, load_scenario(SINGLE), None, [])
    seen = _check_numbers(html, report)
    assert {"verdict", "improvement.mean", "improvement.ci95.0", "improvement.ci95.1",
            "improvement.baseline_mean", "improvement.upgrade_mean", "live_improvement",
            "kpis.oee", "answer_key.oee"} <= seen  # fmt: skip
    assert "goal +20 %" in html and "event log" in html


def test_numbers_as_shown() -> None:
    assert fmt(None) == fmt(math.nan) == fmt(math.inf, "1") == "n/a"
    assert fmt(0.93754, "1") == "93.8 %" and fmt(0.2, signed=True) == "+20.0 %"
    assert fmt(225.0, "units") == "225" and fmt(46070.25, "s") == "46,070"
    assert fmt(0.0568888, "kWh/unit") == "0.0569" and fmt(22.5) == "22.50"
    for x in (0.0568888, 123.456, 6.58203125, -0.004):
        assert _matches(fmt(x), x) and not _matches(fmt(x), x * 1.01)
