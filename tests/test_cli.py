"""Every CLI command, run as a user runs it: through the console script's app."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iiotbed.cli import app

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"
SINGLE = SCENARIOS / "single-machine.yaml"
BASE = SCENARIOS / "tcl-huizhou-baseline.yaml"
UPGRADE = SCENARIOS / "tcl-huizhou-5g.yaml"

runner = CliRunner()


def test_help_lists_the_commands() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("validate", "simulate", "compare"):
        assert cmd in res.output


def test_console_script_is_installed() -> None:
    exe = shutil.which("iiotbed") or str(Path(sys.executable).with_name("iiotbed"))
    res = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0 and res.stdout.startswith("iiotbed ")


def test_validate_ok_for_every_shipped_scenario() -> None:
    files = sorted(SCENARIOS.glob("*.yaml"))
    res = runner.invoke(app, ["validate", *map(str, files)])
    assert res.exit_code == 0, res.output
    assert res.output.count(": ok - ") == len(files)


def test_validate_bad_file_exits_2_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SINGLE.read_text(encoding="utf-8").replace("count: 1", "count: zero"), encoding="utf-8")
    line = next(i for i, t in enumerate(bad.read_text().splitlines(), 1) if "count: zero" in t)
    res = runner.invoke(app, ["validate", str(bad)])
    assert res.exit_code == 2
    assert f"{bad}:{line}:" in res.stderr and "'zero'" in res.stderr
    assert "Traceback" not in res.output + res.stderr


def test_simulate_missing_file_exits_2_without_traceback(tmp_path: Path) -> None:
    res = runner.invoke(app, ["simulate", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2
    assert "file not found" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--duration", "soon"], "not a duration"),
        (["--replications", "0"], "replications"),
        (["--seed", "-1"], "seed"),
    ],
)
def test_simulate_bad_options_exit_2(args: list[str], fragment: str) -> None:
    res = runner.invoke(app, ["simulate", str(SINGLE), *args])
    assert res.exit_code == 2
    assert fragment in res.stderr.lower()


def test_simulate_json_reports_mean_and_ci(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    res = runner.invoke(
        app,
        ["simulate", str(SINGLE), "-n", "3", "--duration", "1d", "--workers", "2",
         "--events", str(events), "--json"],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["replications"] == 3 and out["duration_s"] == 86400
    assert len(out["per_replication"]) == 3
    oee = out["kpis"]["oee"]
    assert oee["n"] == 3 and 0 < oee["mean"] < 1
    assert oee["ci95"][0] <= oee["mean"] <= oee["ci95"][1]
    good = [r["good_count"] for r in out["per_replication"]]
    assert all(g > 0 for g in good) and len(set(good)) > 1  # replications differ
    # the event log is replication 0's, and its last GoodCount is replication 0's figure
    lines = events.read_text(encoding="utf-8").splitlines()
    last_good = [json.loads(ln) for ln in lines if '"GoodCount"' in ln][-1]
    assert last_good["value"] == good[0]


def test_simulate_table_output() -> None:
    res = runner.invoke(app, ["simulate", str(SINGLE), "-n", "2", "-d", "8h", "-j", "1"])
    assert res.exit_code == 0, res.output
    assert "labour_productivity" in res.stdout and "95 % CI" in res.stdout


def test_compare_json_has_the_verdict_and_its_interval() -> None:
    res = runner.invoke(
        app, ["compare", str(BASE), str(UPGRADE), "-n", "3", "--duration", "1d", "--json"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    for key in ("metric", "goal", "baseline", "upgrade", "improvement", "verdict"):
        assert key in out
    assert out["metric"] == "labour_productivity" and out["goal"] == 0.20
    low, high = out["improvement"]["ci95"]
    assert low <= out["improvement"]["mean"] <= high
    expected = "met" if low >= 0.2 else "not met" if high < 0.2 else "inconclusive"
    assert out["verdict"] == expected
    # the improvement is the mean of the per-seed ratios of the two sides
    ratios = out["improvement"]["per_replication"]
    assert len(ratios) == 3
    assert sum(ratios) / 3 == pytest.approx(out["improvement"]["mean"])


def test_compare_table_and_unknown_metric() -> None:
    res = runner.invoke(app, ["compare", str(SINGLE), str(SINGLE), "-n", "2", "-d", "1d", "--goal", "0"])
    assert res.exit_code == 0, res.output
    # the same scenario against itself: every pair is identical, the improvement exactly 0
    assert "improvement +0.0%" in res.stdout and "verdict: met" in res.stdout
    bad = runner.invoke(app, ["compare", str(SINGLE), str(SINGLE), "--metric", "happiness"])
    assert bad.exit_code == 2 and "unknown KPI 'happiness'" in bad.stderr


def test_compare_without_production_is_inconclusive_and_says_why() -> None:
    # the single machine's shift starts at 08:00: the first 8 h after the epoch are off shift
    res = runner.invoke(app, ["compare", str(SINGLE), str(SINGLE), "-n", "2", "-d", "8h"])
    assert res.exit_code == 0, res.output
    assert "improvement undefined" in res.stdout and "verdict: inconclusive" in res.stdout
    assert "2 of 2 pairs have no defined labour_productivity" in res.stdout


def test_validate_refuses_a_calendar_without_production_time(tmp_path: Path) -> None:
    bad = tmp_path / "no-production.yaml"
    text = SINGLE.read_text(encoding="utf-8")
    bad.write_text(text.replace('{start: "12:00", duration: 30min}', '{start: "08:00", duration: 8h}'), encoding="utf-8")
    # the calendar's line: where its mapping starts (its first key, shifts)
    line = next(i for i, t in enumerate(bad.read_text().splitlines(), 1) if t == "  shifts:")
    res = runner.invoke(app, ["validate", str(bad)])
    assert res.exit_code == 2, res.output
    assert f"{bad}:{line}: calendar: no production time: daily breaks cover every shift" in res.stderr
    assert "expected at least part of a shift on a workday" in res.stderr
    assert "Traceback" not in res.output + res.stderr


def test_devices_shows_progress_on_stderr_when_not_a_terminal() -> None:
    from iiotbed.platform.broker import free_port

    proc = subprocess.run(
        [sys.executable, "-c", "from iiotbed.cli import main; main()", "devices", str(SINGLE),
         "--speed", "3000", "--duration", "10h", "--opcua-port", str(free_port())],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "progress" not in proc.stdout and "sim time reached: 36000 s" in proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.startswith("progress: ")]
    assert len(lines) >= 2, proc.stderr
    assert all(line.startswith("progress: sim time ") and " of 10:00:00 (" in line for line in lines)
    assert lines[-1].startswith("progress: sim time 10:00:00 of 10:00:00 (100.0 %)")
    assert "records " in lines[-1] and "(100.0 %), ETA 0:00, " in lines[-1]
    pcts = [float(line.split("(")[1].split(" %")[0]) for line in lines]
    assert pcts == sorted(pcts) and pcts[0] < 80.0  # the first before the paced 08:00 .. 10:00


def test_compare_writes_the_html_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = Path("compare.html")
    res = runner.invoke(
        app,
        ["compare", str(SINGLE), str(SINGLE), "-n", "2", "-d", "1d", "--json", "--report", str(out)],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)  # stdout stays the JSON report alone
    assert f"report: {out}" in res.stderr
    html = out.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html")
    assert report["verdict"] in html and "<script src" not in html
    bad = runner.invoke(app, ["compare", str(SINGLE), str(SINGLE), "--report", "no/x.html"])
    assert bad.exit_code == 2 and "is not a directory" in bad.stderr
